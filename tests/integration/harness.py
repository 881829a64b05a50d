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

from schemas.events import Alert, LabelledExample, MonitorBatch
from schemas.topics import TopicNames
from streams import processes
from streams.processes import free_port, metric_sum, scrape_metrics, stop_worker
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics

_BATCH = TypeAdapter(MonitorBatch)
TRACEBACK = "Traceback (most recent call last)"


class ProcessLogs:
    """The log of every worker and retrainer the integration tests start, read for Python tracebacks.

    ``tests/integration/conftest.py`` fails a test whose processes logged one: a traceback in a worker that
    recovered on its own (a faust agent restarted, a thread died) would otherwise pass unseen.
    """

    def __init__(self) -> None:
        self._read_up_to: dict[Path, int] = {}
        # (folder, text): a traceback in a log under the folder, logged with a message holding the text, is expected.
        self._expected: list[tuple[Path, str]] = []

    def watch(self, log_path: Path) -> None:
        self._read_up_to.setdefault(log_path, 0)

    def expect(self, folder: Path, logged_with: str) -> None:
        """Tracebacks in logs under ``folder`` whose log message holds ``logged_with`` are what the test provokes.

        For a crash-only exit the test is about (the ingest stage failing during a broker outage, status 71).
        The message is the line just above the traceback (one logging record writes both at once); what comes
        after it is not looked at, because other threads' lines come between the traceback and the exit.
        """
        self._expected.append((folder, logged_with))

    def new_tracebacks(self) -> list[str]:
        """Each traceback written since the last call, with its log's name and the lines that follow it."""
        found = []
        for path, offset in self._read_up_to.items():
            if not path.exists():
                continue
            data = path.read_bytes()
            self._read_up_to[path] = len(data)
            text = data[offset:].decode(errors="replace")
            start = text.find(TRACEBACK)
            while start >= 0:
                excerpt = text[start:start + 2500]
                message = text[text.rfind("\n", 0, max(start - 1, 0)) + 1:start]
                if not any(path.is_relative_to(folder) and mark in message for folder, mark in self._expected):
                    found.append(f"--- {path} ---\n{excerpt}")
                start = text.find(TRACEBACK, start + 1)
        return found


PROCESS_LOGS = ProcessLogs()


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """:func:`streams.processes.start_worker`, with its log read for tracebacks after the test."""
    PROCESS_LOGS.watch(log_path)
    return processes.start_worker(env, log_path)


def start_retrainer(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """:func:`streams.processes.start_retrainer`, with its log read for tracebacks after the test."""
    PROCESS_LOGS.watch(log_path)
    return processes.start_retrainer(env, log_path)


def stop_cleanly(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """SIGTERM (then SIGKILL): the process must exit 0, not crash and not ignore the signal."""
    code = stop_worker(proc)
    assert code == 0, f"{log_path.name}: exit status {code} on SIGTERM\n{log_path.read_text(errors='replace')[-3000:]}"


@dataclass
class Worker:
    settings: Settings
    web_port: int
    log_path: Path
    #: The exit status once stopped (or dead); None while it runs.
    exit_code: int | None = None

    @property
    def topics(self) -> TopicNames:
        return self.settings.topics

    def metrics(self) -> dict:  # type: ignore[type-arg]
        return scrape_metrics(self.web_port)

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(self.metrics(), name, **labels)

    def wait_scored(self, n_examples: int, timeout: float = 120.0) -> dict:  # type: ignore[type-arg]
        """Wait until the worker has scored ``n_examples`` labelled examples and nothing waits or is held back;
        return its metrics.  Read its outputs to their end (:func:`read_to_end_when`) only after this."""
        return self.wait_for(lambda m: metric_sum(m, "driftline_examples_total") >= n_examples
                             and metric_sum(m, "driftline_join_pending") == 0
                             and metric_sum(m, "driftline_join_held") == 0, timeout,
                             f"{n_examples:,} examples scored")

    def wait_assigned(self, timeout: float = 60.0) -> dict:  # type: ignore[type-arg]
        """Wait until this worker, alone in its groups, holds every partition in both stages."""
        partitions = self.settings.partitions
        return self.wait_for(lambda m: metric_sum(m, "driftline_assigned_partitions", stage="monitor") == partitions
                             and metric_sum(m, "driftline_assigned_partitions", stage="ingest") == 2 * partitions,
                             timeout, f"every partition assigned in both stages ({partitions} monitor-input, "
                             f"{2 * partitions} source)")

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


class WorkerGroup:
    """Workers of one consumer group (a fresh topic prefix and app id, its topics created), started one by one:
    each with its own web port, data dir and log, and all stopped together."""

    def __init__(self, bootstrap: str, tmp_path: Path, config_yaml: str, **settings: str) -> None:
        self.run = uuid.uuid4().hex[:10]
        self._tmp_path = tmp_path
        config = tmp_path / f"monitors-{self.run}.yaml"
        config.write_text(config_yaml)
        self.env = worker_env(bootstrap, self.run, config, **settings)
        self.settings = settings_of(self.env)
        # Topics exist before anyone produces, so nothing is lost to a missing topic.
        ensure_topics(self.settings)
        self.workers: list[Worker] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, role: str | None = None) -> Worker:
        """One more worker in the group (of ``DRIFTLINE_WORKER_ROLE`` ``role``, if given)."""
        i = len(self.workers)
        name = f"worker-{self.run}" + (f"-{i}" if i else "")
        web_port = free_port()
        own = {"DRIFTLINE_DATA_DIR": str(self._tmp_path / name), "DRIFTLINE_WEB_PORT": str(web_port),
               **({"DRIFTLINE_WORKER_ROLE": role} if role else {})}
        log_path = self._tmp_path / f"{name}.log"
        self._procs.append(start_worker({**self.env, **own}, log_path))
        self.workers.append(Worker(self.settings.model_copy(update={"data_dir": Path(own["DRIFTLINE_DATA_DIR"]),
                                                                    "web_port": web_port}), web_port, log_path))
        return self.workers[-1]

    def stop(self) -> None:
        """SIGTERM every worker at once (SIGKILL after a timeout); each one's exit status is kept."""
        with ThreadPoolExecutor(max(len(self._procs), 1)) as pool:
            for worker, code in zip(self.workers, pool.map(stop_worker, self._procs)):
                worker.exit_code = code

    def assert_clean_exits(self) -> None:
        for worker in self.workers:
            assert worker.exit_code == 0, (f"{worker.log_path.name}: exit status {worker.exit_code} on SIGTERM\n"
                                           f"{worker.log_path.read_text(errors='replace')[-3000:]}")


@contextmanager
def running_group(bootstrap: str, tmp_path: Path, config_yaml: str, **settings: str) -> Iterator[WorkerGroup]:
    """A :class:`WorkerGroup` stopped at the end; each worker must then exit 0 on SIGTERM (unless the block
    failed already)."""
    group = WorkerGroup(bootstrap, tmp_path, config_yaml, **settings)
    try:
        yield group
    except BaseException:
        group.stop()
        raise
    group.stop()
    group.assert_clean_exits()


@contextmanager
def running_workers(
    bootstrap: str, tmp_path: Path, config_yaml: str, n_workers: int, roles: Sequence[str] = (), **settings: str
) -> Iterator[list[Worker]]:
    """``n_workers`` workers of a :func:`running_group`, started at once (with ``DRIFTLINE_WORKER_ROLE`` from
    ``roles``, if given)."""
    with running_group(bootstrap, tmp_path, config_yaml, **settings) as group:
        for i in range(n_workers):
            group.start(roles[i] if roles else None)
        yield group.workers


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


AlertFacts = tuple[str, str, str, float]


def alert_facts(alerts: Sequence[Alert]) -> list[AlertFacts]:
    """What each alert tells on-call: which one, fired or resolved, when in event time, and its statistic.

    The statistic to 9 significant digits: a rolling metric is a running sum updated a batch at a time, and
    a worker's batches are not the backtest's, so its last bits can differ (measured on the stock scenario's
    error rate: 0.011013982 against 0.011013981999999988).
    """
    return [(a.alert_id, a.status, a.event_time.isoformat(), float(f"{a.statistic:.9g}")) for a in alerts]


def read_to_end_when(bootstrap: str, topic: str, enough: Callable[[list[Message]], bool], timeout: float = 30.0,
                     client_config: Mapping[str, object] | None = None) -> list[Message]:
    """:func:`read_to_end`, again until ``enough`` holds of what it read.

    Call it once the worker has scored every example (:meth:`Worker.wait_scored`): its last outputs are then
    handed to the producer at most milliseconds before, and waiting for ``enough`` covers their delivery.
    Whatever else is on the topic by then is read too: absence is proven by the end offsets, not by a pause.
    """
    deadline = time.monotonic() + timeout
    while True:
        messages = read_to_end(bootstrap, topic, timeout, client_config)
        if enough(messages):
            return messages
        assert time.monotonic() < deadline, f"{topic}: {len(messages)} messages, not enough after {timeout} s"
        time.sleep(0.2)


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
    """Every labelled example in the batches on the labelled ``topic`` (in each partition's order), read to the
    end offsets once at least ``expected`` examples are there."""
    messages = read_to_end_when(bootstrap, topic, lambda ms: sum(len(labelled_batch(m).labelled) for m in ms) >= expected,
                                timeout)
    return [example for m in messages for example in labelled_batch(m).labelled]
