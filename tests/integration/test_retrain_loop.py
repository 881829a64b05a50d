"""The closed loop on a real Apache Kafka: decay, alert, trigger, challenger, promotion, hot swap, recovery.

The worker and the retrainer run as subprocesses; the test plays the app: it
predicts each utterance with a :class:`~streams.serving.ModelServer` and logs
predictions and outcomes with the app client.  The rejection and restart tests
play the worker's part instead, writing labelled examples (in batches, as the
worker's ingest does) and a trigger to the retrainer's input topics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer
from pydantic import TypeAdapter

from retrainer.config import open_registry, open_store, retrainer_config
from schemas.config import parse_monitor_config
from schemas.events import Alert, LabelledExample, ModelVersion, RetrainTrigger
from streams.client import PredictionLogger
from streams.demo import register_shipped_model
from streams.processes import free_port, metric_sum, scrape_metrics, start_python, stop_worker
from streams.scenarios import LearnableSpeechScenario
from streams.serving import ModelServer
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics, partition_ends
from streams.worker.messages import monitor_batches
from tests.integration.harness import (kafka_environment, play_the_app, read_to_end_when, running_worker,
                                       start_retrainer, stop_cleanly)

pytestmark = pytest.mark.integration

MONITORS = """\
models:
  speech-asr:
    task: classification
    performance: {metric: accuracy, window: 500, threshold: 0.85, hysteresis: 0.02}
    # A 500-example warm-up (not the default 2000) so the detector is armed before the change at 1200:
    # a threshold-first alert would ask for data from a whole window before the change.
    detector: {name: bernoulli_glr, params: {false_alarm_horizon: 100000, warmup: 500}}
    retrain: {cooldown_seconds: 3600}
learners:
  speech-asr: {kind: logistic_regression, holdout_size: 200, min_training_examples: 500, promotion_margin: 0.02}
"""
VERSIONS = TypeAdapter(ModelVersion)
ALERTS = TypeAdapter(Alert)
TRIGGERS = TypeAdapter(RetrainTrigger)
MODEL = "speech-asr"
# Labelled examples per ingest step of the played worker: one batch on the labelled topic each.
STEP = 50


@dataclass
class RetrainerProc:
    settings: Settings
    web_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(scrape_metrics(self.web_port), name, **labels)

    def wait_for(self, what: str, condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; retrainer log tail:\n"
                             f"{self.log_path.read_text(errors='replace')[-3000:]}")

    def wait_read_to_end(self, timeout: float = 30.0) -> None:
        """Wait until it has handled every message now on the labelled topic: its counts are then final."""
        ends = partition_ends(self.settings, self.settings.topics.labelled)
        self.wait_for(f"the labelled topic handled to its end offsets {ends}",
                      lambda: all(self.metric("driftline_retrainer_position", topic="labelled", partition=str(p)) >= end
                                  for p, end in ends.items() if end > 0), timeout)


@contextmanager
def running_retrainer(settings: Settings, config_path: Path, data_dir: Path, log_path: Path,
                      group: str | None = None, replay_examples: int | None = None,
                      extra_env: dict[str, str] | None = None, python_code: str | None = None,
                      killed_by_the_test: bool = False) -> Iterator[RetrainerProc]:
    """``driftline retrainer`` as a subprocess (or ``python -c python_code``, which must run it) on ``settings``' topics.

    On leaving, it must exit 0 on SIGTERM; ``killed_by_the_test``: it was meant to die (kill -9) and the test
    checks how, so it is only reaped.
    """
    web_port = free_port()
    env = {
        **kafka_environment(settings),
        "DRIFTLINE_TOPIC_PREFIX": settings.topic_prefix,
        "DRIFTLINE_APP_ID": settings.app_id,
        "DRIFTLINE_PARTITIONS": str(settings.partitions),
        "DRIFTLINE_MONITOR_CONFIG": str(config_path),
        "DRIFTLINE_RETRAINER_DATA_DIR": str(data_dir),
        "DRIFTLINE_RETRAINER_WEB_PORT": str(web_port),
        "DRIFTLINE_RETRAINER_POLL_SECONDS": "0.2",
        "DRIFTLINE_LOG_LEVEL": "INFO",
        **({"DRIFTLINE_RETRAINER_GROUP_ID": group} if group else {}),
        **({"DRIFTLINE_RETRAINER_REPLAY_EXAMPLES": str(replay_examples)} if replay_examples is not None else {}),
        **(extra_env or {}),
    }
    proc = start_retrainer(env, log_path) if python_code is None else start_python(python_code, env, log_path)
    retrainer = RetrainerProc(settings.model_copy(update={"retrainer_data_dir": data_dir}), web_port, log_path, proc)
    try:
        retrainer.wait_for("the retrainer's metrics endpoint", lambda: bool(scrape_metrics(web_port)) or proc.poll() is not None, 30)
        assert proc.poll() is None, f"retrainer exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}"
        yield retrainer
    except BaseException:
        stop_worker(proc)
        raise
    if killed_by_the_test:
        stop_worker(proc)
    else:
        stop_cleanly(proc, log_path)


def _versions(bootstrap: str, settings: Settings, expected: int, timeout: float = 10.0) -> list[tuple[bytes, ModelVersion]]:
    """The models topic's records (at least ``expected``), each checked for the CloudEvents attributes the retrainer publishes with it."""
    out = []
    # Read to the end once a decision is seen: its records were flushed before it was counted, so all are there.
    for message in read_to_end_when(bootstrap, settings.topics.models, lambda ms: len(ms) >= expected, timeout):
        record = VERSIONS.validate_json(message.value())
        headers = {k: v.decode() for k, v in message.headers()}
        assert len(headers) == len(message.headers()), message.headers()
        assert headers == {"ce_specversion": "1.0", "ce_type": f"dev.driftline.model_version.{record.status}",
                           "ce_id": f"{record.model}@{record.version}:{record.status}:{record.created_at.isoformat()}",
                           "ce_source": "urn:driftline:retrainer", "ce_time": record.created_at.isoformat(),
                           "content-type": "application/json"}, headers
        out.append((message.key(), record))
    return out


def test_decayed_stream_leads_to_a_promoted_version_and_recovered_live_accuracy(kafka_bootstrap: str, tmp_path: Path) -> None:
    scenario = LearnableSpeechScenario(n_events=3600, change_at=1200, seed=5)
    change_time = scenario.start + timedelta(seconds=scenario.change_at)
    data_dir = tmp_path / "retrainer"
    spec = retrainer_config(parse_monitor_config(MONITORS)).learners[MODEL]
    shipped = register_shipped_model(data_dir, scenario, spec)
    with running_worker(kafka_bootstrap, tmp_path, MONITORS, partitions="2") as worker, \
            running_retrainer(worker.settings, worker.settings.monitor_config, data_dir, tmp_path / "retrainer.log") as retrainer:
        server = ModelServer(MODEL, open_store(data_dir), worker.settings.confluent_config(), worker.topics).start()
        # The retrainer announces the registered version on start; the app serves it from the topic.
        assert server.wait_for_version(lambda r: r.version == shipped.version, 30) == shipped
        logger = PredictionLogger(worker.settings.confluent_config(), worker.topics)
        # A live app: 300 utterances a second, so the loop can close while it runs.
        served = play_the_app(scenario, server, logger)
        assert logger.flush(30) == 0
        worker.wait_scored(scenario.n_events, 60)
        retrainer.wait_for("a promotion", lambda: retrainer.metric("driftline_challengers_total", outcome="promoted") >= 1, 30)
        assert retrainer.metric("driftline_model_version_info", model=MODEL, version="2") == 1
        server.stop()
        # Every example is scored: the topics are read to their end offsets once the last sends have landed.
        triggers = [TRIGGERS.validate_json(m.value()) for m in
                    read_to_end_when(kafka_bootstrap, worker.topics.retrain, lambda ms: len(ms) >= 1, 10)]
        alerts = [ALERTS.validate_json(m.value()) for m in
                  read_to_end_when(kafka_bootstrap, worker.topics.alerts, _every_fired_alert_resolved, 20)]
        versions = _versions(kafka_bootstrap, worker.settings, 5)

    assert len(triggers) == 1
    trigger = triggers[0]
    promoted = [v for k, v in versions if v.status == "promoted" and k == MODEL.encode()]
    assert [v.version for v in promoted] == ["1", "2"], "the shipped version, then the challenger"
    v2 = promoted[-1]
    assert v2.trigger_id == trigger.trigger_id and v2.parent_version == "1"
    assert v2.alert_ids == trigger.alert_ids
    assert v2.data_from is not None and v2.data_from >= change_time - timedelta(seconds=50)
    assert v2.metrics["challenger_accuracy"] > v2.metrics["champion_accuracy"] + 0.02
    assert open_registry(data_dir).current(MODEL).version == "2"  # type: ignore[union-attr]

    after_change = [(i, v, ok) for i, v, ok in served if i >= scenario.change_at]
    stale = [ok for i, v, ok in after_change if v != "2"]
    fresh = [ok for i, v, ok in after_change if v == "2"]
    assert len(stale) > 100 and sum(stale) / len(stale) < 0.5, "the stale model decayed"
    assert len(fresh) > 500, f"version 2 served only {len(fresh)} utterances"
    assert sum(fresh) / len(fresh) > 0.87, "live accuracy recovered past threshold + hysteresis"
    first_fresh = min(i for i, v, _ in after_change if v == "2")

    fired = [a for a in alerts if a.status == "fired"]
    resolved = [a for a in alerts if a.status == "resolved"]
    assert fired and all(a.event_time >= change_time for a in fired)
    assert {a.episode_id for a in resolved} == {a.episode_id for a in fired}, "every alert resolved"
    assert all(scenario.utterance_at(a.event_time) > first_fresh for a in resolved)


def _every_fired_alert_resolved(messages: list[Message]) -> bool:
    alerts = [ALERTS.validate_json(m.value()) for m in messages]
    fired = {a.episode_id for a in alerts if a.status == "fired"}
    return bool(fired) and fired == {a.episode_id for a in alerts if a.status == "resolved"}


def _labelled(scenario: LearnableSpeechScenario, relabel: range = range(0)) -> Iterator[LabelledExample]:
    """The worker's output for the scenario with the shipped model; ``relabel`` gets wrong ground truth."""
    for u in scenario.utterances():
        outcome = scenario.outcome(u)
        if u.index in relabel:
            # A labelling outage: every outcome in the window names the next word.
            wrong = scenario.words[(scenario.words.index(u.truth) + 1 + u.index % 3) % len(scenario.words)]
            outcome = outcome.model_copy(update={"actual": wrong})
        yield LabelledExample(prediction=scenario.prediction(u, scenario.factory_predict(u.features), "0"), outcome=outcome)


def _play_worker(settings: Settings, examples: Iterator[LabelledExample], trigger: RetrainTrigger | None,
                 model: str = MODEL) -> int:
    """Write ``examples`` as the worker's ingest does, ``STEP`` a step, then ``trigger``; return how many examples."""
    producer = Producer({**settings.confluent_config(), "partitioner": "murmur2_random"})
    blobs = [example.model_dump_json().encode() for example in examples]
    for i in range(0, len(blobs), STEP):
        for batch in monitor_batches(model, [], blobs[i : i + STEP]):
            producer.produce(settings.topics.labelled, key=model.encode(), value=batch)
        producer.poll(0)
    if trigger is not None:
        producer.produce(settings.topics.retrain, key=model.encode(), value=trigger.model_dump_json().encode())
    assert producer.flush(30) == 0
    return len(blobs)


def _fresh_settings(bootstrap: str, tmp_path: Path) -> tuple[Settings, Path]:
    run = uuid.uuid4().hex[:10]
    config = tmp_path / "monitors.yaml"
    config.write_text(MONITORS)
    settings = load_settings(kafka_bootstrap=bootstrap, topic_prefix=f"r{run}.", app_id=f"retrain-test-{run}",
                             partitions=2, monitor_config=config)
    ensure_topics(settings)
    return settings, config


def test_a_worse_challenger_is_rejected_and_the_champion_stays(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings, config = _fresh_settings(kafka_bootstrap, tmp_path)
    scenario = LearnableSpeechScenario(n_events=1500, change_at=10**9, seed=8)
    bad_from = 800
    trigger = RetrainTrigger(trigger_id="manual-1", model=MODEL, reason="manual", alert_ids=[],
                             data_from=scenario.start + timedelta(seconds=bad_from),
                             event_time=scenario.start + timedelta(seconds=1499))
    data_dir = tmp_path / "retrainer"
    with running_retrainer(settings, config, data_dir, tmp_path / "retrainer.log") as retrainer:
        n = _play_worker(settings, _labelled(scenario, relabel=range(bad_from, 1300)), trigger)
        retrainer.wait_for("all examples", lambda: retrainer.metric("driftline_retrainer_examples_total") >= n, 30)
        retrainer.wait_for("a decision", lambda: retrainer.metric("driftline_challengers_total") >= 1, 15)
        assert retrainer.metric("driftline_challengers_total", outcome="rejected") == 1
        assert retrainer.metric("driftline_challengers_total", outcome="promoted") == 0
        assert retrainer.metric("driftline_model_version_info", model=MODEL, version="1") == 1
        versions = _versions(kafka_bootstrap, settings, 4)

    current = [v for k, v in versions if k == MODEL.encode()]
    assert [(v.version, v.status) for v in current] == [("1", "promoted")], "only the bootstrap is ever current"
    decided = [v for k, v in versions if k == f"{MODEL}@2".encode()]
    assert [v.status for v in decided] == ["candidate", "rejected"]
    rejected = decided[-1]
    assert rejected.trigger_id == "manual-1" and rejected.parent_version == "1" and rejected.n_examples == 500
    assert rejected.metrics["challenger_accuracy"] < rejected.metrics["champion_accuracy"]
    assert rejected.reason.startswith("rejected")
    registry = open_registry(data_dir)
    assert registry.current(MODEL).version == "1"  # type: ignore[union-attr]
    assert registry.is_trigger_handled("manual-1")


def test_restarted_retrainer_keeps_its_champion_and_does_not_rerun_a_handled_trigger(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings, config = _fresh_settings(kafka_bootstrap, tmp_path)
    scenario = LearnableSpeechScenario(n_events=2000, change_at=1000, seed=9)
    trigger = RetrainTrigger(trigger_id="decay-1", model=MODEL, reason="performance_decay", alert_ids=["a-1"],
                             data_from=scenario.start + timedelta(seconds=scenario.change_at),
                             event_time=scenario.start + timedelta(seconds=1050))
    data_dir = tmp_path / "retrainer"
    with running_retrainer(settings, config, data_dir, tmp_path / "first.log") as first:
        n = _play_worker(settings, _labelled(scenario), trigger)
        first.wait_for("a promotion", lambda: first.metric("driftline_challengers_total", outcome="promoted") >= 1, 40)
        assert first.metric("driftline_model_version_info", model=MODEL, version="2") == 1
    before = open_registry(data_dir).history(MODEL)
    assert [(v.version, v.status) for v in before] == [("1", "promoted"), ("2", "candidate"), ("2", "promoted")]

    # A new consumer group reads the trigger and every example again: only the registry stops a re-run.
    with running_retrainer(settings, config, data_dir, tmp_path / "second.log", group=f"{settings.app_id}-other") as second:
        # Judged a duplicate as it is read (the registry has handled it), a trigger is never left waiting for
        # data: once this counter says so, nothing can run it later, however long one waits.
        second.wait_for("the trigger read again and judged handled",
                        lambda: second.metric("driftline_retrain_triggers_duplicate_total", model=MODEL) >= 1, 30)
        second.wait_for("all examples read again", lambda: second.metric("driftline_retrainer_examples_total") >= n, 30)
        assert second.metric("driftline_retrain_triggers_duplicate_total", model=MODEL) == 1
        assert second.metric("driftline_retrain_triggers_received_total") == 1
        assert second.metric("driftline_retrain_triggers_handled_total") == 0
        assert second.metric("driftline_challengers_total") == 0
        assert second.metric("driftline_model_version_info", model=MODEL, version="2") == 1
        assert second.metric("driftline_model_version_info", model=MODEL, version="1") == 0

    assert open_registry(data_dir).history(MODEL) == before, "nothing new registered"
    versions = _versions(kafka_bootstrap, settings, 6)
    assert {v.version for _, v in versions} == {"1", "2"}
    latest_current = [v for k, v in versions if k == MODEL.encode()][-1]
    assert (latest_current.version, latest_current.status) == ("2", "promoted"), "republished on start, still 2"

    # An operator rolls back with the CLI: the registry and the models topic agree on version 1 again.
    env = {**os.environ, "DRIFTLINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "DRIFTLINE_TOPIC_PREFIX": settings.topic_prefix,
           "DRIFTLINE_RETRAINER_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "models", "rollback", MODEL, "--reason", "test"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert open_registry(data_dir).current(MODEL).version == "1"  # type: ignore[union-attr]
    listed = subprocess.run([sys.executable, "-m", "streams.cli", "models", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "* speech-asr    1 promoted" in listed.stdout and "  speech-asr    2 rolled_back" in listed.stdout, listed.stdout
    current = [v for k, v in _versions(kafka_bootstrap, settings, 8) if k == MODEL.encode()]
    assert (current[-1].version, current[-1].status) == ("1", "promoted")


def test_a_restarted_retrainer_replays_the_configured_number_of_examples(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings, config = _fresh_settings(kafka_bootstrap, tmp_path)
    scenario = LearnableSpeechScenario(n_events=1200, change_at=10**9, seed=4)
    data_dir = tmp_path / "retrainer"
    with running_retrainer(settings, config, data_dir, tmp_path / "first.log") as first:
        n = _play_worker(settings, _labelled(scenario), None)
        first.wait_for("all examples", lambda: first.metric("driftline_retrainer_examples_total") >= n, 30)
    assert n // STEP == 24, "24 batches of 50, all on the model's partition; the first retrainer commits them all"

    # The same group again: each labelled partition is rewound by examples, not by messages (whole batches).
    with running_retrainer(settings, config, data_dir, tmp_path / "second.log", replay_examples=680) as second:
        second.wait_read_to_end()  # anything read past the replay would be counted by then
        assert second.metric("driftline_retrainer_examples_total") == 700, "the 14 batches holding the last 680"
        assert second.metric("driftline_retrainer_messages_skipped_total") == 0
