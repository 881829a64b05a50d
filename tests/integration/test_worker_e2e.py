"""End to end on a real Apache Kafka: the worker as a subprocess, events through the app client."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from pydantic import TypeAdapter

from schemas.events import Alert, OutcomeEvent, PredictionEvent, RetrainTrigger
from streams.client import AlertSubscriber, PredictionLogger
from streams.processes import metric_value
from streams.scenarios import SpeechScenario
from tests.integration.harness import alert_facts, read_to_end, read_to_end_when, running_worker
from tests.speech_monitors import SPEECH_MONITORS

pytestmark = pytest.mark.integration

CONFIG = SPEECH_MONITORS
ALERTS = TypeAdapter(Alert)
TRIGGERS = TypeAdapter(RetrainTrigger)


def _subscribed(worker, n_alerts: int) -> list[Alert]:  # type: ignore[no-untyped-def]
    """The first ``n_alerts`` alerts an :class:`AlertSubscriber` of a new group yields from the beginning."""
    subscriber = AlertSubscriber(worker.settings.confluent_config(), f"driftline-subscriber-{worker.web_port}",
                                 worker.topics, from_beginning=True)
    try:
        out: list[Alert] = []
        deadline = time.monotonic() + 30
        while len(out) < n_alerts and time.monotonic() < deadline:
            alert = subscriber.poll(0.5)
            if alert is not None:
                out.append(alert)
        return out
    finally:
        subscriber.close()


def _cloudevents(message) -> tuple[str, str, str, str, datetime, str]:  # type: ignore[no-untyped-def]
    """A message's CloudEvents attributes, each header present exactly once."""
    names = [k for k, _ in message.headers()]
    assert sorted(names) == sorted(set(names)), names
    h = {k: v.decode() for k, v in message.headers()}
    return (h["ce_specversion"], h["ce_id"], h["ce_type"], h["ce_source"], datetime.fromisoformat(h["ce_time"]),
            h["content-type"])


def _produce_scenario(worker, scenario: SpeechScenario) -> int:  # type: ignore[no-untyped-def]
    logger = PredictionLogger(worker.settings.confluent_config(), worker.topics)
    for prediction, outcome in scenario.events():
        logger.log_prediction(prediction)
        logger.log_outcome(outcome)
    assert logger.flush(30) == 0
    assert logger.stats.n_delivered == 2 * scenario.n_events
    return logger.stats.n_delivered


def test_speech_decay_alerts_and_triggers_only_after_the_change(kafka_bootstrap: str, tmp_path: Path) -> None:
    scenario = SpeechScenario(n_events=8000, change_at=4000, seed=11)
    change_time = scenario.start + timedelta(seconds=scenario.change_at * scenario.seconds_apart)
    with running_worker(kafka_bootstrap, tmp_path, CONFIG, partitions="2") as worker:
        # Batches are handed over only for the monitor-input partitions the monitor stage holds.  Once, in a
        # clean-clone run, none was: the events had been produced at once, and (most likely) read and written
        # before the monitor stage had its partitions, so every batch was decoded from its bytes.
        worker.wait_assigned()
        sent = _produce_scenario(worker, scenario)
        samples = worker.wait_scored(scenario.n_events)
        assert metric_value(samples, "driftline_events_processed_total") == sent
        # One process: its monitor stage took the items its ingest stage wrote, and read the watermarks apart
        # from them.
        assert metric_value(samples, "driftline_monitor_input_batches_total", how="handed") > 0
        assert metric_value(samples, "driftline_monitor_input_batches_total", how="watermark") > 0
        alert_messages = read_to_end_when(kafka_bootstrap, worker.topics.alerts,
                                          lambda ms: len(ms) >= metric_value(samples, "driftline_alerts_total"))
        trigger_messages = read_to_end_when(kafka_bootstrap, worker.topics.retrain,
                                            lambda ms: len(ms) >= metric_value(samples, "driftline_retrain_triggers_total"))
        subscribed = _subscribed(worker, len(alert_messages))
    alerts = [ALERTS.validate_json(m.value()) for m in alert_messages]
    triggers = [TRIGGERS.validate_json(m.value()) for m in trigger_messages]

    # What the README promises subscribers: typed alerts from AlertSubscriber, and CloudEvents attributes in
    # the headers of every alert and trigger, as the worker itself published them.
    assert all(type(a) is Alert for a in subscribed) and subscribed == alerts
    for message, alert in zip(alert_messages, alerts):
        assert _cloudevents(message) == ("1.0", alert.alert_id, f"dev.driftline.alert.{alert.status}",
                                         "urn:driftline:worker", alert.event_time, "application/json")
    for message, trigger in zip(trigger_messages, triggers):
        assert _cloudevents(message) == ("1.0", trigger.trigger_id, "dev.driftline.retrain",
                                         "urn:driftline:worker", trigger.event_time, "application/json")

    fired = [a for a in alerts if a.status == "fired"]
    assert fired, "no alert fired although accuracy fell from 92% to 80%"
    assert all(a.kind == "performance_decay" and a.model == "speech-asr" for a in fired)
    assert [a for a in fired if a.event_time < change_time] == [], "alert before the change: a false alarm"
    assert {a.detector for a in fired} == {"threshold", "bernoulli_glr"}
    # Both must come within 1,000 utterances of the change.
    assert max(a.event_time for a in fired) < change_time + timedelta(seconds=1000)
    assert len(triggers) == 1, "the cooldown allows one trigger per hour of event time"
    trigger = triggers[0]
    assert trigger.event_time >= change_time
    assert set(trigger.alert_ids) <= {a.alert_id for a in fired}
    # The change-start estimate should land near the real change, not at the start of the stream.
    assert change_time - timedelta(seconds=500) <= trigger.data_from <= trigger.event_time


def _bad_values(scenario: SpeechScenario, max_bytes: int) -> list[tuple[str, bytes, bytes, str]]:
    """(side, key, value, expected kind) for every kind of bad input."""
    t = scenario.start.isoformat()
    good = f'"prediction_id": "x", "model": "speech-asr", "model_version": "1", "event_time": "{t}"'
    return [
        ("prediction", b"g1", b"\x00\xff binary junk", "not_json"),
        ("prediction", b"g2", b"{truncated", "not_json"),
        ("outcome", b"g3", b"[1, 2, 3]", "schema"),
        ("prediction", b"g4", ('{' + good + ', "prediction": "yes", "surprise": 1}').encode(), "schema"),
        ("prediction", b"g5", b'{"prediction_id": "y", "model": "speech-asr", "model_version": "1",'
                              b' "event_time": "2026-11-01T00:00:00", "prediction": "yes"}', "schema"),
        ("prediction", b"g6", ('{' + good + ', "features": {"snr_db": NaN}, "prediction": "yes"}').encode(), "non_finite"),
        ("outcome", b"g7", f'{{"prediction_id": "z", "event_time": "{t}", "actual": Infinity}}'.encode(), "non_finite"),
        ("prediction", b"g8", b'{"pad": "' + b"x" * max_bytes + b'"}', "oversized"),
    ]


def _late(samples: dict) -> dict[str, float]:  # type: ignore[type-arg]
    return {stage: metric_value(samples, "driftline_events_late_total", stage=stage) for stage in ("ingest", "monitor")}


def test_garbage_is_dead_lettered_with_reasons_and_alerts_are_unchanged(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Valid events alone and valid events mixed with garbage give the same alerts; every event is accounted for.

    The mixed run's events all go through one producer whose delivery reports say where each landed, so every
    dead letter is matched to the bytes, partition and offset it came from, and every expiry to its orphan.
    """
    scenario = SpeechScenario(n_events=5000, change_at=2500, seed=5)
    max_bytes = 4096
    settings = {"partitions": "1", "max_event_bytes": str(max_bytes), "join_ttl_seconds": "300"}
    bad = _bad_values(scenario, max_bytes)
    with running_worker(kafka_bootstrap, tmp_path, CONFIG, **settings) as clean, \
            running_worker(kafka_bootstrap, tmp_path, CONFIG, **settings) as mixed:
        _produce_scenario(clean, scenario)

        raw = Producer({**mixed.settings.confluent_config(), "partitioner": "murmur2_random"})
        topic_of = {"prediction": mixed.topics.predictions, "outcome": mixed.topics.outcomes}
        landed: list[tuple[str, int, int, bytes, bytes]] = []  # (topic, partition, offset, key, value)
        bad_kind: dict[tuple[str, bytes, bytes], str] = {}  # the same bad value may be sent more than once
        n_bad = 0
        orphans: list[tuple[str, str]] = []

        def send(side: str, key: bytes, value: bytes) -> None:
            raw.produce(topic_of[side], key=key, value=value, on_delivery=lambda err, m: landed.append(
                (m.topic(), m.partition(), m.offset(), m.key(), m.value())) if err is None else None)

        def send_event(event: PredictionEvent | OutcomeEvent) -> None:
            send("prediction" if isinstance(event, PredictionEvent) else "outcome", event.prediction_id.encode(),
                 event.model_dump_json().encode())

        def send_bad(side: str, key: bytes, value: bytes, kind: str) -> None:
            nonlocal n_bad
            bad_kind[(topic_of[side], key, value)] = kind
            n_bad += 1
            send(side, key, value)

        redelivered = set()
        for i, (prediction, outcome) in enumerate(scenario.events()):
            send_event(prediction)
            send_event(outcome)
            if i % 500 == 250:
                send_bad(*bad[(i // 500) % len(bad)])
            if i % 1000 == 100:
                send_event(prediction)  # a redelivery
                redelivered.add(prediction.prediction_id.encode())
            if i < 3000 and i % 1000 == 10:
                # Orphans early in event time, so that the stream's own progress expires them.
                send_event(prediction.model_copy(update={"prediction_id": f"orphan-p-{i}"}))
                send_event(outcome.model_copy(update={"prediction_id": f"orphan-o-{i}"}))
                orphans += [("prediction", f"orphan-p-{i}"), ("outcome", f"orphan-o-{i}")]
        for each in bad:
            send_bad(*each)
        assert raw.flush(30) == 0
        n_total = len(landed)

        clean_samples = clean.wait_scored(scenario.n_events)
        samples = mixed.wait_scored(scenario.n_events)
        samples = mixed.wait_for(lambda m: metric_value(m, "driftline_events_read_total") == n_total, 60,
                                 "the mixed run read everything")
        n_dead = n_bad + len(redelivered)
        clean_alerts = [ALERTS.validate_json(m.value()) for m in read_to_end(kafka_bootstrap, clean.topics.alerts)]
        mixed_alerts = [ALERTS.validate_json(m.value()) for m in read_to_end(kafka_bootstrap, mixed.topics.alerts)]
        dead = read_to_end_when(kafka_bootstrap, mixed.topics.deadletter, lambda ms: len(ms) >= n_dead)
        expired = read_to_end_when(kafka_bootstrap, mixed.topics.expired, lambda ms: len(ms) >= len(orphans))

    assert clean_alerts, "the clean run must alert, or the comparison proves nothing"
    assert alert_facts(mixed_alerts) == alert_facts(clean_alerts)
    assert _late(clean_samples) == _late(samples) == {"ingest": 0, "monitor": 0}

    # Each dead letter is a value sent, unchanged, under its key, naming the partition and offset it came from.
    expected_dead = set()
    first_seen = set()
    for topic, partition, offset, key, value in sorted(landed, key=lambda r: (r[0], r[1], r[2])):
        if (topic, key, value) in bad_kind:
            expected_dead.add((topic, partition, offset, key, value, bad_kind[(topic, key, value)]))
        elif key in redelivered and topic == mixed.topics.predictions:
            # The copy that came second on the partition is the duplicate.
            if key in first_seen:
                expected_dead.add((topic, partition, offset, key, value, "duplicate"))
            first_seen.add(key)
    got_dead = []
    for message in dead:
        headers = {k: v.decode() for k, v in message.headers()}
        assert headers["driftline_reason"] and headers["driftline_stage"] == "ingest", headers
        got_dead.append((headers["driftline_source_topic"], int(headers["driftline_source_partition"]),
                         int(headers["driftline_source_offset"]), message.key(), message.value(),
                         headers["driftline_reason_kind"]))
    assert len(got_dead) == len(expected_dead) == n_dead and set(got_dead) == expected_dead, (
        sorted(set(got_dead) ^ expected_dead)[:5])

    # The expired events are exactly the orphans, each once, with where they were read.
    where = {(key.decode(), topic): (partition, offset) for topic, partition, offset, key, _ in landed}
    records = [json.loads(m.value()) for m in expired]
    assert sorted((r["side"], r["prediction_id"]) for r in records) == sorted(orphans)
    for r in records:
        assert (r["source_partition"], r["source_offset"]) == where[(r["prediction_id"], topic_of[r["side"]])], r
        assert r["source_topic"] == topic_of[r["side"]], r

    for side in ("prediction", "outcome"):
        read = metric_value(samples, "driftline_events_read_total", source=side)
        processed = metric_value(samples, "driftline_events_processed_total", source=side)
        dead_lettered = metric_value(samples, "driftline_events_dead_lettered_total", source=side)
        n_expired = metric_value(samples, "driftline_events_expired_total", source=side)
        assert read > 0 and processed == scenario.n_events, {k: v for k, v in samples.items() if "driftline_e" in k[0] or "join" in k[0]}
        assert read == processed + dead_lettered + n_expired, (side, read, processed, dead_lettered, n_expired)
