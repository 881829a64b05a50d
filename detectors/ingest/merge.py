"""The monitor stage's merge: one event-time order out of several ingest workers' monitor-input batches."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Generic, TypeVar

from detectors.ingest.ordering import EventTimeReorderer
from pydantic import TypeAdapter

from detectors.ingest.stage import Source
from schemas.decoding import Rejection, decode
from schemas.events import SIDES, LabelledExample, MonitorBatch, PredictionEvent

__all__ = ["NOTHING_SENT", "Held", "MonitorInputOrder", "decode_monitor_input", "source_name"]

Ref = TypeVar("Ref")


#: The watermark of a source partition a worker reads but has released nothing of yet: "hold everything".
NOTHING_SENT = datetime.min.replace(tzinfo=timezone.utc)


def source_name(source: Source) -> str:
    """How a source partition is named in watermark messages.

    >>> source_name(("outcome", 3))
    'outcome/3'
    """
    side, partition = source
    return f"{side}/{partition}"


_MONITOR_BATCH = TypeAdapter(MonitorBatch)


def decode_monitor_input(raw: bytes | None, max_bytes: int, n_partitions: int) -> MonitorBatch | Rejection:
    """A monitor-input message, or why it is refused: the schema, and watermarks of this deployment's sources only.

    The topic is ours, but anyone allowed to produce to it can write there; a watermark of a source partition
    that does not exist would otherwise stop the merge.

    >>> list(decode_monitor_input(b'{"watermarks": {"prediction/1": "2026-01-01T00:00:00Z"}}', 1024, 2).watermarks)
    ['prediction/1']
    >>> print(decode_monitor_input(b'{"watermarks": {"prediction/7": "2026-01-01T00:00:00Z"}}', 1024, 2).reason)
    watermarks: 'prediction/7' is not a source partition (sides prediction and outcome, partitions 0 to 1)
    """
    decoded = decode(_MONITOR_BATCH, raw, max_bytes)
    if isinstance(decoded, Rejection):
        return decoded
    known = {source_name((side, p)) for p in range(n_partitions) for side in SIDES}
    unknown = sorted(set(decoded.watermarks) - known)
    if unknown:
        return Rejection("schema", f"watermarks: {unknown[0]!r} is not a source partition (sides "
                                   f"{' and '.join(SIDES)}, partitions 0 to {n_partitions - 1})")
    unmarked = sorted(set(decoded.settled) - set(decoded.watermarks))
    if unmarked:
        return Rejection("schema", f"settled: {unmarked[0]!r} has no watermark in the message")
    return decoded


@dataclass(slots=True)
class Held(Generic[Ref]):
    """An item of a monitor-input batch, with the message it came in (for acks and checkpoints).

    One is made per item: slotted and not frozen, like :class:`~detectors.ingest.stage.RawRecord`, for speed.
    """

    ref: Ref
    model: str
    item: PredictionEvent | LabelledExample


class MonitorInputOrder(Generic[Ref]):
    """The monitor stage's side of the watermarks: one event-time order out of several ingest workers' batches.

    Every ingest worker sends each model's predictions and labelled examples
    in event-time order, but two workers' batches for one model interleave on
    its partition.  Items are held here until every active source partition's
    announced watermark has passed them, exactly as :class:`JoinStage` holds
    them for the partitions it reads; a source partition that no worker has
    announced for ``idle_seconds`` stops holding anything back.  While one is
    quiet, the watermark lags ``grace_seconds`` behind the active ones: a
    worker whose partitions were quiet and start again (as at the start of
    traffic) is then not overtaken by another worker a batch ahead of it.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> from schemas.events import MonitorBatch
    >>> t = lambda s: datetime(2026, 1, 1, 0, 0, s, tzinfo=timezone.utc)
    >>> p = lambda i, s: PredictionEvent(prediction_id=i, model="m", model_version="1", event_time=t(s), prediction=1)
    >>> merge = MonitorInputOrder(n_partitions=2, idle_seconds=5, wall_time=0.0)
    >>> merge.add(MonitorBatch(model="m", predictions=[p("b", 9)]), ref="worker-2", wall_time=0.0)
    >>> merge.add(MonitorBatch(watermarks={"prediction/0": t(9), "outcome/0": t(9)}), ref="worker-2", wall_time=0.0)
    >>> merge.release(wall_time=0.0)   # nothing yet: worker 1's partition 1 has not announced
    ([], [])
    >>> merge.add(MonitorBatch(model="m", predictions=[p("a", 5)]), ref="worker-1", wall_time=1.0)
    >>> merge.add(MonitorBatch(watermarks={"prediction/1": t(7), "outcome/1": t(7)}), ref="worker-1", wall_time=1.0)
    >>> [(h.ref, h.item.prediction_id) for h in merge.release(wall_time=1.0)[0]]
    [('worker-1', 'a')]
    >>> [(h.ref, h.item.prediction_id) for h in merge.release(wall_time=7.0)[0]]  # worker 1 went quiet
    [('worker-2', 'b')]
    """

    def __init__(self, n_partitions: int, idle_seconds: float, max_buffered: int = 1_000_000,
                 wall_time: float | None = None, grace_seconds: float = 0.0) -> None:
        self.n_partitions = n_partitions
        self._predictions: EventTimeReorderer[Held[Ref]] = EventTimeReorderer(idle_seconds, max_buffered, grace_seconds)
        self._labelled: EventTimeReorderer[Held[Ref]] = EventTimeReorderer(idle_seconds, max_buffered, grace_seconds)
        self._sources = {source_name((side, p)) for p in range(n_partitions) for side in SIDES}
        for source in sorted(self._sources):
            for order in (self._predictions, self._labelled):
                order.expect(source, wall_time)

    @property
    def n_held(self) -> int:
        return self._predictions.n_buffered + self._labelled.n_buffered

    @property
    def n_late(self) -> int:
        """Items that came after the merged watermark had passed them (so were scored out of order)."""
        return self._predictions.n_late + self._labelled.n_late

    def add(self, batch: MonitorBatch, ref: Ref, wall_time: float | None = None,
            skip: Collection[str] = ()) -> None:
        """Hold a batch's items (but those of the models in ``skip``), or take in a watermark.

        A batch may carry several models' items; each item is held under its own model.
        """
        settled = set(batch.settled)
        for source, mark in batch.watermarks.items():
            assert source in self._sources, f"source {source} is not one of the {self.n_partitions} partitions"
            for order in (self._predictions, self._labelled):
                order.observe(source, mark, wall_time, settled=source in settled)
        for prediction in batch.predictions:
            if prediction.model not in skip:
                self._predictions.push(prediction.event_time, prediction.prediction_id,
                                       Held(ref, prediction.model, prediction), wall_time)
        for example in batch.labelled:
            model = example.prediction.model
            if model not in skip:
                self._labelled.push(example.completed_at, example.prediction.prediction_id, Held(ref, model, example),
                                    wall_time)

    def release(self, wall_time: float | None = None) -> tuple[list[Held[Ref]], list[Held[Ref]]]:
        """The predictions and the labelled examples every active source has passed, each in event-time order."""
        return self._predictions.release(wall_time), self._labelled.release(wall_time)
