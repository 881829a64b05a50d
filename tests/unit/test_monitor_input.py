"""The monitor-input messages the ingest stage writes: valid MonitorBatch JSON, cut under the size limits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pydantic import TypeAdapter

from detectors.ingest.merge import NOTHING_SENT, MonitorInputOrder
from schemas.events import (
    MAX_BATCH_ITEMS,
    LabelledExample,
    MonitorBatch,
    OutcomeEvent,
    PredictionEvent,
)
from streams.worker.messages import BATCH_BYTES, monitor_batches

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _prediction(i: int, padding: int = 0) -> PredictionEvent:
    return PredictionEvent(prediction_id=f"p{i}", model="m", model_version="1", event_time=T0 + timedelta(seconds=i),
                           prediction="yes", features={"note": "x" * padding})


def test_batches_parse_and_keep_every_item_in_order() -> None:
    predictions = [_prediction(i) for i in range(2500)]
    labelled = [LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id=p.prediction_id, event_time=T0,
                                                                   actual="no")) for p in predictions[:700]]
    messages = monitor_batches("m", [p.model_dump_json().encode() for p in predictions],
                                [e.model_dump_json().encode() for e in labelled])
    batches = [TypeAdapter(MonitorBatch).validate_json(m) for m in messages]
    assert all(b.model == "m" and len(b.predictions) + len(b.labelled) <= MAX_BATCH_ITEMS for b in batches)
    assert [p for b in batches for p in b.predictions] == predictions
    assert [e for b in batches for e in b.labelled] == labelled
    assert len(batches) == 4  # 3,200 items, at most 1,000 a message


def test_large_items_are_cut_by_bytes() -> None:
    predictions = [_prediction(i, padding=1000) for i in range(1200)]  # ~1.2 kB each
    messages = monitor_batches("m", [p.model_dump_json().encode() for p in predictions], [])
    assert all(len(m) <= BATCH_BYTES + 1024 for m in messages) and len(messages) >= 3
    assert sum(len(TypeAdapter(MonitorBatch).validate_json(m).predictions) for m in messages) == 1200


def _merge_two_workers(second_announces_early: bool) -> tuple[list[str], int]:
    """Worker 1 (partition 0) sends at once; worker 2 (partition 1) is slower to release its first items.

    As in the worker, the merge releases what it can after every message it reads.
    """
    merge: MonitorInputOrder[str] = MonitorInputOrder(n_partitions=2, idle_seconds=5, wall_time=0.0, grace_seconds=2)
    released: list[str] = []

    def read(batch: MonitorBatch, worker: str, wall_time: float) -> None:
        merge.add(TypeAdapter(MonitorBatch).validate_json(batch.model_dump_json()), worker, wall_time)  # as sent
        released.extend(h.item.prediction_id for h in merge.release(wall_time)[0])

    mine, theirs = ("prediction/0", "outcome/0"), ("prediction/1", "outcome/1")
    # Traffic starts long after the merge was made: every source has gone quiet.
    read(MonitorBatch(model="m", predictions=[_prediction(i) for i in (1, 3, 5)]), "w1", wall_time=30.0)
    read(MonitorBatch(watermarks={s: T0 + timedelta(seconds=5) for s in mine}), "w1", wall_time=30.0)
    if second_announces_early:
        read(MonitorBatch(watermarks={s: NOTHING_SENT for s in theirs}), "w2", wall_time=30.5)
    read(MonitorBatch(watermarks={s: T0 + timedelta(seconds=5) for s in mine}), "w1", wall_time=33.0)
    read(MonitorBatch(model="m", predictions=[_prediction(i) for i in (0, 2, 4)]), "w2", wall_time=34.0)
    read(MonitorBatch(watermarks={s: T0 + timedelta(seconds=4) for s in theirs}), "w2", wall_time=34.0)
    released.extend(h.item.prediction_id for h in merge.release(wall_time=60.0)[0])  # everyone quiet: the rest
    return released, merge.n_late


def test_a_worker_that_announces_it_has_sent_nothing_yet_is_waited_for() -> None:
    assert _merge_two_workers(second_announces_early=True) == (["p0", "p1", "p2", "p3", "p4", "p5"], 0)
    # Without the announcement the grace period runs out and worker 2's items come after worker 1's.
    released, n_late = _merge_two_workers(second_announces_early=False)
    assert released[:3] == ["p1", "p3", "p5"] and n_late == 3


def test_a_partition_batch_holds_each_item_under_its_own_model_and_skips_restored_models() -> None:
    items = [PredictionEvent(prediction_id=f"{model}-{i}", model=model, model_version="1",
                             event_time=T0 + timedelta(seconds=i), prediction="yes")
             for i in range(3) for model in ("a", "b")]
    (blob,) = monitor_batches(None, [p.model_dump_json().encode() for p in items], [])
    batch = TypeAdapter(MonitorBatch).validate_json(blob)
    assert batch.model is None and batch.predictions == items
    merge: MonitorInputOrder[str] = MonitorInputOrder(n_partitions=1, idle_seconds=5, wall_time=0.0)
    merge.add(batch, ref="m1", wall_time=0.0, skip={"a"})
    merge.add(MonitorBatch(watermarks={"prediction/0": T0 + timedelta(seconds=9), "outcome/0": T0 + timedelta(seconds=9)}),
              ref="m2", wall_time=0.0)
    held, _ = merge.release(wall_time=0.0)
    assert [(h.model, h.item.prediction_id) for h in held] == [("b", "b-0"), ("b", "b-1"), ("b", "b-2")]


def test_another_workers_settled_sources_let_the_last_items_through_at_once() -> None:
    """The end of a burst two workers read: worker 2 has read its partition to the end and says so; worker 1's
    last items, later than worker 2's watermark, leave at once instead of after ``idle_seconds``."""
    merge: MonitorInputOrder[str] = MonitorInputOrder(n_partitions=2, idle_seconds=5, wall_time=0.0, grace_seconds=2)
    mine, theirs = ("prediction/0", "outcome/0"), ("prediction/1", "outcome/1")
    merge.add(MonitorBatch(model="m", predictions=[_prediction(i) for i in (1, 8)]), "w1", wall_time=0.0)
    merge.add(MonitorBatch(watermarks={s: T0 + timedelta(seconds=8) for s in mine}), "w1", wall_time=0.0)
    merge.add(MonitorBatch(watermarks={s: T0 + timedelta(seconds=4) for s in theirs}), "w2", wall_time=0.0)
    assert [h.item.prediction_id for h in merge.release(wall_time=0.1)[0]] == ["p1"]
    settled = MonitorBatch(watermarks={s: T0 + timedelta(seconds=4) for s in theirs}, settled=list(theirs))
    merge.add(TypeAdapter(MonitorBatch).validate_json(settled.model_dump_json()), "w2", wall_time=0.5)  # as sent
    merge.add(MonitorBatch(watermarks={s: T0 + timedelta(seconds=8) for s in mine}, settled=list(mine)), "w1",
              wall_time=0.6)
    assert [h.item.prediction_id for h in merge.release(wall_time=0.6)[0]] == ["p8"]
