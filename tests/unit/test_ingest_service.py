"""IngestService: a step's records are committed only once its changelog position is acknowledged.

The outbox here records what each send carried; the Kafka clients themselves are exercised by the integration
tests on the real broker.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from detectors.ingest.join_log import POSITION_KEY
from detectors.ingest.stage import RawRecord
from schemas.config import parse_monitor_config
from schemas.events import MonitorBatch
from streams.metrics import WorkerMetrics
from streams.settings import load_settings
from streams.worker.ingest import IngestService
from streams.worker.messages import SourceRef

SETTINGS = load_settings(partitions=1, app_id="unit")
CONFIG = parse_monitor_config("models: {m: {task: classification, performance: {threshold: 0.5}}}")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class RecordingOutbox:
    """Keeps each send's messages, in order, as (topic, key, value)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, bytes | None, bytes | None]] = []
        self.sends: list[list[tuple[str, bytes | None, bytes | None]]] = []

    def add(self, topic: str, key: bytes | None, value: bytes | None, headers: object = None,
            partition: int | None = None) -> None:
        self.pending.append((topic, key, value))

    def send(self) -> None:
        self.sends.append(self.pending)
        self.pending = []


def _pair(i: int, offset: int) -> list[RawRecord[SourceRef]]:
    t = (T0 + timedelta(seconds=i)).isoformat()
    prediction = json.dumps({"prediction_id": f"p{i}", "model": "m", "model_version": "1", "event_time": t,
                             "prediction": "yes"}).encode()
    outcome = json.dumps({"prediction_id": f"p{i}", "event_time": t, "actual": "yes"}).encode()
    return [RawRecord("prediction", prediction, SourceRef(SETTINGS.topics.predictions, 0, offset, None), 0),
            RawRecord("outcome", outcome, SourceRef(SETTINGS.topics.outcomes, 0, offset, None), 0)]


def _positions(messages: list[tuple[str, bytes | None, bytes | None]]) -> list[dict[str, object]]:
    return [json.loads(value or b"") for topic, key, value in messages
            if topic == SETTINGS.join_state_topic and key == POSITION_KEY]


def _labelled(messages: list[tuple[str, bytes | None, bytes | None]]) -> list[str]:
    return [e.prediction.prediction_id for topic, _, value in messages if topic == SETTINGS.topics.labelled
            for e in MonitorBatch.model_validate_json(value or b"").labelled]


def test_records_are_committed_one_step_later_once_their_position_is_acknowledged() -> None:
    outbox = RecordingOutbox()
    service = IngestService(SETTINGS, CONFIG, WorkerMetrics(), outbox)  # type: ignore[arg-type]
    first, second = _pair(1, offset=0), _pair(2, offset=1)
    sources = {("prediction", 0), ("outcome", 0)}

    assert service.step(first, sources, set()) == []
    # The first send carries the step's output, and its position is only queued behind it.
    assert _labelled(outbox.sends[0]) == ["p1"] and _positions(outbox.sends[0]) == []
    assert len(_positions(outbox.pending)) == 1

    assert service.step(second, sources, set()) == first
    # The second send acknowledges the first step's position (it went first) with the second step's output.
    second_send = outbox.sends[1]
    assert _positions(second_send) and _labelled(second_send) == ["p2"]
    position_at = next(i for i, (_, key, _) in enumerate(second_send) if key == POSITION_KEY)
    output_at = next(i for i, (topic, _, _) in enumerate(second_send) if topic == SETTINGS.topics.labelled)
    assert position_at < output_at

    assert service.finish() == second
    assert _positions(outbox.sends[2]) and service.finish() == []


def test_a_revocation_hands_back_the_last_step_for_commit_before_forgetting() -> None:
    outbox = RecordingOutbox()
    service = IngestService(SETTINGS, CONFIG, WorkerMetrics(), outbox)  # type: ignore[arg-type]
    records = _pair(1, offset=0)[:1]  # a prediction that waits for its outcome
    service.step(records, {("prediction", 0), ("outcome", 0)}, set())
    assert service.join.n_pending == 1
    assert service.revoke({0}) == records
    assert _positions(outbox.sends[-1]) and service.join.n_pending == 0
    assert service.join.n_handed_over["prediction"] == 1
