"""kill -9 mid-drift on the real broker: the restarted worker resumes warm, alerts once, loses nothing.

Before the kill, the last ``WAITING`` predictions have no outcome yet: they wait in the join, their source
offsets committed, so only the join's changelog can bring them back for the outcomes sent after the restart.
"""


from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from detectors.monitors.monitor_set import MonitorSet
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.events import Alert, LabelledExample
from streams.client import PredictionLogger
from streams.processes import free_port, start_worker, stop_worker
from streams.scenarios import SpeechScenario
from streams.topics import ensure_topics
from tests.integration.harness import Worker, read_topic, settings_of, worker_env
from tests.speech_monitors import SPEECH_MONITORS

pytestmark = pytest.mark.integration

CONFIG = SPEECH_MONITORS
ALERTS = TypeAdapter(Alert)
N_EVENTS, CHANGE_AT, KILL_AT = 5000, 3000, 3100  # the detector alarms about 150 events after the change
WAITING = 200


def _sum(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, x) in ls for k, x in labels.items()))


def _checkpoint(port: int) -> dict:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/checkpoint", timeout=2) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except OSError:
        return {}


def _wait(condition, timeout: float, what: str, log_path: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; worker log tail:\n{log_path.read_text(errors='replace')[-3000:]}")


def test_kill_9_mid_drift_resumes_warm_without_duplicates(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:10]
    config_path = tmp_path / "monitors.yaml"
    config_path.write_text(CONFIG)
    # The killed member must leave the group quickly (session timeout 6 s) for the restarted one to get its partitions.
    env = worker_env(kafka_bootstrap, run, config_path, app="driftline-kill", data_dir=str(tmp_path / "worker"),
                     partitions="1", checkpoint_seconds="2", broker_session_timeout="6", broker_request_timeout="6")
    settings = settings_of(env)
    ensure_topics(settings)
    scenario = SpeechScenario(n_events=N_EVENTS, change_at=CHANGE_AT, seed=11)
    pairs = list(scenario.events())
    change_time = scenario.start + timedelta(seconds=CHANGE_AT * scenario.seconds_apart)

    # What an uninterrupted monitor says about the same stream, in event-time order.
    straight = MonitorSet(MonitorConfig.model_validate(yaml.safe_load(CONFIG)), build_detector)
    examples = sorted((LabelledExample(prediction=p, outcome=o) for p, o in pairs),
                      key=lambda e: e.completed_at)
    expected = straight.observe(examples).alerts
    assert expected and all(a.event_time > change_time for a in expected)
    assert all(a.event_time > scenario.start + timedelta(seconds=KILL_AT) for a in expected), "kill before any alarm"

    logger = PredictionLogger(settings.confluent_config(), settings.topics)

    def produce(predictions: list, outcomes: list) -> None:  # type: ignore[type-arg]
        for prediction in predictions:
            logger.log_prediction(prediction)
        for outcome in outcomes:
            logger.log_outcome(outcome)
        assert logger.flush(30) == 0

    first_port, first_log = free_port(), tmp_path / "worker-1.log"
    first = start_worker({**env, "DRIFTLINE_WEB_PORT": str(first_port)}, first_log)
    try:
        w1 = Worker(settings, first_port, first_log)
        produce([p for p, _ in pairs[:KILL_AT]], [o for _, o in pairs[:KILL_AT - WAITING]])
        w1.wait_for(lambda m: _sum(m, "driftline_events_processed_total", source="prediction") >= KILL_AT - WAITING
                    and _sum(m, "driftline_join_pending") == WAITING, 60, "the first part processed")
        _wait(lambda: _checkpoint(first_port).get("written_seen", {}).get("speech-asr") == KILL_AT - WAITING, 20,
              "a checkpoint covering the first part", first_log)
        before_kill = w1.metrics()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert _sum(before_kill, "driftline_alerts_total") == 0, "no alert before the kill: the drift is only half-way"

    second_port, second_log = free_port(), tmp_path / "worker-2.log"
    second = start_worker({**env, "DRIFTLINE_WEB_PORT": str(second_port)}, second_log)
    try:
        w2 = Worker(settings, second_port, second_log)
        produce([p for p, _ in pairs[KILL_AT:]], [o for _, o in pairs[KILL_AT - WAITING:]])
        _wait(lambda: _checkpoint(second_port).get("n_restored") == 1, 60, "the state restored", second_log)
        restored_after = time.monotonic() - killed_at
        samples = w2.wait_for(
            lambda m: _sum(m, "driftline_events_processed_total", source="prediction") >= N_EVENTS - KILL_AT
            and _sum(m, "driftline_join_pending") == 0 and _sum(m, "driftline_join_held") == 0,
            60, "the rest processed")
        _wait(lambda: _checkpoint(second_port).get("n_seen", {}).get("speech-asr") == N_EVENTS, 30,
              "every example in the monitor", second_log)
        state = _checkpoint(second_port)
        alerts = [ALERTS.validate_json(m.value()) for m in read_topic(kafka_bootstrap, settings.topics.alerts, len(expected))]
    finally:
        stop_worker(second)
    print(f"kill -9 to state restored: {restored_after:.1f} s; checkpoint state {state}")

    # Warm: exactly the alerts an uninterrupted monitor gives (a cold one would need a new 500-example window).
    assert [a.alert_id for a in alerts] == [a.alert_id for a in expected]
    assert all(a.event_time >= change_time for a in alerts)
    assert max(Counter((a.status, a.episode_id) for a in alerts).values()) == 1
    # Every example counted once: the state plus what the restarted worker admitted, nothing twice.
    assert state["n_seen"]["speech-asr"] == N_EVENTS
    for side in ("prediction", "outcome"):
        processed = _sum(before_kill, "driftline_events_processed_total", source=side) + \
            _sum(samples, "driftline_events_processed_total", source=side)
        # The ingest stage may re-publish a batch it had not finished logging; the monitor drops those duplicates.
        assert processed - state["n_duplicates"] == N_EVENTS, (side, processed, state)
        # The predictions waiting at the kill came back from the join's changelog, and met their outcomes.
        restored = _sum(samples, "driftline_join_restored_total", source=side)
        assert restored == (WAITING if side == "prediction" else 0), (side, restored)
        assert _sum(before_kill, "driftline_events_expired_total") + _sum(samples, "driftline_events_expired_total") == 0
        # Everything read or restored by the second worker is accounted for; records it read again that the
        # changelog shows were handled before the kill (offsets not yet committed) are skipped, and counted.
        read = _sum(samples, "driftline_events_read_total", source=side)
        assert read + restored == _sum(samples, "driftline_events_processed_total", source=side) + \
            _sum(samples, "driftline_events_dead_lettered_total", source=side) + \
            _sum(samples, "driftline_events_expired_total", source=side) + \
            _sum(samples, "driftline_events_replayed_total", source=side)
        print(f"{side}: read {read:.0f} (replayed and skipped "
              f"{_sum(samples, 'driftline_events_replayed_total', source=side):.0f}), restored {restored:.0f}")
