"""Creating Driftline's topics, idempotently, with the partition counts the worker expects."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.exceptions import KafkaSecurityError, TopicError
from streams.settings import Settings

__all__ = ["AdminConnection", "TopicSpec", "connect_admin", "ensure_topics", "faust_topic_specs", "partition_ends",
           "read_partition", "read_partition_from", "retrainer_topic_specs", "topic_specs", "watermark_offsets"]

# Errors no retry mends: librdkafka would go on reconnecting (and logging) with the same credentials forever.
_REFUSED = {KafkaError._AUTHENTICATION: "refused the credentials of DRIFTLINE_KAFKA_SASL_USERNAME={user}",
            KafkaError._SSL: "failed the TLS handshake (check DRIFTLINE_KAFKA_SSL_CA_FILE and the client certificate)"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic Driftline reads or writes, with its partitions and config."""
    t = settings.topics
    n = settings.partitions
    week = str(7 * 24 * 3600 * 1000)
    return [
        # predictions and outcomes are joined by key, so they must have the same partition count.
        TopicSpec(t.predictions, n, {"retention.ms": week}),
        TopicSpec(t.outcomes, n, {"retention.ms": week}),
        # Both carry batches of up to MAX_BATCH_ITEMS events (MonitorBatch; labelled: the examples only):
        # room for large ones (the broker's default is 1 MiB).
        TopicSpec(t.labelled, n, {"retention.ms": week, "max.message.bytes": str(8 * 1024 * 1024)}),
        TopicSpec(t.monitor_input, n, {"retention.ms": week, "max.message.bytes": str(8 * 1024 * 1024)}),
        TopicSpec(t.alerts, n, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(t.retrain, n, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(t.models, 1, {"cleanup.policy": "compact"}),
        TopicSpec(t.deadletter, n, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(t.expired, n, {"retention.ms": week}),
        # The join's waiting events (detectors.ingest.join_log), read back whole when a worker takes a partition:
        # small segments and an eager cleaner keep what it reads close to what is still waiting.
        TopicSpec(settings.join_state_topic, n, {
            "cleanup.policy": "compact", "segment.bytes": str(16 * 1024 * 1024), "segment.ms": str(600_000),
            "min.cleanable.dirty.ratio": "0.1", "max.message.bytes": str(8 * 1024 * 1024),
        }),
    ]


class AdminConnection:
    """An admin client that remembers the errors librdkafka reports while it tries to connect."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.errors: list[KafkaError] = []
        # Quiet: every error it meets comes back through error_cb and into the message raised.
        self.admin = AdminClient({**settings.confluent_config(), "error_cb": self.errors.append, "log_level": 0})

    def refusal(self) -> KafkaSecurityError | None:
        for error in self.errors:
            if error.code() in _REFUSED:
                what = _REFUSED[error.code()].format(user=self.settings.kafka_sasl_username)
                return KafkaSecurityError(f"Kafka at {self.settings.kafka_bootstrap} {what}: {error.str()}")
        return None

    def metadata(self, timeout: float) -> Any:
        """One metadata request; refused credentials raise :class:`KafkaSecurityError`, anything else KafkaException."""
        try:
            return self.admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            self.admin.poll(0)  # serves error_cb
            refused = self.refusal()
            if refused is not None:
                raise refused from exc
            raise

    def list_topics(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.admin.list_topics(timeout=min(1.0, timeout)).topics
            except KafkaException as exc:
                self.admin.poll(0)  # serves error_cb
                refused = self.refusal()
                if refused is not None:
                    raise refused from exc
                if time.monotonic() >= deadline:
                    last = f" (last error: {self.errors[-1].str()})" if self.errors else ""
                    raise TopicError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc}{last}") from exc


def connect_admin(settings: Settings, timeout: float = 30.0) -> tuple[AdminClient, dict[str, Any]]:
    """An admin client that has reached the cluster, and the cluster's topics.

    Refused credentials or a failed TLS handshake raise :class:`KafkaSecurityError` at the first attempt, so
    that a process started with a wrong password stops at once with one line saying so, rather than retrying.
    """
    connection = AdminConnection(settings)
    return connection.admin, connection.list_topics(timeout)


def faust_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The worker's faust topics: its leader-election topic, and (with a monitor stage) its state changelog.

    Faust would declare them itself, but only once it starts; made here, the start-up gate can wait for the
    broker to list them before faust subscribes (a broker still loading answers without them).  Their shapes
    are the ones faust declares (see streams.app).
    """
    specs = [TopicSpec(f"{settings.faust_app_id}-__assignor-__leader", 1, {})]
    if settings.worker_role != "ingest":
        specs.append(TopicSpec(f"{settings.app_id}-monitor-state-changelog", settings.partitions,
                               {"cleanup.policy": "compact"}))
    return specs


def retrainer_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics the retrainer reads and writes."""
    names = {settings.topics.labelled, settings.topics.retrain, settings.topics.models}
    return [spec for spec in topic_specs(settings) if spec.name in names]


def ensure_topics(settings: Settings, timeout: float = 30.0, extra: Sequence[TopicSpec] = ()) -> list[str]:
    """Create the topics that are missing (Driftline's, and ``extra``); return their names.

    A topic that exists with another partition count is an error, because the
    worker would otherwise crash-loop on faust's PartitionsMismatch.
    """
    admin, existing = connect_admin(settings, timeout)
    # One spec per name: librdkafka crashes the process (SIGSEGV) when a CreateTopics request names a topic twice.
    specs = list({spec.name: spec for spec in [*topic_specs(settings), *extra]}.values())
    for spec in specs:
        meta = existing.get(spec.name)
        if meta is not None and len(meta.partitions) != spec.partitions:
            raise TopicError(
                f"topic {spec.name} has {len(meta.partitions)} partitions, Driftline expects {spec.partitions} "
                "(set DRIFTLINE_PARTITIONS to match, or use another DRIFTLINE_TOPIC_PREFIX)"
            )
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=settings.replication_factor, config=s.config)
         for s in missing],
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another worker created it first
            raise TopicError(f"could not create topic {name}: {exc}") from exc
    return created


def read_partition(settings: Settings, topic: str, partition: int, timeout: float = 60.0) -> list[tuple[bytes, bytes | None]]:
    """Every ``(key, value)`` of one partition, from its first offset to its end when called, in order."""
    return [(key, value) for _offset, key, value in read_partition_from(settings, topic, partition, None, timeout)]


def read_partition_from(settings: Settings, topic: str, partition: int, start: int | None,
                        timeout: float = 60.0, stop: int | None = None) -> list[tuple[int, bytes, bytes | None]]:
    """Every ``(offset, key, value)`` of one partition from ``start`` (None: its first offset) to its end when
    called (or to ``stop``, exclusive, if that comes first), in order."""
    # The end is signalled (partition EOF) rather than waited for: in a compacted topic the last offsets may be
    # gone, and waiting for a message at high - 1 would run to the timeout.
    consumer = _reader(settings)
    deadline = time.monotonic() + timeout
    try:
        low, high = watermark_offsets(consumer, TopicPartition(topic, partition), deadline)
        high = high if stop is None else min(high, stop)
        first = low if start is None else max(low, start)
        records: list[tuple[int, bytes, bytes | None]] = []
        if high <= first:
            return records
        consumer.assign([TopicPartition(topic, partition, first)])
        while time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=0.2):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    if message.offset() >= high:
                        return records
                    continue
                if error is not None:
                    raise TopicError(f"reading {topic}[{partition}]: {error}")
                if message.offset() < high:
                    records.append((message.offset(), message.key(), message.value()))
                if message.offset() >= high - 1:
                    return records
        raise TopicError(f"reading {topic}[{partition}] to offset {high} took over {timeout:.0f} s")
    except KafkaException as exc:
        raise TopicError(f"reading {topic}[{partition}]: {exc}") from exc
    finally:
        consumer.close()


def committed_offset(settings: Settings, group: str, topic: str, partition: int, timeout: float = 10.0) -> int | None:
    """The offset consumer group ``group`` has committed for one partition, None if none (asked, never joined)."""
    consumer = Consumer({**settings.confluent_config(), "group.id": group, "enable.auto.commit": False})
    try:
        [position] = consumer.committed([TopicPartition(topic, partition)], timeout=timeout)
    except KafkaException as exc:
        raise TopicError(f"reading the committed offset of {group} on {topic}[{partition}]: {exc}") from exc
    finally:
        consumer.close()
    return position.offset if position.offset >= 0 else None


#: What a client gets while it does not know the partition's leader yet (just started, or the broker restarting):
#: worth asking again until the deadline.  A worker taking a partition over during a broker restart got
#: "Local: Unknown partition" and its ingest stage exited.
_LEADER_UNKNOWN_YET = frozenset({KafkaError._UNKNOWN_PARTITION, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                 KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION})


def watermark_offsets(consumer: Any, partition: TopicPartition, deadline: float,
                      retry_seconds: float = 0.5) -> tuple[int, int]:
    """``consumer.get_watermark_offsets`` (low, high), asked again while the partition's leader is not known yet.

    Gives up (raises) at ``deadline`` (``time.monotonic()``), or at once on any other error.

    >>> class Starting:
    ...     calls = 0
    ...     def get_watermark_offsets(self, tp, timeout):
    ...         self.calls += 1
    ...         if self.calls < 3:
    ...             raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
    ...         return 0, 42
    >>> consumer = Starting()
    >>> watermark_offsets(consumer, TopicPartition("t", 0), time.monotonic() + 5, retry_seconds=0.01), consumer.calls
    ((0, 42), 3)
    >>> consumer = Starting()   # the deadline comes first
    >>> watermark_offsets(consumer, TopicPartition("t", 0), time.monotonic() + 0.05, retry_seconds=0.04)
    Traceback (most recent call last):
    ...
    cimpl.KafkaException: KafkaError{code=_UNKNOWN_PARTITION,val=-190,str="Local: Unknown partition"}
    """
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=max(deadline - time.monotonic(), 0.1))
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (isinstance(error, KafkaError) and error.code() in _LEADER_UNKNOWN_YET):
                raise
            if time.monotonic() + retry_seconds >= deadline:
                raise
            time.sleep(retry_seconds)


def partition_ends(settings: Settings, topic: str, timeout: float = 60.0) -> dict[int, int]:
    """Each partition of ``topic`` and its end offset (high watermark) now."""
    consumer = _reader(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise TopicError(f"topic {topic} is missing: {None if metadata is None else metadata.error}")
        deadline = time.monotonic() + timeout
        return {p: watermark_offsets(consumer, TopicPartition(topic, p), deadline)[1] for p in sorted(metadata.partitions)}
    except KafkaException as exc:
        raise TopicError(f"reading the end offsets of {topic}: {exc}") from exc
    finally:
        consumer.close()


def _reader(settings: Settings) -> Consumer:
    # assign() only, never a commit: the group id is one librdkafka requires, not a group that is joined.
    return Consumer({**settings.confluent_config(), "group.id": f"{settings.app_id}-reader",
                     "enable.auto.commit": False, "enable.partition.eof": True})
