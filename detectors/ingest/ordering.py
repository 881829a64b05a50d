"""Putting joined examples back into event-time order across source partitions.

A consumer reads several partitions of two topics at uneven speeds, so joined
examples come out interleaved: the first thousand of partition 0, then older
ones of partition 1.  A rolling window or change detector fed that order sees
accuracy jump back and forth, and two runs over the same data can alert
differently.  The :class:`EventTimeReorderer` holds examples back until every
active source has moved past them (the watermark: the smallest of the sources'
latest event times), then releases them sorted by event time.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection, Hashable
from datetime import datetime
from typing import Generic, TypeVar

from detectors.exceptions import InvalidParameter

__all__ = ["EventTimeReorderer"]

T = TypeVar("T")


class EventTimeReorderer(Generic[T]):
    """Releases items in (event time, key) order once the watermark has passed them.

    Parameters
    ----------
    idle_seconds
        A source with no event for this long (wall clock) stops holding the watermark back.
    max_buffered
        Beyond this many held items the oldest are released anyway, bounding memory and delay.
    grace_seconds
        While some source is quiet, the watermark lags this long (wall clock) behind the active sources',
        so that a quiet source that starts again, late by less than this, is not overtaken.
    settle_seconds
        Once the caller says every source it reads has been read to its end (``caught_up``), and all have
        been quiet this long, everything held leaves: traffic has stopped, and a producer sending in event-time
        order sends its next events after all of it.  None: wait out ``idle_seconds`` as when one source stalls.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> t = lambda s: datetime(2026, 1, 1, 0, 0, s, tzinfo=timezone.utc)
    >>> r = EventTimeReorderer(idle_seconds=5)
    >>> r.observe("p0", t(10), wall_time=0.0); r.push(t(10), "a", "a@10")
    >>> r.observe("p1", t(3), wall_time=0.0); r.push(t(3), "b", "b@3")
    >>> r.release(wall_time=0.0)      # p1 has only reached 3 s: a@10 waits
    ['b@3']
    >>> r.observe("p1", t(12), wall_time=1.0)
    >>> r.release(wall_time=1.0)
    ['a@10']
    """

    def __init__(self, idle_seconds: float = 5.0, max_buffered: int = 100_000, grace_seconds: float = 0.0,
                 settle_seconds: float | None = None) -> None:
        if not idle_seconds > 0:
            raise InvalidParameter("idle_seconds", "must be positive")
        if max_buffered < 1:
            raise InvalidParameter("max_buffered", "must be at least 1")
        if not grace_seconds >= 0:
            raise InvalidParameter("grace_seconds", "must not be negative")
        if settle_seconds is not None and not settle_seconds > 0:
            raise InvalidParameter("settle_seconds", "must be positive (or None)")
        self.idle_seconds = idle_seconds
        self.max_buffered = max_buffered
        self.grace_seconds = grace_seconds
        self.settle_seconds = settle_seconds
        self._clocks: dict[Hashable, datetime | None] = {}
        self._last_wall: dict[Hashable, float] = {}
        # Sources whose upstream said it had read them to their end and sent everything (observe(settled=True)).
        self._settled: set[Hashable] = set()
        self._heap: list[tuple[datetime, str, int, float, T]] = []  # (event time, key, seq, pushed at wall time, item)
        # (wall time, watermark) at each release of the last grace_seconds, and the one just before.
        self._recent_marks: deque[tuple[float, datetime | None]] = deque()
        self._seq = 0
        self._released_through: datetime | None = None
        #: Items pushed after the watermark had passed their time: they leave out of order.
        self.n_late = 0

    @property
    def released_through(self) -> datetime | None:
        """Every item up to this event time has been released; later ones with an earlier time are late.

        What an upstream stage announces downstream as its watermark.
        """
        return self._released_through

    @property
    def n_buffered(self) -> int:
        return len(self._heap)

    def expect(self, source: Hashable, wall_time: float | None = None) -> None:
        """Announce a source before its first event, so that it holds the watermark back.

        Without this, a partition whose first fetch comes late would find the
        watermark already past its events.  An expected source that stays
        silent for ``idle_seconds`` stops holding anything back.
        """
        if source not in self._clocks:
            self._clocks[source] = None
            if wall_time is not None:
                self._last_wall[source] = wall_time

    def observe(self, source: Hashable, event_time: datetime, wall_time: float | None = None,
                settled: bool = False) -> None:
        """Note that ``source`` has delivered an event of ``event_time``.

        ``settled``: the stage upstream has read the source to its end and sent everything it read (its own
        :meth:`settled`), so the source holds nothing back until it is observed again unsettled.  An
        upstream stage's settled sources are then let through at once, where a source gone quiet is waited
        for ``idle_seconds`` and then ``grace_seconds``.
        """
        if settled:
            self._settled.add(source)
        else:
            self._settled.discard(source)
        current = self._clocks.get(source)
        if current is None or event_time > current:
            self._clocks[source] = event_time
        if wall_time is not None:
            self._last_wall[source] = wall_time

    def push(self, event_time: datetime, key: str, item: T, wall_time: float | None = None) -> None:
        """Hold ``item`` until the watermark reaches ``event_time``; ``key`` breaks ties."""
        self._seq += 1
        if self._released_through is not None and event_time < self._released_through:
            self.n_late += 1
        heapq.heappush(self._heap, (event_time, key, self._seq, wall_time or 0.0, item))

    def watermark(self, wall_time: float | None = None) -> datetime | None:
        """The smallest latest event time of the active sources.

        None when an active source has not delivered yet (hold everything) or
        when no source is active (release everything); :meth:`release` tells
        the two apart.
        """
        active = self._active_clocks(wall_time)
        return None if not active or None in active else min(c for c in active if c is not None)

    def active_sources(self, wall_time: float | None, busy: Collection[Hashable] = ()) -> list[Hashable]:
        """Sources that hold the watermark back: heard from within ``idle_seconds`` and not settled, or busy."""
        return [
            source for source in self._clocks
            if source in busy or source not in self._settled and (
                wall_time is None or wall_time - self._last_wall.get(source, wall_time) < self.idle_seconds)
        ]

    def _active_clocks(self, wall_time: float | None, busy: Collection[Hashable] = ()) -> list[datetime | None]:
        return [self._clocks[source] for source in self.active_sources(wall_time, busy)]

    def settled(self, wall_time: float | None, caught_up: bool) -> bool:
        """Whether traffic has stopped: every source read to its end (``caught_up``) and quiet ``settle_seconds``."""
        if self.settle_seconds is None or wall_time is None or not caught_up:
            return False
        return all(wall_time - self._last_wall.get(source, wall_time) >= self.settle_seconds
                   for source in self._clocks)

    def release(self, wall_time: float | None = None, busy: Collection[Hashable] = (),
                caught_up: bool = False) -> list[T]:
        """Items the watermark has passed (and any beyond ``max_buffered``), in order.

        Sources in ``busy`` (unread messages are waiting on them) count as
        active however long they have been silent.  ``caught_up``: the caller
        has read every source to its end, so once they have all been quiet
        ``settle_seconds`` everything leaves (see :meth:`settled`).
        """
        settled = self.settled(wall_time, caught_up)
        sources = [] if settled else self.active_sources(wall_time, busy)
        active = [self._clocks[source] for source in sources]
        release_all = not active
        mark = None if release_all or None in active else min(c for c in active if c is not None)
        if self.grace_seconds and wall_time is not None:
            # A settled source lags the watermark too while others are active: it may start again.
            mark = self._steady_mark(None if release_all else mark, wall_time, quiet=len(active) < len(self._clocks))
        # With every source quiet, items still leave only once they have waited the grace period: they came
        # from a source that has yet to announce how far it has got.  (Not once settled here: every source has
        # been quiet longer than that, and has delivered all it had; nor when every quiet source is settled
        # upstream, which has announced all it sent.)
        unsettled = any(source not in self._settled for source in self._clocks.keys() - set(sources))
        waits_out_grace = release_all and unsettled and not settled
        pushed_before = wall_time - self.grace_seconds if waits_out_grace and wall_time is not None else None
        out = []
        while self._heap and (
            release_all or (mark is not None and self._heap[0][0] <= mark) or len(self._heap) > self.max_buffered
        ):
            if pushed_before is not None and self._heap[0][3] > pushed_before and len(self._heap) <= self.max_buffered:
                break
            out.append(heapq.heappop(self._heap)[4])
        if release_all:
            # Every source quiet and everything held gone: all that was observed has passed.
            through = None if self._heap else max((c for c in self._clocks.values() if c is not None), default=None)
        else:
            through = mark
        if through is not None and (self._released_through is None or through > self._released_through):
            self._released_through = through
        return out

    def _steady_mark(self, mark: datetime | None, wall_time: float, quiet: bool) -> datetime | None:
        """While a source is quiet, the lowest watermark of the last ``grace_seconds``: it lags by the grace.

        A quiet source that speaks within the grace period of the others passing its time is then not
        overtaken (None: hold everything, as when the others only just started after a quiet spell).
        """
        marks = self._recent_marks
        marks.append((wall_time, mark))
        cutoff = wall_time - self.grace_seconds
        while len(marks) > 1 and marks[1][0] <= cutoff:
            marks.popleft()
        if not quiet:
            return mark
        if marks[0][0] > cutoff or any(m is None for _, m in marks):
            return None
        return min(m for _, m in marks if m is not None)

    def flush(self) -> list[T]:
        """Everything held, in order: at the end of a finite input."""
        out = [entry[4] for entry in sorted(self._heap)]
        self._heap.clear()
        return out
