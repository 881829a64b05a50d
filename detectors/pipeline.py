"""The ingest stage the worker and the backtest share: decode, dead-letter, join, expire.

It takes raw values as they come off the predictions and outcomes topics and
accounts for every one of them: each is, in the end, processed (joined into a
labelled example), dead-lettered (with its reason) or expired (its partner never
came).  Until then it is pending.  So ``read = processed + dead_lettered +
expired + pending`` holds after every batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, Literal, TypeVar

from pydantic import TypeAdapter

from detectors.join import Duplicate, Expired, OutcomeJoiner
from schemas.decoding import Rejection, decode
from schemas.events import LabelledExample, OutcomeEvent, PredictionEvent

__all__ = ["DeadLetter", "IngestResult", "JoinStage", "RawRecord", "Side"]

Ref = TypeVar("Ref")
Side = Literal["prediction", "outcome"]

_PREDICTION = TypeAdapter(PredictionEvent)
_OUTCOME = TypeAdapter(OutcomeEvent)


@dataclass(frozen=True)
class RawRecord(Generic[Ref]):
    """One value read from a source topic; ``ref`` locates it (topic, partition, offset)."""

    side: Side
    value: bytes | None
    ref: Ref


@dataclass(frozen=True)
class DeadLetter(Generic[Ref]):
    record: RawRecord[Ref]
    rejection: Rejection


@dataclass
class IngestResult(Generic[Ref]):
    labelled: list[LabelledExample] = field(default_factory=list)
    dead_letters: list[DeadLetter[Ref]] = field(default_factory=list)
    expired: list[Expired[Ref]] = field(default_factory=list)


class JoinStage(Generic[Ref]):
    """Decode and join a stream of raw predictions and outcomes, counting everything.

    Parameters
    ----------
    ttl_seconds
        Event-time seconds an event waits for its partner before it expires.
    max_event_bytes
        Values larger than this are dead-lettered unread.
    idle_seconds
        Wall-clock quiet after which a side's event time is let run on (see :meth:`idle`).
    max_pending
        Hard bound on events waiting for their partner (see :class:`~detectors.join.OutcomeJoiner`).

    Examples
    --------
    >>> stage = JoinStage(ttl_seconds=60, max_event_bytes=4096)
    >>> out = stage.process([
    ...     RawRecord("outcome", b'{"prediction_id": "p1", "event_time": "2026-01-01T00:00:05Z", "actual": "cat"}', 11),
    ...     RawRecord("prediction", b'not json', 12),
    ...     RawRecord("prediction", b'{"prediction_id": "p1", "model": "vision", "model_version": "2",'
    ...               b' "event_time": "2026-01-01T00:00:00Z", "prediction": "dog"}', 13),
    ... ])
    >>> [(e.prediction.prediction, e.outcome.actual) for e in out.labelled]
    [('dog', 'cat')]
    >>> [(d.record.ref, d.rejection.kind) for d in out.dead_letters]
    [(12, 'not_json')]
    >>> stage.n_read["prediction"], stage.n_processed["prediction"], stage.n_dead_lettered["prediction"]
    (2, 1, 1)
    """

    def __init__(
        self, ttl_seconds: float, max_event_bytes: int, idle_seconds: float = 5.0, max_pending: int = 1_000_000
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_event_bytes = max_event_bytes
        self.idle_seconds = idle_seconds
        self.max_pending = max_pending
        self._joiner: OutcomeJoiner[Ref] = OutcomeJoiner(ttl_seconds, max_pending)
        self.n_read: Counter[str] = Counter()
        self.n_processed: Counter[str] = Counter()
        self.n_dead_lettered: Counter[str] = Counter()
        self.n_expired: Counter[str] = Counter()
        # Per side: wall time of its last valid event, and its clock then.
        self._last_seen: dict[Side, tuple[float, datetime | None]] = {}

    @property
    def n_pending(self) -> int:
        return self._joiner.n_pending

    def process(self, records: Iterable[RawRecord[Ref]], wall_time: float | None = None) -> IngestResult[Ref]:
        """Decode and join one batch; expire what the batch's event times have outdated."""
        out: IngestResult[Ref] = IngestResult()
        valid_sides: set[Side] = set()
        for record in records:
            self.n_read[record.side] += 1
            if record.side == "prediction":
                event: PredictionEvent | OutcomeEvent | Rejection = decode(_PREDICTION, record.value, self.max_event_bytes)
            else:
                event = decode(_OUTCOME, record.value, self.max_event_bytes)
            if isinstance(event, Rejection):
                self._dead_letter(record, event, out)
                continue
            valid_sides.add(record.side)
            if isinstance(event, PredictionEvent):
                joined = self._joiner.add_prediction(event, record.ref)
            else:
                joined = self._joiner.add_outcome(event, record.ref)
            if isinstance(joined, Duplicate):
                self._dead_letter(record, Rejection("duplicate", joined.reason), out)
            elif joined is not None:
                self.n_processed["prediction"] += 1
                self.n_processed["outcome"] += 1
                out.labelled.append(joined)
        if wall_time is not None:
            self._note_activity(valid_sides, wall_time)
        self._expire(out)
        return out

    def idle(self, wall_time: float) -> IngestResult[Ref]:
        """Let a quiet side's event time run on with the wall clock, and expire.

        A side (predictions or outcomes) that has had no event for
        ``idle_seconds`` has its clock moved to where it stood at its last event
        plus the wall time since.  Without this, predictions whose outcomes
        stopped coming (or never came) would wait for them forever.  A side
        that still receives events keeps its own event time, so a consumer
        reading one topic ahead of the other expires nothing early.
        """
        out: IngestResult[Ref] = IngestResult()
        for side, seen in self._last_seen.items():
            wall_at_last, clock_at_last = seen
            quiet = wall_time - wall_at_last
            if quiet >= self.idle_seconds and clock_at_last is not None:
                self._joiner.advance(side, clock_at_last + timedelta(seconds=quiet))
        self._expire(out)
        return out

    def _note_activity(self, sides: set[Side], wall_time: float) -> None:
        # Only valid events restart a side's quiet period: a trickle of garbage must not stop expiry.
        for side in sides:
            self._last_seen[side] = (wall_time, self._joiner.clock(side))
        for side in ("prediction", "outcome"):
            if side not in self._last_seen and sides:
                # A side never heard from is quiet since the other's first event, at the other's clock.
                other = "outcome" if side == "prediction" else "prediction"
                self._last_seen[side] = (wall_time, self._joiner.clock(other))

    def _dead_letter(self, record: RawRecord[Ref], rejection: Rejection, out: IngestResult[Ref]) -> None:
        self.n_dead_lettered[record.side] += 1
        out.dead_letters.append(DeadLetter(record, rejection))

    def _expire(self, out: IngestResult[Ref]) -> None:
        for item in self._joiner.expire():
            self.n_expired[item.side] += 1
            out.expired.append(item)
