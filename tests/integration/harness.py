"""A worker subprocess on the real broker, with its own topics, and helpers to read them back."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr, TypeAdapter

from schemas.events import LabelledExample, MonitorBatch
from schemas.topics import TopicNames
from streams.processes import free_port, metric_sum, scrape_metrics, start_worker, stop_worker
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics

_BATCH = TypeAdapter(MonitorBatch)


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


def worker_env(bootstrap: str, run: str, config_path: Path, app: str = "driftline-test", **settings: str) -> dict[str, str]:
    """A test worker's environment: its own topic prefix and app id (from ``run``), the monitor config, 0.2 s
    batches, and ``settings`` (``partitions="4"`` sets ``DRIFTLINE_PARTITIONS``)."""
    return {
        "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
        "DRIFTLINE_TOPIC_PREFIX": f"t{run}.",
        "DRIFTLINE_APP_ID": f"{app}-{run}",
        "DRIFTLINE_MONITOR_CONFIG": str(config_path),
        "DRIFTLINE_BATCH_SECONDS": "0.2",
        # One key for every worker of the run, as the README asks: each verifies the others' checkpoints.
        "DRIFTLINE_STATE_KEY": f"test state key of run {run}",
        **{f"DRIFTLINE_{k.upper()}": v for k, v in settings.items()},
    }


def kafka_environment(settings: Settings) -> dict[str, str]:
    """The ``DRIFTLINE_KAFKA_*`` variables that connect a subprocess to Kafka as ``settings`` do, secrets included."""
    env = {}
    for field in type(settings).model_fields:
        value = getattr(settings, field)
        if field.startswith("kafka_") and value is not None:
            value = value.get_secret_value() if isinstance(value, SecretStr) else value
            env[f"DRIFTLINE_{field.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def _client_config(bootstrap: str, client_config: Mapping[str, object] | None) -> dict[str, object]:
    """``client_config`` (a secured broker's), or the plaintext one of ``bootstrap``."""
    return dict(client_config) if client_config is not None else load_settings(kafka_bootstrap=bootstrap).confluent_config()


def settings_of(env: dict[str, str]) -> Settings:
    """The settings a worker started with ``env`` runs with."""
    return load_settings(**{k.removeprefix("DRIFTLINE_").lower(): v for k, v in env.items()})


@contextmanager
def running_worker(bootstrap: str, tmp_path: Path, config_yaml: str, **settings: str) -> Iterator[Worker]:
    """Start ``driftline worker`` with a fresh topic prefix and app id; SIGTERM then SIGKILL at the end."""
    with running_workers(bootstrap, tmp_path, config_yaml, 1, **settings) as (worker,):
        yield worker


@contextmanager
def running_workers(
    bootstrap: str, tmp_path: Path, config_yaml: str, n_workers: int, roles: Sequence[str] = (), **settings: str
) -> Iterator[list[Worker]]:
    """``n_workers`` workers in one consumer group (a fresh topic prefix and app id), each with its own
    web port, data dir and log (and ``DRIFTLINE_WORKER_ROLE`` from ``roles``, if given); all are stopped at
    the end, at the same time."""
    run = uuid.uuid4().hex[:10]
    config = tmp_path / f"monitors-{run}.yaml"
    config.write_text(config_yaml)
    env = worker_env(bootstrap, run, config, **settings)
    resolved = settings_of(env)
    # Topics exist before anyone produces, so nothing is lost to a missing topic.
    ensure_topics(resolved)
    procs: list[subprocess.Popen[bytes]] = []
    workers: list[Worker] = []
    try:
        for i in range(n_workers):
            name = f"worker-{run}" + (f"-{i}" if i else "")
            web_port = free_port()
            own = {"DRIFTLINE_DATA_DIR": str(tmp_path / name), "DRIFTLINE_WEB_PORT": str(web_port),
                   **({"DRIFTLINE_WORKER_ROLE": roles[i]} if roles else {})}
            log_path = tmp_path / f"{name}.log"
            procs.append(start_worker({**env, **own}, log_path))
            workers.append(Worker(resolved.model_copy(update={"data_dir": Path(own["DRIFTLINE_DATA_DIR"]),
                                                              "web_port": web_port}), web_port, log_path))
        yield workers
    finally:
        with ThreadPoolExecutor(max(len(procs), 1)) as pool:
            list(pool.map(stop_worker, procs))


def assigned_partitions(bootstrap: str, group_id: str, topic: str,
                        client_config: Mapping[str, object] | None = None) -> list[set[int]]:
    """The partitions of ``topic`` each member of the consumer group ``group_id`` holds now (one set per member).

    Empty while the group is rebalancing or has no members.
    """
    # log_level 4: without it librdkafka reports "Purging 1 unserved events" at every close.
    admin = AdminClient({**_client_config(bootstrap, client_config), "log_level": 4})
    try:
        group = admin.describe_consumer_groups([group_id], request_timeout=5)[group_id].result()
    except KafkaException:
        return []
    if group.state != ConsumerGroupState.STABLE:
        return []
    return [{tp.partition for tp in member.assignment.topic_partitions if tp.topic == topic}
            for member in group.members]


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60.0,
               count: Callable[[Message], int] = lambda _message: 1,
               client_config: Mapping[str, object] | None = None) -> list[Message]:
    """Every message on ``topic`` from the beginning, once ``expected`` items have come (``count`` says how many
    a message holds: one by default) or the timeout passes; ``client_config`` connects to a secured broker."""
    # The group's name starts as Driftline's own do, so a secured broker's ACLs for them let it read.
    consumer = Consumer({**_client_config(bootstrap, client_config), "group.id": f"driftline-reader-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list[Message] = []
    items = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and items < expected:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                messages.append(message)
                items += count(message)
        # A short grace period so that extra, unexpected messages are seen too.
        grace = time.monotonic() + 2.0
        while time.monotonic() < grace:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                messages.append(message)
    finally:
        consumer.close()
    return messages


def read_to_end(bootstrap: str, topic: str, timeout: float = 30.0,
                client_config: Mapping[str, object] | None = None) -> list[Message]:
    """Every message of every partition of ``topic``, up to the end offsets as they stand when called.

    Absence is then proven by reading to the end, not by waiting a while for more.
    """
    consumer = Consumer({**_client_config(bootstrap, client_config), "group.id": f"driftline-reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in partitions}
        left = {p: high for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in left])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while left:
            assert time.monotonic() < deadline, f"{topic}: not read to its end offsets {left} in {timeout} s"
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            messages.append(message)
            if message.offset() + 1 >= left.get(message.partition(), 0):
                left.pop(message.partition(), None)
        return messages
    finally:
        consumer.close()


def play_the_app(scenario: Any, server: Any, logger: Any, per_second: float = 300,
                 outcome_lag: int = 20) -> list[tuple[int, str, bool]]:
    """A live app over a learnable speech scenario: ``per_second`` utterances a second, each served by
    ``server`` and logged, its outcome ``outcome_lag`` utterances later (so the retrainer judges a challenger
    on data from after a change).  Returns (utterance index, version served, whether it was right)."""
    served: list[tuple[int, str, bool]] = []
    pending: list[Any] = []
    started = time.monotonic()
    for u in scenario.utterances():
        out = server.predict(u.features)
        served.append((u.index, out.version, out.prediction == u.truth))
        logger.log_prediction(scenario.prediction(u, str(out.prediction), out.version))
        pending.append(scenario.outcome(u))
        if len(pending) > outcome_lag:
            logger.log_outcome(pending.pop(0))
        ahead = (u.index + 1) / per_second - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    for outcome in pending:
        logger.log_outcome(outcome)
    return served


def labelled_batch(message: Message) -> MonitorBatch:
    """One message of the labelled topic: a batch of one model's examples, keyed by the model, nothing else in it."""
    batch = _BATCH.validate_json(message.value())
    assert batch.model is not None and message.key() == batch.model.encode(), (message.key(), batch.model)
    assert not batch.predictions and not batch.watermarks, "the labelled topic carries labelled examples only"
    assert all(e.prediction.model == batch.model for e in batch.labelled), f"a batch of {batch.model} mixes models"
    return batch


def read_labelled(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[LabelledExample]:
    """Every labelled example in the batches on the labelled ``topic`` (in each partition's order), once
    ``expected`` examples have come or the timeout passes."""
    messages = read_topic(bootstrap, topic, expected, timeout, count=lambda m: len(labelled_batch(m).labelled))
    return [example for m in messages for example in labelled_batch(m).labelled]
