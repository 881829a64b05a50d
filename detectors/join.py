"""Joining outcomes to their predictions by prediction id, in either arrival order.

Time is event time, so a replay gives the same joins and expiries as the live
run.  Each side keeps its own clock, the latest event time seen on it: a
prediction expires once the *outcome* clock has passed its event time plus
``ttl_seconds`` (the outcome stream has moved on without its partner), and an
outcome once the *prediction* clock has.  One clock for both would expire every
pending prediction whenever a consumer happened to read far ahead on the other
topic.  A partner stream that stops is handled by the caller moving its clock
with the wall clock (see ``detectors.pipeline.JoinStage.idle``), and memory
has a hard bound, ``max_pending``, past which the oldest pending events expire
early.  Expired events are handed back, so that nothing disappears unaccounted.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Literal, TypeVar

from detectors.exceptions import InvalidParameter
from schemas.events import LabelledExample, OutcomeEvent, PredictionEvent

__all__ = ["Duplicate", "Expired", "OutcomeJoiner"]

Ref = TypeVar("Ref")
Side = Literal["prediction", "outcome"]


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
        self._joined: dict[str, datetime] = {}
        # Per kind, a heap of (deadline, sequence, id); stale entries are skipped when popped.
        self._deadlines: dict[str, list[tuple[datetime, int, str]]] = {"prediction": [], "outcome": [], "joined": []}
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
        heapq.heappush(self._deadlines[kind], (event_time + self._ttl, self._seq, prediction_id))

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
        later = max(prediction.event_time, outcome.event_time)
        self._joined[prediction.prediction_id] = later
        self._schedule("joined", prediction.prediction_id, later)
        return LabelledExample(prediction=prediction, outcome=outcome)

    def advance(self, side: Side, now: datetime) -> None:
        """Move one side's clock forward to ``now``, e.g. while the stream is idle; never backwards."""
        self._tick(side, now)

    def expire(self) -> list[Expired[Ref]]:
        """Remove and return every pending event whose partner's clock has passed its deadline."""
        expired, self._evicted = self._evicted, []
        waits_on: dict[Side, Side] = {"prediction": "outcome", "outcome": "prediction"}
        for side, other in waits_on.items():
            clock = self._clocks[other]
            heap = self._deadlines[side]
            pending = self._predictions if side == "prediction" else self._outcomes
            while clock is not None and heap and heap[0][0] < clock:
                _, _, pid = heapq.heappop(heap)
                if pid in pending:
                    event, ref = pending.pop(pid)
                    expired.append(Expired(side, pid, event.event_time, ref))
        known = [c for c in self._clocks.values() if c is not None]
        if len(known) == 2:
            oldest = min(known)
            heap = self._deadlines["joined"]
            while heap and heap[0][0] < oldest:
                _, _, pid = heapq.heappop(heap)
                self._joined.pop(pid, None)
        return expired
