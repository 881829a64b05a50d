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
        Wall-clock quiet after which event time is let run on (see :meth:`idle`).

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

    def __init__(self, ttl_seconds: float, max_event_bytes: int, idle_seconds: float = 5.0) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_event_bytes = max_event_bytes
        self.idle_seconds = idle_seconds
        self._joiner: OutcomeJoiner[Ref] = OutcomeJoiner(ttl_seconds)
        self.n_read: Counter[str] = Counter()
        self.n_processed: Counter[str] = Counter()
        self.n_dead_lettered: Counter[str] = Counter()
        self.n_expired: Counter[str] = Counter()
        self._last_event: tuple[float, dict[Side, datetime | None]] | None = None

    @property
    def n_pending(self) -> int:
        return self._joiner.n_pending

    def process(self, records: Iterable[RawRecord[Ref]], wall_time: float | None = None) -> IngestResult[Ref]:
        """Decode and join one batch; expire what the batch's event times have outdated."""
        out: IngestResult[Ref] = IngestResult()
        for record in records:
            self.n_read[record.side] += 1
            if record.side == "prediction":
                event: PredictionEvent | OutcomeEvent | Rejection = decode(_PREDICTION, record.value, self.max_event_bytes)
            else:
                event = decode(_OUTCOME, record.value, self.max_event_bytes)
            if isinstance(event, Rejection):
                self._dead_letter(record, event, out)
                continue
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
            self._last_event = (wall_time, {side: self._joiner.clock(side) for side in ("prediction", "outcome")})
        self._expire(out)
        return out

    def idle(self, wall_time: float) -> IngestResult[Ref]:
        """Let event time run on with the wall clock once no event has come for ``idle_seconds``.

        Without this, the last events before a quiet spell would wait for
        their partners until traffic resumed.  Each side's clock moves to where
        it stood at the last event plus the wall time since, so a live stream,
        whose event time follows the wall clock, is never pushed ahead.
        """
        out: IngestResult[Ref] = IngestResult()
        if self._last_event is not None:
            wall_at_last, clocks = self._last_event
            quiet = wall_time - wall_at_last
            if quiet >= self.idle_seconds:
                for side, clock in clocks.items():
                    if clock is not None:
                        self._joiner.advance(side, clock + timedelta(seconds=quiet))
        self._expire(out)
        return out

    def _dead_letter(self, record: RawRecord[Ref], rejection: Rejection, out: IngestResult[Ref]) -> None:
        self.n_dead_lettered[record.side] += 1
        out.dead_letters.append(DeadLetter(record, rejection))

    def _expire(self, out: IngestResult[Ref]) -> None:
        for item in self._joiner.expire():
            self.n_expired[item.side] += 1
            out.expired.append(item)
