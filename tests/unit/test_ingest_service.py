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
    """Keeps each dispatch's messages, in order, as (topic, key, value), and how many dispatches are acknowledged."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, bytes | None, bytes | None]] = []
        self.dispatches: list[list[tuple[str, bytes | None, bytes | None]]] = []
        #: Per dispatch, how many earlier dispatches were acknowledged when it went out.
        self.acknowledged_before: list[int] = []
        self.n_acknowledged = 0

    def add(self, topic: str, key: bytes | None, value: bytes | None, headers: object = None,
            partition: int | None = None) -> None:
        self.pending.append((topic, key, value))

    def add_decoded(self, topic: str, value: bytes, partition: int, batch: object, n_items: int) -> None:
        self.add(topic, None, value, partition=partition)

    def dispatch(self, first: list[tuple[str, bytes | None, bytes | None, int | None, object]] = ()) -> None:  # type: ignore[assignment]
        self.acknowledged_before.append(self.n_acknowledged)
        self.dispatches.append([(topic, key, value) for topic, key, value, _, _ in first] + self.pending)
        self.pending = []

    def wait(self) -> None:
        self.n_acknowledged = len(self.dispatches)


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


def test_records_are_committed_once_their_position_is_acknowledged_after_their_outputs() -> None:
    outbox = RecordingOutbox()
    service = IngestService(SETTINGS, CONFIG, WorkerMetrics(), outbox)  # type: ignore[arg-type]
    steps = [_pair(i, offset=i) for i in range(3)]
    sources = {("prediction", 0), ("outcome", 0)}

    assert service.step(steps[0], sources, set()) == []
    # Step 0's output goes out with no position: that waits for the output's acknowledgement.
    assert _labelled(outbox.dispatches[0]) == ["p0"] and _positions(outbox.dispatches[0]) == []

    assert service.step(steps[1], sources, set()) == []
    # Step 1 waited for step 0's dispatch, then sent step 0's position ahead of its own output.
    assert outbox.acknowledged_before[1] == 1
    second = outbox.dispatches[1]
    assert len(_positions(second)) == 1 and _labelled(second) == ["p1"]
    assert [key for _, key, _ in second].index(POSITION_KEY) < [t for t, _, _ in second].index(SETTINGS.topics.labelled)

    # Step 2's wait acknowledges step 0's position: step 0's records may be committed, not step 1's.
    assert service.step(steps[2], sources, set()) == steps[0]
    assert service.finish() == steps[1] + steps[2]
    assert len(_positions(outbox.dispatches[-1])) == 1 and service.finish() == []


def test_a_revocation_hands_back_the_last_step_for_commit_before_forgetting() -> None:
    outbox = RecordingOutbox()
    service = IngestService(SETTINGS, CONFIG, WorkerMetrics(), outbox)  # type: ignore[arg-type]
    records = _pair(1, offset=0)[:1]  # a prediction that waits for its outcome
    service.step(records, {("prediction", 0), ("outcome", 0)}, set())
    assert service.join.n_pending == 1
    assert service.revoke({0}) == records
    assert _positions(outbox.dispatches[-1]) and service.join.n_pending == 0
    assert service.join.n_handed_over["prediction"] == 1


def test_records_read_again_after_a_rebalance_in_the_same_process_are_replayed_not_duplicates(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 16: partitions lost and assigned back to the same worker (a broker restart) are read again from
    the committed offset; what the changelog's position shows was handled is counted as replayed, and only a
    prediction the producer really sent twice (at another offset) is dead-lettered."""
    outbox = RecordingOutbox()
    metrics = WorkerMetrics()
    service = IngestService(SETTINGS, CONFIG, metrics, outbox)  # type: ignore[arg-type]
    sources = {("prediction", 0), ("outcome", 0)}
    handled = [record for i in range(3) for record in _pair(i, offset=i)]
    waiting = _pair(3, offset=3)[:1]  # its outcome comes after the rebalance
    service.step(handled + waiting, sources, set())
    service.revoke({0})  # on_lost: nothing committed, so everything above is read again

    changelog = [(key, value) for dispatch in outbox.dispatches for topic, key, value in dispatch
                 if topic == SETTINGS.join_state_topic]
    monkeypatch.setattr("streams.worker.ingest.read_partition", lambda *_args, **_kw: changelog)
    service.assign({0})
    again = handled + waiting + _pair(3, offset=4)[1:]
    twice = RawRecord("prediction", handled[0].value, SourceRef(SETTINGS.topics.predictions, 0, 5, None), 0)
    service.step([*again, twice], sources, set())
    service.finish()

    dead = [value for dispatch in outbox.dispatches for topic, _key, value in dispatch
            if topic == SETTINGS.topics.deadletter]
    assert dead == [twice.value]  # only the real duplicate: the ids joined before the rebalance still count
    assert service.join.n_dead_lettered == {"prediction": 1}
    replayed = {side: metrics.registry.get_sample_value("driftline_events_replayed_total", {"source": side})
                for side in ("prediction", "outcome")}
    assert replayed == {"prediction": 4, "outcome": 3}
    assert "p3" in _labelled(outbox.dispatches[-1]) + _labelled(outbox.dispatches[-2])


def _announced_settled(outbox: RecordingOutbox) -> list[list[str]]:
    """What each watermark message sent so far said was settled."""
    return [batch.settled for dispatch in outbox.dispatches for topic, _, value in dispatch
            if topic == SETTINGS.topics.monitor_input
            for batch in [MonitorBatch.model_validate_json(value or b"")] if batch.watermarks]


def test_sources_read_to_their_end_and_quiet_are_announced_settled_until_traffic_comes_back(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]
    monkeypatch.setattr("streams.worker.ingest.time.time", lambda: now[0])
    outbox = RecordingOutbox()
    service = IngestService(SETTINGS, CONFIG, WorkerMetrics(), outbox)  # type: ignore[arg-type]
    sources = {("prediction", 0), ("outcome", 0)}
    service.step(_pair(0, offset=0), sources, set())
    now[0] += 1.0  # past order_settle_seconds, but the consumer has not read to the end
    service.tick(sources, set(), caught_up=False)
    assert _announced_settled(outbox) and not any(_announced_settled(outbox))
    service.tick(sources, set(), caught_up=True)
    assert _announced_settled(outbox)[-1] == ["outcome/0", "prediction/0"]
    now[0] += 0.2
    service.tick(sources, set(), caught_up=True)  # still settled: every announcement says so
    assert _announced_settled(outbox)[-1] == ["outcome/0", "prediction/0"]
    service.step(_pair(1, offset=1), sources, set())
    service.finish()
    assert _announced_settled(outbox)[-1] == []
