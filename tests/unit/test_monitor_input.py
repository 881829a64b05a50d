"""The monitor-input messages the ingest stage writes: valid MonitorBatch JSON, cut under the size limits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pydantic import TypeAdapter

from schemas.events import MAX_BATCH_ITEMS, LabelledExample, MonitorBatch, OutcomeEvent, PredictionEvent
from streams.app import _BATCH_BYTES, _monitor_batches

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _prediction(i: int, padding: int = 0) -> PredictionEvent:
    return PredictionEvent(prediction_id=f"p{i}", model="m", model_version="1", event_time=T0 + timedelta(seconds=i),
                           prediction="yes", features={"note": "x" * padding})


def test_batches_parse_and_keep_every_item_in_order() -> None:
    predictions = [_prediction(i) for i in range(2500)]
    labelled = [LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id=p.prediction_id, event_time=T0,
                                                                   actual="no")) for p in predictions[:700]]
    messages = _monitor_batches("m", [p.model_dump_json().encode() for p in predictions],
                                [e.model_dump_json().encode() for e in labelled])
    batches = [TypeAdapter(MonitorBatch).validate_json(m) for m in messages]
    assert all(b.model == "m" and len(b.predictions) + len(b.labelled) <= MAX_BATCH_ITEMS for b in batches)
    assert [p for b in batches for p in b.predictions] == predictions
    assert [e for b in batches for e in b.labelled] == labelled
    assert len(batches) == 4  # 3,200 items, at most 1,000 a message


def test_large_items_are_cut_by_bytes() -> None:
    predictions = [_prediction(i, padding=1000) for i in range(1200)]  # ~1.2 kB each
    messages = _monitor_batches("m", [p.model_dump_json().encode() for p in predictions], [])
    assert all(len(m) <= _BATCH_BYTES + 1024 for m in messages) and len(messages) >= 3
    assert sum(len(TypeAdapter(MonitorBatch).validate_json(m).predictions) for m in messages) == 1200
