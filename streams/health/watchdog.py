"""The watchdog's decision: is a stage of this process stuck for good, so that only a restart helps?

Pure: a :class:`StageView` per stage (what is assigned to it, how far its group has committed on those
partitions, how many messages lie past that) goes in, a reason to exit (or ``None``) comes out.  The Kafka
probing and the exit are :mod:`streams.health.monitor`'s.

A stage is stuck when, for longer than the timeout, either no partition of its topics is assigned to it, or
messages wait on its partitions and none of its committed offsets moves.  While the broker cannot be reached
the clocks stand still: a restart would not bring the broker back, and the stage is judged afresh once it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["BrokerStatus", "StageView", "Watchdog"]

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class StageView:
    """One look at one stage.

    ``committed`` and ``end`` are the group's committed offset and the log-end offset of each assigned
    partition (a partition never committed is measured from its first offset, as ``auto.offset.reset``
    starts it there); ``watched`` says which topics' lag counts (all assigned ones when empty).
    """

    stage: str
    assigned: frozenset[TopicPartition]
    committed: Mapping[TopicPartition, int] = field(default_factory=dict)
    end: Mapping[TopicPartition, int] = field(default_factory=dict)
    watched: frozenset[str] = frozenset()

    @property
    def unread(self) -> int:
        """Messages past the committed offset, over the watched assigned partitions."""
        return sum(max(self.end[tp] - self.committed.get(tp, 0), 0) for tp in self.assigned
                   if tp in self.end and (not self.watched or tp[0] in self.watched))


@dataclass
class _StageClock:
    assigned_at: float
    progress_at: float
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    n_committed_advanced: int = 0


class Watchdog:
    """Decides, from successive :class:`StageView` s, when a stage has been stuck past ``timeout_seconds``.

    Parameters
    ----------
    timeout_seconds
        How long a stage may go without partitions, or with unread messages and no commit; 0 never trips.
    started_at
        The clock reading at start-up (monotonic seconds): a stage that never gets partitions trips
        ``timeout_seconds`` after it.

    Examples
    --------
    >>> dog = Watchdog(60, started_at=0)
    >>> stuck = StageView("monitor", frozenset({("in", 0)}), committed={("in", 0): 5}, end={("in", 0): 9})
    >>> dog.observe(30, True, [stuck]) is None, dog.observe(61, True, [stuck])
    (True, 'monitor: 4 messages unread on its partitions and no offset committed for 61 s')
    """

    def __init__(self, timeout_seconds: float, started_at: float) -> None:
        if timeout_seconds < 0:
            raise ValueError("timeout_seconds must be at least 0.")
        self.timeout_seconds = timeout_seconds
        self._started_at = started_at
        self._clocks: dict[str, _StageClock] = {}

    def observe(self, now: float, broker_up: bool, views: Sequence[StageView]) -> str | None:
        """Take one look at every stage; return why to exit, or ``None`` to go on.

        With ``broker_up`` false (``views`` may then be empty) every clock restarts: nothing is judged.
        """
        if not broker_up:
            for clock in self._clocks.values():
                clock.assigned_at = clock.progress_at = now
            self._started_at = now
        reasons = [reason for view in views if (reason := self._judge(now, broker_up, view)) is not None]
        if not reasons or not self.timeout_seconds:
            return None
        return "; ".join(reasons)

    def seconds_without_progress(self, stage: str, now: float) -> float:
        """Since the stage last committed, had nothing to read, or the broker was down (0 before any look)."""
        clock = self._clocks.get(stage)
        return 0.0 if clock is None else now - clock.progress_at

    def n_committed_advanced(self, stage: str) -> int:
        """Messages the stage's committed offsets have moved past, over every look so far."""
        clock = self._clocks.get(stage)
        return 0 if clock is None else clock.n_committed_advanced

    def _judge(self, now: float, broker_up: bool, view: StageView) -> str | None:
        clock = self._clocks.setdefault(view.stage, _StageClock(self._started_at, self._started_at))
        advanced = sum(max(offset - clock.committed[tp], 0) for tp, offset in view.committed.items()
                       if tp in clock.committed)
        clock.n_committed_advanced += advanced
        clock.committed = {tp: view.committed[tp] for tp in view.assigned if tp in view.committed}
        if not broker_up:
            clock.assigned_at = clock.progress_at = now
            return None
        if view.assigned:
            clock.assigned_at = now
        if advanced or view.unread == 0 or not view.assigned:
            clock.progress_at = now
        if now - clock.assigned_at > self.timeout_seconds:
            return f"{view.stage}: no partitions assigned for {now - clock.assigned_at:.0f} s"
        if now - clock.progress_at > self.timeout_seconds:
            return (f"{view.stage}: {view.unread} messages unread on its partitions and no offset committed for "
                    f"{now - clock.progress_at:.0f} s")
        return None


class BrokerStatus:
    """Whether the broker answers, with the moments it changes: a single line for an outage and its end.

    >>> status = BrokerStatus()
    >>> status.update(False, 10.0), status.update(False, 12.0), status.update(True, 40.0)
    ('the broker does not answer', None, 'the broker answers again, after 30 s')
    """

    def __init__(self) -> None:
        self.up = True
        self._down_since: float | None = None

    def update(self, up: bool, now: float) -> str | None:
        """Record one probe; return a message when the state changed."""
        if up == self.up:
            return None
        self.up = up
        if not up:
            self._down_since = now
            return "the broker does not answer"
        down_for = now - (self._down_since if self._down_since is not None else now)
        return f"the broker answers again, after {down_for:.0f} s"
