"""The ingest stage the worker and the backtest share: decode, dead-letter, join, order, expire.

It takes raw values as they come off the predictions and outcomes topics and
accounts for every one of them: each is, in the end, processed (joined into a
labelled example), dead-lettered (with its reason) or expired (its partner never
came).  Until then it is pending.  So ``read = processed + dead_lettered +
expired + pending`` holds after every batch (with waiting events taken over
from a changelog or handed to another worker, ``read + restored = processed +
dead_lettered + expired + pending + handed_over``).  Labelled examples leave in
event-time order of their completion (the later of prediction and outcome), held
back until every active source partition has passed them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from pydantic import TypeAdapter

from detectors.exceptions import InvalidParameter
from detectors.ingest.join import Duplicate, Expired, IdsWithinHorizon, OutcomeJoiner
from detectors.ingest.ordering import EventTimeReorderer
from schemas.decoding import Rejection, decode
from schemas.events import SIDES, LabelledExample, OutcomeEvent, PredictionEvent, Side, other_side

__all__ = ["DeadLetter", "IngestResult", "JoinStage", "RawRecord", "Source"]

Ref = TypeVar("Ref")
#: A source partition of one side.
Source = tuple[Side, int]

_PREDICTION = TypeAdapter(PredictionEvent)
_OUTCOME = TypeAdapter(OutcomeEvent)


@dataclass(slots=True)
class RawRecord(Generic[Ref]):
    """One value read from a source topic; ``ref`` locates it (topic, partition, offset) for dead letters.

    ``partition`` tells sources apart for event-time ordering (see :mod:`detectors.ingest.ordering`).  Not
    changed once made, but not ``frozen``: one is made per message read, and a frozen dataclass's
    ``__init__`` costs four times as much (0.48 against 0.13 µs here).
    """

    side: Side
    value: bytes | None
    ref: Ref
    partition: int = 0


@dataclass(frozen=True)
class DeadLetter(Generic[Ref]):
    record: RawRecord[Ref]
    rejection: Rejection


@dataclass
class IngestResult(Generic[Ref]):
    labelled: list[LabelledExample] = field(default_factory=list)
    #: Every valid, first-seen prediction, in event-time order, for the prediction-side monitors.
    predictions: list[PredictionEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter[Ref]] = field(default_factory=list)
    expired: list[Expired[Ref]] = field(default_factory=list)
    #: With ``keep_json``, each labelled example's and prediction's JSON, made of the validated source bytes
    #: (same order as ``labelled`` and ``predictions``): what the worker writes, without dumping them again.
    labelled_json: list[bytes] = field(default_factory=list)
    predictions_json: list[bytes] = field(default_factory=list)

    def extended(self, other: IngestResult[Ref]) -> IngestResult[Ref]:
        """This result followed by ``other``."""
        return IngestResult(self.labelled + other.labelled, self.predictions + other.predictions,
                            self.dead_letters + other.dead_letters, self.expired + other.expired,
                            self.labelled_json + other.labelled_json, self.predictions_json + other.predictions_json)


def labelled_json(prediction: bytes, outcome: bytes) -> bytes:
    """A labelled example's JSON from its two events' validated JSON: what ``model_dump_json`` would mean.

    >>> labelled_json(b'{"prediction_id": "p"}', b'{"actual": 1}')
    b'{"schema_version":1,"prediction":{"prediction_id": "p"},"outcome":{"actual": 1}}'
    """
    return b'{"schema_version":1,"prediction":%s,"outcome":%s}' % (prediction, outcome)


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
        Hard bound on events waiting for their partner, per partition (see :class:`~detectors.ingest.join.OutcomeJoiner`).
    grace_seconds
        While a source is quiet, the watermark lags this long (wall clock) behind the active sources', so
        that a quiet partition whose first fetch comes a little late is not overtaken.
    settle_seconds
        Once every source has been read to its end (``caught_up``) and quiet this long, the watermark passes
        everything read: the end of a burst waits this, not ``idle_seconds`` (see
        :meth:`~detectors.ingest.ordering.EventTimeReorderer.settled`).  None: it waits ``idle_seconds``.
    hold_for_order
        Hold predictions and examples back and release them in event-time order (the backtest).  Without
        it (the worker) they leave at once and only the watermark (:attr:`released_through`) is kept: the
        monitor stage orders them, holding them in the monitor-input topic, which survives a crash.
    log_changes
        Keep, per partition, the events that started and stopped waiting for their partner, for
        :meth:`take_changes` (the worker logs them, see :mod:`detectors.ingest.join_log`).
    keep_json
        Fill :attr:`IngestResult.labelled_json` and ``predictions_json`` from the source bytes (it keeps the
        bytes of waiting events).  Only without ``hold_for_order``: the items leave as they come.

    Examples
    --------
    >>> stage = JoinStage(ttl_seconds=60, max_event_bytes=4096)
    >>> out = stage.process([
    ...     RawRecord("outcome", b'{"prediction_id": "p1", "event_time": "2026-01-01T00:00:05Z", "actual": "cat"}', 11),
    ...     RawRecord("prediction", b'not json', 12),
    ...     RawRecord("prediction", b'{"prediction_id": "p1", "model": "vision", "model_version": "2",'
    ...               b' "event_time": "2026-01-01T00:00:00Z", "prediction": "dog"}', 13),
    ... ])
    >>> out.labelled, stage.n_held   # held until the prediction side passes 00:00:05
    ([], 1)
    >>> [(e.prediction.prediction, e.outcome.actual) for e in stage.flush().labelled]
    [('dog', 'cat')]
    >>> [(d.record.ref, d.rejection.kind) for d in out.dead_letters]
    [(12, 'not_json')]
    >>> stage.n_read["prediction"], stage.n_processed["prediction"], stage.n_dead_lettered["prediction"]
    (2, 1, 1)
    """

    def __init__(
        self, ttl_seconds: float, max_event_bytes: int, idle_seconds: float = 5.0, max_pending: int = 1_000_000,
        grace_seconds: float = 0.0, hold_for_order: bool = True, log_changes: bool = False,
        settle_seconds: float | None = None, keep_json: bool = False,
    ) -> None:
        if keep_json and hold_for_order:
            raise InvalidParameter("keep_json", "needs hold_for_order=False: held items leave without their JSON")
        self.ttl_seconds = ttl_seconds
        self.keep_json = keep_json
        # With keep_json, the source bytes of each waiting event, by (partition, side, prediction id).
        self._waiting_json: dict[tuple[int, Side, str], bytes] = {}
        self.hold_for_order = hold_for_order
        self.log_changes = log_changes
        self.max_event_bytes = max_event_bytes
        self.idle_seconds = idle_seconds
        self.max_pending = max_pending
        # One joiner per partition: a prediction and its outcome share a key, so
        # they share a partition number, and each partition's two clocks then
        # judge expiry without being fooled by a faster partition.
        self._joiners: dict[int, OutcomeJoiner[Ref]] = {}
        # (Without hold_for_order they hold None: only the watermark is wanted.)
        self._order: EventTimeReorderer[LabelledExample | None] = EventTimeReorderer(
            idle_seconds, max_pending, grace_seconds, settle_seconds
        )
        # Predictions leave in event-time order too, held by the same source clocks, so that the data monitors
        # see one order however the partitions were read.
        self._prediction_order: EventTimeReorderer[PredictionEvent | None] = EventTimeReorderer(
            idle_seconds, max_pending, grace_seconds, settle_seconds
        )
        self.n_read: Counter[str] = Counter()
        self.n_processed: Counter[str] = Counter()
        self.n_dead_lettered: Counter[str] = Counter()
        self.n_expired: Counter[str] = Counter()
        #: Waiting events taken over from a changelog (:meth:`restore`) and handed to another worker (:meth:`forget`).
        self.n_restored: Counter[str] = Counter()
        self.n_handed_over: Counter[str] = Counter()
        # Per partition, since the last take_changes: events that started waiting, and keys that stopped.
        self._added: dict[int, dict[tuple[Side, str], RawRecord[Ref]]] = {}
        self._resolved: dict[int, list[tuple[Side, str]]] = {}
        # Per (side, partition): wall time of its last valid event, and its clock then.
        self._last_seen: dict[tuple[Side, int], tuple[float, datetime | None]] = {}
        self._earliest: dict[tuple[Side, int], datetime] = {}

    def _joiner(self, partition: int) -> OutcomeJoiner[Ref]:
        joiner = self._joiners.get(partition)
        if joiner is None:
            joiner = self._joiners[partition] = OutcomeJoiner(self.ttl_seconds, self.max_pending)
        return joiner

    @property
    def n_pending(self) -> int:
        """Events waiting for their partner."""
        return sum(j.n_pending for j in self._joiners.values())

    def pending_by_side(self) -> dict[Side, int]:
        """Events waiting for their partner, per side."""
        return {
            "prediction": sum(j.n_pending_predictions for j in self._joiners.values()),
            "outcome": sum(j.n_pending_outcomes for j in self._joiners.values()),
        }

    def active_sources(self, wall_time: float, busy: Collection[Source] = ()) -> list[Source]:
        """The (side, partition) sources that hold this stage's watermark back now."""
        return [source for source in self._order.active_sources(wall_time, busy)]  # type: ignore[misc]

    @property
    def n_late(self) -> int:
        """Examples and predictions that came after the watermark had passed them (so left out of order)."""
        return self._order.n_late + self._prediction_order.n_late

    @property
    def released_through(self) -> datetime | None:
        """This stage's watermark: every prediction and example up to this event time has left it."""
        marks = [order.released_through for order in (self._order, self._prediction_order)]
        return None if None in marks else min(m for m in marks if m is not None)

    @property
    def n_held(self) -> int:
        """Joined examples held back until every source has passed their event time."""
        return self._order.n_buffered if self.hold_for_order else 0

    def process(
        self, records: Iterable[RawRecord[Ref]], wall_time: float | None = None, busy: Collection[Source] = (),
        caught_up: bool = False,
    ) -> IngestResult[Ref]:
        """Decode and join one batch; expire what the batch's event times have outdated.

        ``busy`` names the (side, partition) sources that still have unread
        messages: they are never treated as quiet (see :meth:`idle`).
        ``caught_up``: every source this stage reads has been read to its end.
        """
        out: IngestResult[Ref] = IngestResult()
        # Per source, the batch's earliest and latest valid event times: the clocks are moved once a batch
        # (nothing reads them until _release), not once an event.
        first: dict[Source, datetime] = {}
        latest: dict[Source, datetime] = {}
        for record in records:
            self.n_read[record.side] += 1
            event = self._decode(record)
            if isinstance(event, Rejection):
                self._dead_letter(record, event, out)
                continue
            source, event_time = (record.side, record.partition), event.event_time
            seen = latest.get(source)
            if seen is None:
                first[source] = latest[source] = event_time
            elif event_time > seen:
                latest[source] = event_time
            elif event_time < first[source]:
                first[source] = event_time
            joined = self._add(self._joiner(record.partition), event, record.ref)
            if isinstance(joined, Duplicate):
                self._dead_letter(record, Rejection("duplicate", joined.reason), out)
                continue
            if isinstance(event, PredictionEvent):
                self._prediction_order.push(event.event_time, event.prediction_id,
                                            event if self.hold_for_order else None, wall_time)
                if not self.hold_for_order:
                    out.predictions.append(event)
                    if self.keep_json:
                        out.predictions_json.append(record.value)  # type: ignore[arg-type]
            if joined is None:
                self._note_waiting(record, event.prediction_id)
            else:
                # The other side was waiting, and stops (its bytes, if kept, go into the example's JSON first).
                self._emit_joined(joined, out, wall_time, record)
                self._note_resolved(record.partition, other_side(record.side), event.prediction_id)
        for source, event_time in latest.items():
            earliest = self._earliest.get(source)
            if earliest is None or first[source] < earliest:
                self._earliest[source] = first[source]
            for order in (self._order, self._prediction_order):
                order.observe(source, event_time, wall_time)
        if wall_time is not None:
            self._note_activity(set(latest), wall_time)
        self._release(out, wall_time, busy, caught_up)
        self._expire(out)
        return out

    def _decode(self, record: RawRecord[Ref]) -> PredictionEvent | OutcomeEvent | Rejection:
        if record.side == "prediction":
            return decode(_PREDICTION, record.value, self.max_event_bytes)
        return decode(_OUTCOME, record.value, self.max_event_bytes)

    @staticmethod
    def _add(joiner: OutcomeJoiner[Ref], event: PredictionEvent | OutcomeEvent,
             ref: Ref) -> LabelledExample | Duplicate | None:
        if isinstance(event, PredictionEvent):
            return joiner.add_prediction(event, ref)
        return joiner.add_outcome(event, ref)

    def _emit_joined(self, joined: LabelledExample, out: IngestResult[Ref], wall_time: float | None,
                     completing: RawRecord[Ref]) -> None:
        self.n_processed["prediction"] += 1
        self.n_processed["outcome"] += 1
        self._order.push(joined.completed_at, joined.prediction.prediction_id, joined if self.hold_for_order else None,
                         wall_time)
        if not self.hold_for_order:
            out.labelled.append(joined)
            if self.keep_json:
                waited = self._waiting_json.pop(
                    (completing.partition, other_side(completing.side), joined.prediction.prediction_id), None)
                if waited is None:  # (not kept: dump it)
                    out.labelled_json.append(joined.model_dump_json().encode())
                elif completing.side == "prediction":
                    out.labelled_json.append(labelled_json(completing.value, waited))  # type: ignore[arg-type]
                else:
                    out.labelled_json.append(labelled_json(waited, completing.value))  # type: ignore[arg-type]

    def _note_waiting(self, record: RawRecord[Ref], prediction_id: str) -> None:
        if self.keep_json:
            self._waiting_json[(record.partition, record.side, prediction_id)] = record.value  # type: ignore[assignment]
        if self.log_changes:
            self._added.setdefault(record.partition, {})[(record.side, prediction_id)] = record

    def _note_resolved(self, partition: int, side: Side, prediction_id: str) -> None:
        if self.keep_json:
            self._waiting_json.pop((partition, side, prediction_id), None)
        if not self.log_changes:
            return
        key = (side, prediction_id)
        added = self._added.get(partition)
        if added is not None and key in added:
            del added[key]  # started and stopped waiting within one step: never logged
        else:
            self._resolved.setdefault(partition, []).append(key)

    def take_changes(self) -> dict[int, tuple[list[tuple[Side, str, RawRecord[Ref]]], list[tuple[Side, str]]]]:
        """Per partition, the events that started waiting (side, prediction id, record) and the (side, prediction
        id) keys that stopped, since the last call."""
        changes: dict[int, tuple[list[tuple[Side, str, RawRecord[Ref]]], list[tuple[Side, str]]]] = {}
        for partition in set(self._added) | set(self._resolved):
            added = [(side, pid, record) for (side, pid), record in self._added.pop(partition, {}).items()]
            changes[partition] = (added, self._resolved.pop(partition, []))
        return changes

    def restore(self, partition: int, waiting: Iterable[RawRecord[Ref]], clocks: Mapping[Side, datetime | None],
                wall_time: float) -> IngestResult[Ref]:
        """Take over a partition's waiting events (from its changelog) and its clocks, as if read just now.

        Predictions among them were published when first read, so they are not again.  A consistent log
        gives back nothing but the waiting events; anything else (a record the schema now refuses, two
        partners both logged as waiting) is accounted for in the result rather than dropped.
        """
        out: IngestResult[Ref] = IngestResult()
        joiner = self._joiner(partition)
        for record in waiting:
            self.n_restored[record.side] += 1
            event = self._decode(record)
            if isinstance(event, Rejection):
                self._dead_letter(record, event, out)
                continue
            joined = self._add(joiner, event, record.ref)
            if isinstance(joined, Duplicate):
                self._dead_letter(record, Rejection("duplicate", joined.reason), out)
            elif joined is not None:
                self._emit_joined(joined, out, wall_time, record)
                self._note_resolved(partition, other_side(record.side), event.prediction_id)
            elif self.keep_json:
                self._waiting_json[(partition, record.side, event.prediction_id)] = record.value  # type: ignore[assignment]
        for side, clock in clocks.items():
            if clock is not None:
                joiner.advance(side, clock)
        for each in SIDES:
            self._last_seen.setdefault((each, partition), (wall_time, joiner.clock(each)))
        return out

    def clocks(self, partition: int) -> dict[Side, datetime | None]:
        """A partition's event-time clock per side (for its changelog's position record)."""
        joiner = self._joiner(partition)
        return {side: joiner.clock(side) for side in SIDES}

    def forget(self, partition: int) -> IdsWithinHorizon | None:
        """Drop a partition another worker takes over (it restores the waiting events from the changelog).

        Returns the ids it had joined: the changelog does not hold them, so if the partition comes back here
        with nothing logged in between, :meth:`remember_joined` lets a producer's duplicate still be caught.
        """
        joiner = self._joiners.pop(partition, None)
        if joiner is not None:
            self.n_handed_over["prediction"] += joiner.n_pending_predictions
            self.n_handed_over["outcome"] += joiner.n_pending_outcomes
        self._added.pop(partition, None)
        self._resolved.pop(partition, None)
        for key in [key for key in self._waiting_json if key[0] == partition]:
            del self._waiting_json[key]
        return None if joiner is None else joiner.joined_ids

    def remember_joined(self, partition: int, ids: IdsWithinHorizon) -> None:
        """Ids this stage joined on ``partition`` before it last forgot it (nothing was joined there since)."""
        self._joiner(partition).adopt_joined(ids)
        for side in SIDES:
            self._last_seen.pop((side, partition), None)
            self._earliest.pop((side, partition), None)

    def _release(self, out: IngestResult[Ref], wall_time: float | None, busy: Collection[Source],
                 caught_up: bool = False) -> None:
        labelled = self._order.release(wall_time, busy, caught_up)
        predictions = self._prediction_order.release(wall_time, busy, caught_up)
        if self.hold_for_order:  # else they left when they came, and these are Nones
            out.labelled = [e for e in labelled if e is not None]
            out.predictions = [p for p in predictions if p is not None]

    def expect_partitions(self, partitions: Iterable[int], wall_time: float | None = None) -> None:
        """Announce the source partitions of both sides, so that a late first fetch cannot be overtaken."""
        for partition in partitions:
            for side in SIDES:
                for order in (self._order, self._prediction_order):
                    order.expect((side, partition), wall_time)

    def flush(self) -> IngestResult[Ref]:
        """At the end of a finite input: release every held example, in order."""
        return IngestResult(labelled=[e for e in self._order.flush() if e is not None],
                            predictions=[p for p in self._prediction_order.flush() if p is not None])

    def settled(self, wall_time: float, caught_up: bool) -> bool:
        """Whether traffic has stopped: every source read to its end (``caught_up``) and quiet ``settle_seconds``,
        so that everything read has been released (see :meth:`EventTimeReorderer.settled`)."""
        return all(order.settled(wall_time, caught_up) for order in (self._order, self._prediction_order))

    def idle(self, wall_time: float, busy: Collection[Source] = (), caught_up: bool = False) -> IngestResult[Ref]:
        """Let a quiet side's event time run on with the wall clock, and expire.

        A side (predictions or outcomes) that has had no event for
        ``idle_seconds`` has its clock moved to where it stood at its last event
        plus the wall time since.  Without this, predictions whose outcomes
        stopped coming (or never came) would wait for them forever.  A side
        that still receives events keeps its own event time, so a consumer
        reading one topic ahead of the other expires nothing early, and a side
        in ``busy`` (it has unread messages, as in a backlog) is never quiet.
        """
        out: IngestResult[Ref] = IngestResult()
        for (side, partition), (wall_at_last, clock_at_last) in self._last_seen.items():
            quiet = wall_time - wall_at_last
            if (side, partition) in busy:
                # Its next events are waiting to be read: its clock is not "now".
                self._last_seen[(side, partition)] = (wall_time, clock_at_last)
            elif quiet >= self.idle_seconds and clock_at_last is not None:
                self._joiner(partition).advance(side, clock_at_last + timedelta(seconds=quiet))
        self._release(out, wall_time, busy, caught_up)
        self._expire(out)
        return out

    def _note_activity(self, active: set[tuple[Side, int]], wall_time: float) -> None:
        # Only valid events restart a source's quiet period: a trickle of garbage must not stop expiry.
        for side, partition in active:
            self._last_seen[(side, partition)] = (wall_time, self._joiner(partition).clock(side))
        for side, partition in active:
            other = other_side(side)
            if (other, partition) not in self._last_seen:
                # A side never heard from is quiet since the other's first event, and its clock starts at the
                # other's earliest event: starting at the other's latest would, in a backlog, expire events
                # whose partners are simply not read yet.
                self._last_seen[(other, partition)] = (wall_time, self._earliest[(side, partition)])

    def _dead_letter(self, record: RawRecord[Ref], rejection: Rejection, out: IngestResult[Ref]) -> None:
        self.n_dead_lettered[record.side] += 1
        out.dead_letters.append(DeadLetter(record, rejection))

    def _expire(self, out: IngestResult[Ref]) -> None:
        for partition, joiner in self._joiners.items():
            for item in joiner.expire():
                self.n_expired[item.side] += 1
                self._note_resolved(partition, item.side, item.prediction_id)
                out.expired.append(item)
