"""A worker subprocess on the real broker, with its own topics, and helpers to read them back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Message

from schemas.topics import TopicNames
from streams.demo import free_port, metric_sum, scrape_metrics, start_worker, stop_worker
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics


# The speech model's monitors, shared by the integration tests that drive SpeechScenario through a worker.
SPEECH_MONITORS = """\
models:
  speech-asr:
    task: classification
    performance: {metric: accuracy, window: 500, threshold: 0.85, hysteresis: 0.02}
    detector: {name: bernoulli_glr, params: {false_alarm_horizon: 100000}}
    retrain: {cooldown_seconds: 3600}
"""


@dataclass
class Worker:
    settings: Settings
    web_port: int
    log_path: Path

    @property
    def topics(self) -> TopicNames:
        return self.settings.topics

    def metrics(self) -> dict:  # type: ignore[type-arg]
        return scrape_metrics(self.web_port)

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(self.metrics(), name, **labels)

    def wait_for(self, condition: Callable[[dict], bool], timeout: float, what: str) -> dict:  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        samples: dict = {}  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            samples = self.metrics() or samples
            if samples and condition(samples):
                return samples
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last metrics: "
                             f"{ {k: v for k, v in samples.items() if k[0].startswith('driftline_events')} }\n"
                             f"worker log tail:\n{self.log_path.read_text(errors='replace')[-3000:]}")


@contextmanager
def running_worker(bootstrap: str, tmp_path: Path, config_yaml: str, **settings: str) -> Iterator[Worker]:
    """Start ``driftline worker`` with a fresh topic prefix and app id; SIGTERM then SIGKILL at the end."""
    run = uuid.uuid4().hex[:10]
    web_port = free_port()
    config = tmp_path / f"monitors-{run}.yaml"
    config.write_text(config_yaml)
    env = {
        "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
        "DRIFTLINE_TOPIC_PREFIX": f"t{run}.",
        "DRIFTLINE_APP_ID": f"driftline-test-{run}",
        "DRIFTLINE_MONITOR_CONFIG": str(config),
        "DRIFTLINE_DATA_DIR": str(tmp_path / f"worker-{run}"),
        "DRIFTLINE_WEB_PORT": str(web_port),
        "DRIFTLINE_BATCH_SECONDS": "0.2",
        **{f"DRIFTLINE_{k.upper()}": v for k, v in settings.items()},
    }
    resolved = load_settings(**{k.removeprefix("DRIFTLINE_").lower(): v for k, v in env.items()})
    # Topics exist before anyone produces, so nothing is lost to a missing topic.
    ensure_topics(resolved)
    log_path = tmp_path / f"worker-{run}.log"
    proc = start_worker(env, log_path)
    try:
        yield Worker(resolved, web_port, log_path)
    finally:
        stop_worker(proc)


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Message]:
    """Every message on ``topic`` from the beginning, once ``expected`` have come or the timeout passes."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(messages) < expected:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                messages.append(message)
        # A short grace period so that extra, unexpected messages are seen too.
        grace = time.monotonic() + 2.0
        while time.monotonic() < grace:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                messages.append(message)
    finally:
        consumer.close()
    return messages
