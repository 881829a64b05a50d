"""The retrainer service (``driftline retrainer``): a thin Kafka shell around :class:`retrainer.Retrainer`.

It is its own process with its own consumer group.  It reads the labelled
examples the worker publishes and the retrain triggers, feeds them to the
pure core (``learn``, ``on_trigger``, ``poll``) and publishes every
:class:`~schemas.events.ModelVersion` the core returns on the models topic.

What is on the labelled topic
-----------------------------
Batches, not single examples: per model and ingest step the worker writes one
:class:`~schemas.events.MonitorBatch` (the monitor-input topic's format) keyed
by the model, with ``model`` set and only ``labelled`` filled, in event-time
order; a step with more than ``MAX_BATCH_ITEMS`` examples, or more than
``streams.worker.messages.BATCH_BYTES`` of them, is cut into several.  Those
bytes are ``streams.worker.messages.monitor_batches(model, [], examples_json)``.
Each example is learnt in order.  A message that does not decode (a single
``LabelledExample``, as written before batches, included) is skipped and
counted once, by its rejection kind; an example that cannot be learnt is
skipped and counted once per example.

Why plain confluent-kafka clients and not a Faust app: training a challenger is
seconds of CPU work that would stall Faust's event loop (and its consumer
heartbeats); the service needs exact control of offsets (commit a trigger only
once it is decided, replay a window of examples on start) that Faust's agents
hide; and one sequential loop has no agent concurrency to get wrong
(faust-streaming #606).

What is on the compacted models topic
-------------------------------------
* key ``<model>``: the model's **current** version, i.e. only ``promoted``
  records (a rollback publishes the re-promoted version here).  Compaction
  keeps exactly one per model: this is what serving apps read.
* key ``<model>@<version>``: the latest record of each version (candidate,
  then promoted or rejected, later perhaps rolled_back), so the topic also
  holds every version's lineage.  ``@`` cannot occur in a model name.

The registry (the file in the data directory, or MLflow with
``DRIFTLINE_REGISTRY=mlflow``) is the source of truth; the topic is its
projection.  Every decision is written to the registry first and published
after, and the service republishes the registry on start, which repairs a crash
between the two; with MLflow it first reconciles the ``champion`` alias with
the registry's records (:meth:`retrainer.mlflow_registry.MlflowRegistry.reconcile`).
A trigger read again after such a crash is found handled in the registry (by
its ``driftline.trigger_id`` tag in MLflow), so it never makes a second version.
While MLflow does not answer, a trigger waits (its offset uncommitted) and is
retried at every poll; the champion keeps learning meanwhile.

Offsets and restarts
--------------------
Labelled offsets are committed as consumed, per message (a whole batch); on
start (and on every assignment) each labelled partition is rewound from its
committed offset to the latest message from which at least
``retrainer_replay_examples`` *examples* lie before it (:func:`replay_start`:
the batches just before the committed offset are read once more, and
counted, to find it), so the buffers (holdout and training history) refill.
A trigger's offset is committed only once it is decided, so a trigger still
waiting for data is read again after a restart; a decided trigger read again
is ignored, because the registry records it as handled.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import TypeAdapter

from retrainer.champions import Retrainer
from retrainer.config import RetrainerConfig
from retrainer.exceptions import BadExample, RegistryUnavailable, UnknownModel
from retrainer.registry import VersionJournal
from schemas.decoding import Rejection, decode
from schemas.events import MonitorBatch, ModelVersion, RetrainTrigger
from streams.cloudevents import cloudevents_headers
from streams.health.liveness import HealthMetrics, HealthState, StageTracker, WatchdogThread
from streams.health.web import HealthServer
from streams.registries import open_backend
from streams.settings import Settings

__all__ = [
    "RetrainerMetrics",
    "RetrainerService",
    "current_key",
    "model_version_messages",
    "publish_versions",
    "replay_start",
    "run_retrainer",
    "version_key",
]

log = logging.getLogger(__name__)
# librdkafka's lines go through Python logging (not stderr), where an outage's repeats are rate-limited.
_kafka_log = logging.getLogger("streams.kafka.retrainer")
_LABELLED = TypeAdapter(MonitorBatch)
_TRIGGER = TypeAdapter(RetrainTrigger)
CLOUDEVENTS_SOURCE = "urn:driftline:retrainer"
# Messages read per consume call: big enough to amortise the call, small
# enough that a trigger waits at most a fraction of a second behind them
# (labelled ones are batches of up to MAX_BATCH_ITEMS examples).
CONSUME_BATCH = 500
COMMIT_SECONDS = 2.0
# What the worker cuts its labelled batches under: streams.worker.messages.BATCH_BYTES, not imported because
# that package is the Faust worker (tests/unit/test_retrainer_service.py checks the two agree).
LABELLED_BATCH_BYTES = 512 * 1024
# How long reading back the batches before a committed offset may take, per window (see replay_start).
REPLAY_READ_SECONDS = 30.0
# A registry on a server (MLflow) is read back for the gauges at most this often, not at every poll: what
# another process changed there (a CLI rollback) shows this much later; decisions read it when they need it.
REMOTE_GAUGE_SECONDS = 10.0


def current_key(model: str) -> bytes:
    """Key of a model's current (promoted) version on the models topic."""
    return model.encode()


def version_key(model: str, version: str) -> bytes:
    """Key of one version's latest record on the models topic."""
    return f"{model}@{version}".encode()


def model_version_messages(
    records: Iterable[ModelVersion], announce_current: bool = True
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """``(key, value, headers)`` of every message that publishes ``records``, in order.

    Every record goes under its version key; a promoted one also under the
    model's key, as the new current version (unless ``announce_current`` is false).

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> rs = [ModelVersion(model="asr", version="2", status=s, created_at=t) for s in ("candidate", "promoted")]
    >>> [key for key, _, _ in model_version_messages(rs)]
    [b'asr@2', b'asr@2', b'asr']
    """
    messages = []
    for record in records:
        value = record.model_dump_json().encode()
        headers = cloudevents_headers(
            CLOUDEVENTS_SOURCE, f"{record.model}@{record.version}:{record.status}:{record.created_at.isoformat()}",
            f"dev.driftline.model_version.{record.status}", record.created_at,
        )
        messages.append((version_key(record.model, record.version), value, headers))
        if announce_current and record.status == "promoted":
            messages.append((current_key(record.model), value, headers))
    return messages


def replay_start(
    counts_between: Callable[[int, int], Sequence[tuple[int, int]]], low: int, committed: int, examples: int,
    first_window: int = 8,
) -> int:
    """The latest offset from which at least ``examples`` examples lie before ``committed``; ``low`` if fewer do.

    ``counts_between(start, end)`` gives ``(offset, examples in that message)`` for the messages of a
    partition from ``start`` up to, not including, ``end``.  It is asked for windows further and further
    back from ``committed`` (each twice as long as the last), so only about as many messages as are
    replayed are read.

    >>> sizes = [100] * 20                       # twenty batches of 100 examples at offsets 0-19
    >>> counts = lambda start, end: [(o, sizes[o]) for o in range(start, end)]
    >>> replay_start(counts, 0, 20, 500), replay_start(counts, 0, 20, 450), replay_start(counts, 0, 20, 10**6)
    (15, 15, 0)
    >>> replay_start(counts, 0, 20, 0)           # nothing to replay
    20
    """
    if examples <= 0:
        return committed
    end, found, window = committed, 0, max(1, first_window)
    while end > low:
        start = max(low, end - window)
        for offset, n in reversed(counts_between(start, end)):
            found += n
            if found >= examples:
                return offset
        end, window = start, 2 * window
    return low


def publish_versions(
    producer: Producer, topic: str, records: Sequence[ModelVersion], timeout: float = 30.0, announce_current: bool = True
) -> int:
    """Publish ``records`` on the models topic and wait for the broker; return how many failed."""
    failed = 0

    def on_delivery(err: Any, _msg: Message) -> None:
        nonlocal failed
        if err is not None:
            failed += 1
            log.error("could not publish a model version to %s: %s", topic, err)

    for key, value, headers in model_version_messages(records, announce_current):
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
    remaining = producer.flush(timeout)
    return failed + remaining


class RetrainerMetrics:
    """The retrainer's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.challengers = Counter("driftline_challengers", "Challengers decided, by outcome.", ["model", "outcome"], registry=r)
        self.version_info = Gauge("driftline_model_version_info", "1 for the current (promoted) version of each model.", ["model", "version"], registry=r)
        self.examples = Counter("driftline_retrainer_examples", "Labelled examples learnt from.", ["model"], registry=r)
        self.triggers_received = Counter("driftline_retrain_triggers_received", "Retrain triggers read.", ["model"], registry=r)
        self.triggers_handled = Counter("driftline_retrain_triggers_handled", "Retrain triggers decided (promoted or rejected) by this process.", ["model"], registry=r)
        self.triggers_duplicate = Counter("driftline_retrain_triggers_duplicate", "Retrain triggers read again after they were handled; ignored.", ["model"], registry=r)
        self.skipped = Counter("driftline_retrainer_messages_skipped",
                               "Not learnt from, by topic and reason: a message that does not decode counts once, "
                               "a labelled example that cannot be learnt (unknown_model, bad_example) once per example.",
                               ["topic", "reason"], registry=r)
        self.position = Gauge("driftline_retrainer_position",
                              "Next offset of each partition read, every message before it handled (learnt, or its "
                              "trigger decided or left waiting); its commit follows. By topic: labelled or retrain.",
                              ["topic", "partition"], registry=r)
        self.versions_published = Counter("driftline_model_versions_published", "Model-version records published.", ["model", "status"], registry=r)
        self.publish_failures = Counter("driftline_model_versions_publish_failures", "Model-version messages the broker did not take.", registry=r)
        self.triggers_only = Gauge("driftline_retrainer_triggers_only",
                                   "1 for a model whose champion was registered outside Driftline and is not a river "
                                   "model it can load: monitored, its triggers published, no challengers trained.",
                                   ["model"], registry=r)
        self.health = HealthMetrics(r)
        self._current: dict[str, str] = {}

    def set_current(self, model: str, version: str | None) -> None:
        old = self._current.get(model)
        if old == version:
            return
        if old is not None:
            self.version_info.remove(model, old)
        if version is not None:
            self.version_info.labels(model, version).set(1)
            self._current[model] = version
        else:
            self._current.pop(model, None)


class RetrainerService:
    """Consumes batches of labelled examples and triggers, runs the core, publishes versions.

    Parameters
    ----------
    settings
        Process settings (Kafka, topics, ``retrainer_*``).
    config
        The validated learner of each model.
    metrics
        Where to count; a fresh :class:`RetrainerMetrics` by default.
    """

    def __init__(self, settings: Settings, config: RetrainerConfig, metrics: RetrainerMetrics | None = None) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.metrics = metrics or RetrainerMetrics()
        backend = open_backend(settings, config.learners)
        self.registry: VersionJournal = backend.registry
        self.retrainer = Retrainer(config.learners, backend.store, self.registry)
        self.learners = config.learners
        # Every configured model's series exist from the start, at zero, so
        # rates and alert rules on them have data before the first event.
        for model in self.learners:
            for outcome in ("promoted", "rejected"):
                self.metrics.challengers.labels(model, outcome)
            for counter in (self.metrics.examples, self.metrics.triggers_received, self.metrics.triggers_handled,
                            self.metrics.triggers_duplicate):
                counter.labels(model)
            self.metrics.triggers_only.labels(model).set(0)
        self._max_bytes = 4 * settings.max_event_bytes
        # As the monitor stage reads the same batches: the cut size, plus room for one large example past it.
        self._max_batch_bytes = 2 * LABELLED_BATCH_BYTES + 4 * settings.max_event_bytes
        # Next offset to commit per (topic, partition), and where each waiting trigger sits.
        self._gauges_read_at = float("-inf")
        self._positions: dict[tuple[str, int], int] = {}
        self._waiting_at: dict[str, tuple[int, int]] = {}
        self._producer = Producer({**settings.confluent_config(), "acks": "all", "enable.idempotence": True,
                                   "partitioner": "murmur2_random", "logger": _kafka_log})
        self._consumer: Consumer | None = None
        # Its progress is judged on the labelled topic only: a trigger waiting for data keeps the retrain
        # topic's committed offset behind on purpose (see the module docstring).
        self.tracker = StageTracker("retrainer", settings.retrainer_group, (self.topics.labelled, self.topics.retrain),
                                    watched=(self.topics.labelled,))

    # -- Kafka plumbing ------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        labelled = [tp for tp in partitions if tp.topic == self.topics.labelled]
        if labelled and self.settings.retrainer_replay_examples:
            self._rewind(consumer, labelled)
        consumer.assign(partitions)
        self.tracker.set_assignment((tp.topic, tp.partition) for tp in partitions)

    def _rewind(self, consumer: Consumer, labelled: list[TopicPartition]) -> None:
        """Start each labelled partition ``retrainer_replay_examples`` examples before its committed offset."""
        replay = self.settings.retrainer_replay_examples
        rewind = []
        for committed in consumer.committed(labelled, timeout=10):
            if committed.offset == OFFSET_INVALID or committed.offset < 0:
                continue  # never consumed: auto.offset.reset (earliest) applies
            low, _high = consumer.get_watermark_offsets(committed, timeout=10)
            rewind.append((committed.partition, low, committed.offset))
        if not rewind:
            return
        reader = Consumer({**self.settings.confluent_config(), "group.id": f"{self.settings.retrainer_group}-replay",
                           "enable.auto.commit": False, "enable.partition.eof": False, "auto.offset.reset": "earliest"})
        try:
            for partition, low, committed_offset in rewind:
                try:
                    start = replay_start(partial(self._example_counts, reader, partition), low, committed_offset, replay)
                except KafkaException as exc:
                    log.warning("labelled partition %d: could not read back before offset %d (%s); no replay",
                                partition, committed_offset, exc)
                    start = committed_offset
                for tp in labelled:
                    if tp.partition == partition:
                        tp.offset = start
                log.info("labelled partition %d: replaying from %d (committed %d)", partition, start, committed_offset)
        finally:
            reader.close()

    def _example_counts(self, reader: Consumer, partition: int, start: int, end: int) -> list[tuple[int, int]]:
        """``(offset, examples in it)`` of each labelled message from ``start`` up to ``end``; 0 if it does not decode."""
        reader.assign([TopicPartition(self.topics.labelled, partition, start)])
        counts: list[tuple[int, int]] = []
        deadline = time.monotonic() + REPLAY_READ_SECONDS
        while time.monotonic() < deadline:
            for message in reader.consume(min(CONSUME_BATCH, end - start), timeout=1.0):
                if message.error():
                    raise KafkaException(message.error())
                offset = message.offset()
                if offset < end:
                    decoded = decode(_LABELLED, message.value(), self._max_batch_bytes)
                    counts.append((offset, 0 if isinstance(decoded, Rejection) else len(decoded.labelled)))
                if offset >= end - 1:
                    return counts
        log.warning("labelled partition %d: read back only %d messages of offsets %d-%d in %.0f s",
                    partition, len(counts), start, end - 1, REPLAY_READ_SECONDS)
        return counts

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.tracker.remove((tp.topic, tp.partition) for tp in partitions)
        self._commit()
        for tp in partitions:
            self._positions.pop((tp.topic, tp.partition), None)

    def _commit(self) -> None:
        if self._consumer is None or not self._positions:
            return
        offsets = []
        for (topic, partition), position in self._positions.items():
            if topic == self.topics.retrain:
                waiting = [o for (p, o) in self._waiting_at.values() if p == partition]
                position = min([position, *waiting])
            offsets.append(TopicPartition(topic, partition, position))
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Nothing is lost: the next commit carries the same or later positions.
            log.warning("offset commit failed: %s", exc)

    def _publish(self, records: Sequence[ModelVersion]) -> None:
        if not records:
            return
        failed = publish_versions(self._producer, self.topics.models, records)
        if failed:
            self.metrics.publish_failures.inc(failed)
        for record in records:
            self.metrics.versions_published.labels(record.model, record.status).inc()
            if record.status in ("promoted", "rejected") and record.trigger_id is not None:
                self.metrics.challengers.labels(record.model, record.status).inc()
                self.metrics.triggers_handled.labels(record.model).inc()

    def republish_registry(self, now: datetime | None = None) -> None:
        """Reconcile the registry, then publish every version's latest record and each current version again.

        Idempotent.  Then each model's champion is loaded (or found to be triggers-only) at once.
        """
        self.registry.refresh()
        changed = self.registry.reconcile(now or datetime.now(timezone.utc))
        if changed:
            log.info("registry reconciled for %s", ", ".join(changed))
        failed = 0
        for model in self.registry.models():
            # Every version under its own key first, then the current one under the model's key.
            failed += publish_versions(self._producer, self.topics.models, self.registry.versions(model), announce_current=False)
            current = self.registry.current(model)
            if current is not None:
                failed += publish_versions(self._producer, self.topics.models, [current])
        if failed:
            self.metrics.publish_failures.inc(failed)
        for model in self.learners:
            self.retrainer.champion(model)
        self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        """Set the gauges from the registry, read back first unless it is remote and was read lately.

        What this process decided is in the registry's memory already, so its own changes show at once.
        """
        if not self.registry.remote or time.monotonic() - self._gauges_read_at >= REMOTE_GAUGE_SECONDS:
            try:
                self.registry.refresh()
                self._gauges_read_at = time.monotonic()
            except RegistryUnavailable as exc:
                log.warning("registry not read back for the gauges: %s", exc)
        for model in sorted(set(self.registry.models()) | set(self.learners)):
            current = self.registry.current(model)
            self.metrics.set_current(model, current.version if current else None)
        for model in self.learners:
            self.metrics.triggers_only.labels(model).set(1 if self.retrainer.triggers_only(model) else 0)

    # -- the loop ------------------------------------------------------------

    def handle(self, messages: Sequence[Message], now: datetime) -> list[ModelVersion]:
        """Route one batch of messages to the core; returns the records to publish."""
        records: list[ModelVersion] = []
        if messages:
            self.tracker.note_batch()
        for message in messages:
            if message.error():
                log.warning("consumer error: %s", message.error())
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            self._positions[(topic, partition)] = offset + 1
            if topic == self.topics.labelled:
                records += self._learn(message.value())
            elif topic == self.topics.retrain:
                records += self._trigger(message.value(), partition, offset, now)
        # Set once the batch is handled: a scrape that shows a partition's end shows every count it led to.
        for (topic, partition), position in self._positions.items():
            role = "labelled" if topic == self.topics.labelled else "retrain"
            self.metrics.position.labels(role, str(partition)).set(position)
        return records

    def _learn(self, value: bytes | None) -> list[ModelVersion]:
        """Learn every example of one labelled batch, in order."""
        decoded = decode(_LABELLED, value, self._max_batch_bytes)
        if isinstance(decoded, Rejection):
            # The worker writes this topic from examples it has decoded, so this one came from elsewhere (or
            # from a worker older than batches): counting it is enough, its examples cannot be known.
            log.debug("labelled message skipped: %s", decoded.reason)
            self.metrics.skipped.labels("labelled", decoded.kind).inc()
            return []
        records: list[ModelVersion] = []
        learnt: defaultdict[str, int] = defaultdict(int)
        for example in decoded.labelled:
            try:
                records += self.retrainer.learn(example)
            except UnknownModel:
                self.metrics.skipped.labels("labelled", "unknown_model").inc()
                continue
            except BadExample as exc:
                log.debug("example not learnable: %s", exc)
                self.metrics.skipped.labels("labelled", "bad_example").inc()
                continue
            learnt[example.prediction.model] += 1
        for model, n in learnt.items():
            self.metrics.examples.labels(model).inc(n)
        return records

    def _trigger(self, value: bytes | None, partition: int, offset: int, now: datetime) -> list[ModelVersion]:
        decoded = decode(_TRIGGER, value, self._max_bytes)
        if isinstance(decoded, Rejection):
            log.warning("undecodable retrain trigger at %s[%d]@%d: %s", self.topics.retrain, partition, offset, decoded.reason)
            self.metrics.skipped.labels("retrain", decoded.kind).inc()
            return []
        if decoded.model not in self.learners:
            log.warning("retrain trigger %s for model %s, which has no learner; ignored", decoded.trigger_id, decoded.model)
            self.metrics.skipped.labels("retrain", "unknown_model").inc()
            return []
        self.metrics.triggers_received.labels(decoded.model).inc()
        if self.retrainer.triggers_only(decoded.model) is not None:
            self.metrics.skipped.labels("retrain", "triggers_only").inc()
        if self.registry.is_trigger_handled(decoded.trigger_id):
            log.info("trigger %s was handled before; ignored", decoded.trigger_id)
            self.metrics.triggers_duplicate.labels(decoded.model).inc()
            return []
        log.info("trigger %s for %s (%s), data from %s", decoded.trigger_id, decoded.model, decoded.reason, decoded.data_from.isoformat())
        self._waiting_at.setdefault(decoded.trigger_id, (partition, offset))
        records = self.retrainer.on_trigger(decoded, now=now)
        self._forget_decided()
        return records

    def _forget_decided(self) -> None:
        waiting = {t.trigger_id for model in self.learners for t in self.retrainer.waiting_triggers(model)}
        for trigger_id in list(self._waiting_at):
            if trigger_id not in waiting:
                del self._waiting_at[trigger_id]

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Consume until ``should_stop()``; commit and flush on the way out."""
        consumer = Consumer({
            **self.settings.confluent_config(),
            "group.id": self.settings.retrainer_group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # A challenger can take seconds to train; the loop never blocks longer than that.
            "max.poll.interval.ms": 300_000,
            "logger": _kafka_log,
        })
        self._consumer = consumer
        self.republish_registry()
        consumer.subscribe([self.topics.labelled, self.topics.retrain], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_poll = last_commit = time.monotonic()
        try:
            while not should_stop():
                messages = consumer.consume(CONSUME_BATCH, timeout=self.settings.retrainer_poll_seconds)
                now = datetime.now(timezone.utc)
                records = self.handle(messages, now)
                if time.monotonic() - last_poll >= self.settings.retrainer_poll_seconds:
                    records += self.retrainer.poll(now)
                    self._forget_decided()
                    self._refresh_gauges()
                    last_poll = time.monotonic()
                self._publish(records)
                if records:
                    self._refresh_gauges()
                if time.monotonic() - last_commit >= COMMIT_SECONDS:
                    self._commit()
                    last_commit = time.monotonic()
        finally:
            self._commit()
            consumer.close()
            self._consumer = None
            self._producer.flush(10)


def run_retrainer(settings: Settings, config: RetrainerConfig) -> None:
    """Serve metrics and health, watch the service, run it until SIGTERM or SIGINT."""
    metrics = RetrainerMetrics()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = RetrainerService(settings, config, metrics)
    health = HealthState([service.tracker])
    metrics.health.declare([service.tracker.stage])
    HealthServer(settings.web_host, settings.retrainer_web_port, metrics.registry, health).start()
    WatchdogThread(settings, health, metrics.health).start()
    log.info("retrainer: group %s, registry %s, learners for %s, metrics on :%d",
             settings.retrainer_group, service.registry.location, ", ".join(config.learners) or "no model",
             settings.retrainer_web_port)
    service.run(stop.is_set)
