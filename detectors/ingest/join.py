"""Joining outcomes to their predictions by prediction id, in either arrival order.

Time is event time, so a replay gives the same joins and expiries as the live
run.  Each side keeps its own clock, the latest event time seen on it: a
prediction expires once the *outcome* clock has passed its event time plus
``ttl_seconds`` (the outcome stream has moved on without its partner), and an
outcome once the *prediction* clock has.  One clock for both would expire every
pending prediction whenever a consumer happened to read far ahead on the other
topic.  A partner stream that stops is handled by the caller moving its clock
with the wall clock (see ``detectors.ingest.stage.JoinStage.idle``), and memory
has a hard bound, ``max_pending``, past which the oldest pending events expire
early.  Expired events are handed back, so that nothing disappears unaccounted.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from detectors.exceptions import InvalidParameter
from schemas.events import SIDES, LabelledExample, OutcomeEvent, PredictionEvent, Side, other_side

__all__ = ["Duplicate", "Expired", "OutcomeJoiner", "IdsWithinHorizon"]

Ref = TypeVar("Ref")


@dataclass(frozen=True)
class Expired(Generic[Ref]):
    """An event whose partner never came; ``ref`` is whatever the caller attached."""

    side: Side
    prediction_id: str
    event_time: datetime
    ref: Ref


@dataclass(frozen=True)
class Duplicate:
    """Returned when an event repeats a prediction id still pending or recently joined."""

    side: Side
    prediction_id: str

    @property
    def reason(self) -> str:
        return f"duplicate {self.side} for prediction_id {self.prediction_id!r}"


class IdsWithinHorizon:
    """Ids seen recently in event time, kept as 64-bit hashes in time buckets, for duplicate checks.

    A joined id must be remembered for a whole TTL (an hour by default) so that a redelivered event is
    caught.  Kept as its string in a dict with its own deadline, the joiner held 331 bytes per joined id
    (``benchmarks/bench_join.py``), over 1 GB for an hour of 1,000 events/s; with hashes in per-bucket sets
    (and the joined events' stale deadlines dropped) it holds 71.  A hash collision would flag a new id as a
    duplicate: with 64-bit hashes and millions of ids, a chance near 1e-13 per event.  Ids leave a bucket's
    width (``horizon / n_buckets``) later than asked, at most.  Hashes are Python's own, salted per process:
    the set is never persisted.  (:class:`detectors.monitors.checkpoint.RecentIds` is another thing: the last N ids, as
    strings, because a checkpoint carries them.)

    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> ids = IdsWithinHorizon(timedelta(hours=1))
    >>> ids.add("p1", t0)
    >>> "p1" in ids, "p2" in ids
    (True, False)
    >>> ids.forget_before(t0 + timedelta(minutes=1)); "p1" in ids   # its bucket (225 s wide) holds later ids
    True
    >>> ids.forget_before(t0 + timedelta(minutes=5)); "p1" in ids
    False
    """

    def __init__(self, horizon: timedelta, n_buckets: int = 16) -> None:
        self._width = horizon.total_seconds() / n_buckets
        # Every id once, for a lookup per event (checking each bucket's set cost a third of the join), and
        # per bucket the list of its ids, to forget them with.  An id is in one bucket only: the joiner adds
        # an id again only once it has been forgotten, since before that it is a duplicate.
        self._all: set[int] = set()
        self._buckets: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, key: str) -> bool:
        return hash(key) in self._all

    def add(self, key: str, at: datetime) -> None:
        hashed = hash(key)
        self._all.add(hashed)
        self._buckets.setdefault(math.floor(at.timestamp() / self._width), []).append(hashed)

    def forget_before(self, cutoff: datetime) -> None:
        """Forget the buckets whose ids were all added at times before ``cutoff``."""
        last = math.floor(cutoff.timestamp() / self._width)  # the bucket holding the cutoff stays
        for index in [i for i in self._buckets if i < last]:
            self._all.difference_update(self._buckets.pop(index))


class OutcomeJoiner(Generic[Ref]):
    """Pairs each outcome with its prediction, in either order.

    Parameters
    ----------
    ttl_seconds
        How long, in event time, an event waits for its partner.
    max_pending
        At most this many events wait at once; beyond it the one closest to
        its deadline expires early.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> joiner = OutcomeJoiner(ttl_seconds=60)
    >>> o = OutcomeEvent(prediction_id="p1", event_time=t0, actual="yes")
    >>> joiner.add_outcome(o, ref="offset 7") is None   # waits for its prediction
    True
    >>> p = PredictionEvent(prediction_id="p1", model="m", model_version="1",
    ...                     event_time=t0, prediction="yes")
    >>> joiner.add_prediction(p, ref="offset 3").outcome.actual
    'yes'
    >>> joiner.n_pending
    0
    """

    def __init__(self, ttl_seconds: float, max_pending: int = 1_000_000) -> None:
        if not ttl_seconds > 0:
            raise InvalidParameter("ttl_seconds", "must be positive")
        if max_pending < 1:
            raise InvalidParameter("max_pending", "must be at least 1")
        self.ttl_seconds = ttl_seconds
        self.max_pending = max_pending
        self._evicted: list[Expired[Ref]] = []
        self._ttl = timedelta(seconds=ttl_seconds)
        self._predictions: dict[str, tuple[PredictionEvent, Ref]] = {}
        self._outcomes: dict[str, tuple[OutcomeEvent, Ref]] = {}
        # Ids joined within the TTL, so that a redelivered event is caught as a duplicate.
        self._joined = IdsWithinHorizon(self._ttl)
        # Per side, a heap of (deadline, sequence, id); stale entries are skipped when popped.
        self._deadlines: dict[str, list[tuple[datetime, int, str]]] = {"prediction": [], "outcome": []}
        self._seq = 0
        self._clocks: dict[Side, datetime | None] = {"prediction": None, "outcome": None}

    @property
    def n_pending(self) -> int:
        """Events waiting for their partner."""
        return len(self._predictions) + len(self._outcomes)

    @property
    def n_pending_predictions(self) -> int:
        return len(self._predictions)

    @property
    def n_pending_outcomes(self) -> int:
        return len(self._outcomes)

    def clock(self, side: Side) -> datetime | None:
        """The latest event time seen on one side, or None before its first event."""
        return self._clocks[side]

    def _schedule(self, kind: str, prediction_id: str, event_time: datetime) -> None:
        self._seq += 1
        heap = self._deadlines[kind]
        heapq.heappush(heap, (event_time + self._ttl, self._seq, prediction_id))
        # A joined event leaves its deadline behind until the clock passes it, a whole TTL of them; drop
        # them when they outnumber the live ones (each rebuild is paid for by as many pushes).
        pending = self._predictions if kind == "prediction" else self._outcomes
        if len(heap) > 2 * len(pending) + 1024:
            heap[:] = [entry for entry in heap if entry[2] in pending]
            heapq.heapify(heap)

    def _tick(self, side: Side, event_time: datetime) -> None:
        current = self._clocks[side]
        if current is None or event_time > current:
            self._clocks[side] = event_time

    def _is_duplicate(self, prediction_id: str, pending: dict[str, object]) -> bool:
        return prediction_id in pending or prediction_id in self._joined

    def add_prediction(self, event: PredictionEvent, ref: Ref) -> LabelledExample | Duplicate | None:
        """Add a prediction: its labelled example if the outcome was waiting, else None."""
        pid = event.prediction_id
        self._tick("prediction", event.event_time)
        if self._is_duplicate(pid, self._predictions):  # type: ignore[arg-type]
            return Duplicate("prediction", pid)
        waiting = self._outcomes.pop(pid, None)
        if waiting is None:
            self._predictions[pid] = (event, ref)
            self._schedule("prediction", pid, event.event_time)
            self._enforce_capacity()
            return None
        return self._joined_example(event, waiting[0])

    def add_outcome(self, event: OutcomeEvent, ref: Ref) -> LabelledExample | Duplicate | None:
        """Add an outcome: its labelled example if the prediction was waiting, else None."""
        pid = event.prediction_id
        self._tick("outcome", event.event_time)
        if self._is_duplicate(pid, self._outcomes):  # type: ignore[arg-type]
            return Duplicate("outcome", pid)
        waiting = self._predictions.pop(pid, None)
        if waiting is None:
            self._outcomes[pid] = (event, ref)
            self._schedule("outcome", pid, event.event_time)
            self._enforce_capacity()
            return None
        return self._joined_example(waiting[0], event)

    def _enforce_capacity(self) -> None:
        while self.n_pending > self.max_pending:
            heads = []
            for side, pending in (("prediction", self._predictions), ("outcome", self._outcomes)):
                heap = self._deadlines[side]
                while heap and heap[0][2] not in pending:
                    heapq.heappop(heap)  # already joined or expired
                if heap:
                    heads.append((heap[0], side, pending))
            (_, _, pid), side, pending = min(heads, key=lambda h: h[0])
            heapq.heappop(self._deadlines[side])
            event, ref = pending.pop(pid)
            self._evicted.append(Expired(side, pid, event.event_time, ref))  # type: ignore[arg-type]

    def _joined_example(self, prediction: PredictionEvent, outcome: OutcomeEvent) -> LabelledExample:
        example = LabelledExample(prediction=prediction, outcome=outcome)
        self._joined.add(prediction.prediction_id, example.completed_at)
        return example

    @property
    def joined_ids(self) -> IdsWithinHorizon:
        """The ids joined within the TTL (for the duplicate check)."""
        return self._joined

    def adopt_joined(self, ids: IdsWithinHorizon) -> None:
        """Take over the ids an earlier joiner of this partition had joined (see JoinStage.forget)."""
        self._joined = ids

    def advance(self, side: Side, now: datetime) -> None:
        """Move one side's clock forward to ``now``, e.g. while the stream is idle; never backwards."""
        self._tick(side, now)

    def expire(self) -> list[Expired[Ref]]:
        """Remove and return every pending event whose partner's clock has passed its deadline."""
        expired, self._evicted = self._evicted, []
        for side in SIDES:
            clock = self._clocks[other_side(side)]
            heap = self._deadlines[side]
            pending = self._predictions if side == "prediction" else self._outcomes
            while clock is not None and heap and heap[0][0] < clock:
                _, _, pid = heapq.heappop(heap)
                if pid in pending:
                    event, ref = pending.pop(pid)
                    expired.append(Expired(side, pid, event.event_time, ref))
        known = [c for c in self._clocks.values() if c is not None]
        if len(known) == 2:
            self._joined.forget_before(min(known) - self._ttl)
        return expired
