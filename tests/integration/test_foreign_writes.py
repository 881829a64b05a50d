"""A foreign producer writes to the worker's internal topics on the real broker: nothing it wrote is executed.

Between two runs of a worker, it writes a pickle that would create a file when loaded to the monitor-state
changelog (unsigned, over the model's genuine checkpoint, and under a forged signature), garbage to the join's
changelog, and garbage to monitor-input.  The restarted worker refuses all of it, counts it, does not create
the file, starts the model cold, and goes on monitoring.
"""

from __future__ import annotations

import json
import pickle
import urllib.request
import uuid
import zlib
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.client import PredictionLogger
from streams.processes import free_port, metric_sum, stop_worker
from streams.scenarios import SpeechScenario
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.harness import Worker, settings_of, start_worker, stop_cleanly, worker_env
from tests.speech_monitors import SPEECH_MONITORS

pytestmark = pytest.mark.integration

N_FIRST, N_SECOND = 300, 300


class _CreatesFile:
    """Unpickling this opens ``path`` for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


def _seen(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/checkpoint", timeout=2) as response:
            return int(json.loads(response.read()).get("written_seen", {}).get("speech-asr", -1))
    except OSError:
        return -1


def _write_foreign_records(settings: Settings, target: Path) -> None:
    evil = pickle.dumps(_CreatesFile(target))
    state = f"{settings.app_id}-monitor-state-changelog"
    records = [
        (state, b"speech-asr", b"DLC1" + zlib.compress(evil)),  # the unsigned format, over the genuine checkpoint
        (state, b"intruder", b"DLS1" + bytes(32) + b"DLC1" + zlib.compress(evil)),  # a forged signature
        (settings.join_state_topic, b"prediction/forged", b"\xff not a header\n{}"),
        (settings.join_state_topic, b"resolved/7", b"{not json"),
        (settings.join_state_topic, b"\xff\xfe", b"neither key nor value of ours"),
        (settings.topics.monitor_input, b"speech-asr", b"\x00 not a batch"),
        (settings.topics.monitor_input, b"speech-asr", b'{"watermarks": {"prediction/9": "2026-01-01T00:00:00Z"}}'),
    ]
    producer = Producer(settings.confluent_config())
    for topic, key, value in records:
        producer.produce(topic, value, key, partition=0)
    assert producer.flush(30) == 0


def test_foreign_writes_to_internal_topics_are_refused_and_never_executed(kafka_bootstrap: str, tmp_path: Path) -> None:
    config_path = tmp_path / "monitors.yaml"
    config_path.write_text(SPEECH_MONITORS)
    env = worker_env(kafka_bootstrap, uuid.uuid4().hex[:10], config_path, app="driftline-foreign", partitions="1",
                     data_dir=str(tmp_path / "worker"), checkpoint_seconds="1")
    settings = settings_of(env)
    ensure_topics(settings)
    pairs = list(SpeechScenario(n_events=N_FIRST + N_SECOND, change_at=N_FIRST + N_SECOND, seed=5).events())
    logger = PredictionLogger(settings.confluent_config(), settings.topics)

    def produce(part: list) -> None:  # type: ignore[type-arg]
        for prediction, outcome in part:
            logger.log_prediction(prediction)
            logger.log_outcome(outcome)
        assert logger.flush(30) == 0

    port, log_path = free_port(), tmp_path / "worker-1.log"
    first = start_worker({**env, "DRIFTLINE_WEB_PORT": str(port)}, log_path)
    try:
        produce(pairs[:N_FIRST])
        Worker(settings, port, log_path).wait_for(lambda _m: _seen(port) == N_FIRST, 60, "a checkpoint of the first part")
    except BaseException:
        stop_worker(first)
        raise
    stop_cleanly(first, log_path)

    target = tmp_path / "owned-by-a-forged-checkpoint"
    _write_foreign_records(settings, target)
    port, log_path = free_port(), tmp_path / "worker-2.log"
    second = start_worker({**env, "DRIFTLINE_WEB_PORT": str(port)}, log_path)
    try:
        worker = Worker(settings, port, log_path)
        produce(pairs[N_FIRST:])
        # Cold: the forged record replaced the model's checkpoint, so the state holds the second part only.
        samples = worker.wait_for(lambda _m: _seen(port) == N_SECOND, 60, "the second part monitored")
        assert second.poll() is None, "the worker is still running"
    except BaseException:
        stop_worker(second)
        raise
    stop_cleanly(second, log_path)

    assert not target.exists(), "a forged checkpoint was unpickled"
    rejected = {(state, reason): metric_sum(samples, "driftline_state_rejected_total", state=state, reason=reason)
                for state, reason in [("monitor", "unsigned"), ("monitor", "bad_signature"), ("join", "undecodable")]}
    assert rejected == {("monitor", "unsigned"): 1, ("monitor", "bad_signature"): 1, ("join", "undecodable"): 3}
    # The two foreign monitor-input records, each dead-lettered once, even when faust's start-up rebalance
    # makes this worker read them again before their acks are committed (Checkpointer.first_dead_letter).
    assert metric_sum(samples, "driftline_internal_dead_lettered_total", topic="monitor-input") == 2
    assert metric_sum(samples, "driftline_events_processed_total", source="outcome") == N_SECOND
    refusals = [line for line in log_path.read_text().splitlines() if "monitor state record" in line]
    assert len(refusals) == 2 and all(f"{settings.app_id}-monitor-state-changelog[0]@" in line for line in refusals)
