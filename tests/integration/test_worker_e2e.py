"""End to end on a real Apache Kafka: the worker as a subprocess, events through the app client."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from pydantic import TypeAdapter

from schemas.events import Alert, RetrainTrigger
from streams.client import PredictionLogger
from streams.scenarios import SpeechScenario
from tests.integration.harness import read_topic, running_worker
from tests.speech_monitors import SPEECH_MONITORS

pytestmark = pytest.mark.integration

CONFIG = SPEECH_MONITORS
ALERTS = TypeAdapter(Alert)
TRIGGERS = TypeAdapter(RetrainTrigger)


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
        sent = _produce_scenario(worker, scenario)
        worker.wait_for(lambda m: _sum(m, "driftline_events_processed_total") >= sent
                        and _sum(m, "driftline_join_held") == 0, 120, "all events processed")
        alerts = [ALERTS.validate_json(m.value()) for m in read_topic(kafka_bootstrap, worker.topics.alerts, 2)]
        triggers = [TRIGGERS.validate_json(m.value()) for m in read_topic(kafka_bootstrap, worker.topics.retrain, 1)]

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


def _sum(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, x) in ls for k, x in labels.items()))


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


def test_garbage_is_dead_lettered_with_reasons_and_alerts_are_unchanged(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Valid events alone and valid events mixed with garbage give the same alerts; every event is accounted for."""
    scenario = SpeechScenario(n_events=5000, change_at=2500, seed=5)
    max_bytes = 4096
    settings = {"partitions": "1", "max_event_bytes": str(max_bytes), "join_ttl_seconds": "300"}
    bad = _bad_values(scenario, max_bytes)
    with running_worker(kafka_bootstrap, tmp_path, CONFIG, **settings) as clean, \
            running_worker(kafka_bootstrap, tmp_path, CONFIG, **settings) as mixed:
        _produce_scenario(clean, scenario)

        logger = PredictionLogger(mixed.settings.confluent_config(), mixed.topics)
        raw = Producer({**mixed.settings.confluent_config(), "partitioner": "murmur2_random"})
        topic_of = {"prediction": mixed.topics.predictions, "outcome": mixed.topics.outcomes}
        n_duplicates = n_orphans = 0
        for i, (prediction, outcome) in enumerate(scenario.events()):
            logger.log_prediction(prediction)
            logger.log_outcome(outcome)
            if i % 500 == 250:
                side, key, value, _ = bad[(i // 500) % len(bad)]
                raw.produce(topic_of[side], key=key, value=value)
            if i % 1000 == 100:
                logger.log_prediction(prediction)  # a redelivery
                n_duplicates += 1
            if i < 3000 and i % 1000 == 10:
                # Orphans early in event time, so that the stream's own progress expires them.
                orphan = prediction.model_copy(update={"prediction_id": f"orphan-p-{i}"})
                logger.log_prediction(orphan)
                lonely = outcome.model_copy(update={"prediction_id": f"orphan-o-{i}"})
                logger.log_outcome(lonely)
                n_orphans += 2
        for side, key, value, _ in bad:
            raw.produce(topic_of[side], key=key, value=value)
        raw.flush(30)
        assert logger.flush(30) == 0
        n_bad = sum(1 for i in range(scenario.n_events) if i % 500 == 250) + len(bad)
        n_total = 2 * scenario.n_events + n_duplicates + n_orphans + n_bad

        clean.wait_for(lambda m: _sum(m, "driftline_events_processed_total") >= 2 * scenario.n_events
                       and _sum(m, "driftline_join_held") == 0, 120, "clean run")
        samples = mixed.wait_for(
            lambda m: _sum(m, "driftline_events_read_total") >= n_total and _sum(m, "driftline_join_pending") == 0
            and _sum(m, "driftline_join_held") == 0,
            120, "mixed run read everything and nothing is pending",
        )
        clean_alerts = [ALERTS.validate_json(m.value()) for m in read_topic(kafka_bootstrap, clean.topics.alerts, 2)]
        mixed_alerts = [ALERTS.validate_json(m.value()) for m in read_topic(kafka_bootstrap, mixed.topics.alerts, 2)]
        dead = read_topic(kafka_bootstrap, mixed.topics.deadletter, n_bad + n_duplicates)
        expired = read_topic(kafka_bootstrap, mixed.topics.expired, n_orphans)

    assert clean_alerts, "the clean run must alert, or the comparison proves nothing"
    assert [a.alert_id for a in mixed_alerts] == [a.alert_id for a in clean_alerts]

    assert len(dead) == n_bad + n_duplicates
    kinds = []
    for message in dead:
        headers = {k: v.decode() for k, v in message.headers()}
        assert headers["driftline_reason"], headers
        assert headers["driftline_source_topic"] in (mixed.topics.predictions, mixed.topics.outcomes)
        assert int(headers["driftline_source_offset"]) >= 0
        kinds.append(headers["driftline_reason_kind"])
    expected_kinds = [kind for i in range(scenario.n_events) if i % 500 == 250 for kind in [bad[(i // 500) % len(bad)][3]]]
    expected_kinds += [b[3] for b in bad] + ["duplicate"] * n_duplicates
    assert sorted(kinds) == sorted(expected_kinds)
    assert len(expired) == n_orphans

    for side in ("prediction", "outcome"):
        read = _sum(samples, "driftline_events_read_total", source=side)
        processed = _sum(samples, "driftline_events_processed_total", source=side)
        dead_lettered = _sum(samples, "driftline_events_dead_lettered_total", source=side)
        n_expired = _sum(samples, "driftline_events_expired_total", source=side)
        assert read > 0 and processed == scenario.n_events, {k: v for k, v in samples.items() if "driftline_e" in k[0] or "join" in k[0]}
        assert read == processed + dead_lettered + n_expired, (side, read, processed, dead_lettered, n_expired)
