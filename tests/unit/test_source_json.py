"""The worker writes items as the source bytes they were validated from: they decode to the very items joined."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.ingest.stage import JoinStage, RawRecord
from schemas.events import LabelledExample, MonitorBatch, PredictionEvent
from streams.worker.messages import monitor_batches


def _prediction(i: int, spaced: bool) -> bytes:
    body = {"event_time": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00", "prediction_id": f"p{i}",
            "model": "m", "model_version": "1", "prediction": i % 3, "confidence": 0.5,
            "features": {"x": i / 7, "c": "é"}}
    return json.dumps(body, indent=2 if spaced else None, ensure_ascii=not spaced).encode()


def _outcome(i: int) -> bytes:
    return json.dumps({"actual": i % 2, "prediction_id": f"p{i}", "event_time": f"2026-01-01T01:00:{i % 60:02d}Z"}).encode()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 59), min_size=1, max_size=40, unique=True), st.randoms(use_true_random=False),
       st.booleans())
def test_the_json_kept_decodes_to_the_items_joined(ids: list[int], rnd: random.Random, spaced: bool) -> None:
    records = [RawRecord("prediction", _prediction(i, spaced), i) for i in ids]
    records += [RawRecord("outcome", _outcome(i), 100 + i) for i in ids]
    rnd.shuffle(records)  # either side may come first, and wait for the other
    stage: JoinStage[int] = JoinStage(ttl_seconds=10_000, max_event_bytes=4096, hold_for_order=False, keep_json=True)
    out = stage.process(records[: len(records) // 2])
    out = out.extended(stage.process(records[len(records) // 2:]))
    assert len(out.labelled_json) == len(out.labelled) == len(ids)
    assert len(out.predictions_json) == len(out.predictions) == len(ids)
    (blob,) = monitor_batches(None, out.predictions_json, out.labelled_json)
    decoded = MonitorBatch.model_validate_json(blob)
    assert decoded.labelled == out.labelled and decoded.predictions == out.predictions
    assert all(isinstance(e, LabelledExample) for e in decoded.labelled)
    assert all(isinstance(p, PredictionEvent) for p in decoded.predictions)


def test_events_restored_from_a_changelog_keep_their_json() -> None:
    stage: JoinStage[int] = JoinStage(ttl_seconds=10_000, max_event_bytes=4096, hold_for_order=False, keep_json=True)
    stage.restore(0, [RawRecord("prediction", _prediction(1, True), 7)], {}, wall_time=0.0)
    out = stage.process([RawRecord("outcome", _outcome(1), 8)])
    (blob,) = out.labelled_json
    assert blob.startswith(b'{"schema_version":1,"prediction":' + _prediction(1, True))
    assert LabelledExample.model_validate_json(blob) == out.labelled[0]


def test_keeping_json_needs_items_to_leave_as_they_come() -> None:
    import pytest

    from detectors.exceptions import InvalidParameter

    with pytest.raises(InvalidParameter, match="keep_json"):
        JoinStage(ttl_seconds=60, max_event_bytes=4096, keep_json=True)
