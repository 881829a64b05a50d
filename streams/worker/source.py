"""The ingest stage's reader of the source topics: a bulk confluent-kafka consumer, never faust's per-message loop.

Faust's per-message path costs about 200 µs of CPU a message on this project's machine, whatever its
settings; ``Consumer.consume(num_messages=...)`` hands over a whole batch from librdkafka in one call.  The
source topics get their own consumer group (``<app id>-ingest``).  Its assignor is ``range``, which gives
partition p of both topics to one member: the join needs a prediction and its outcome in one process.
(``cooperative-sticky`` balances partition counts only; seen here, after a second worker joined, one held
every predictions partition and the other every outcomes partition, and nothing would ever join.)
Assignments and revocations are handed to a listener from inside :meth:`SourceConsumer.poll`, between two
steps of the ingest, never during one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from detectors.ingest.stage import RawRecord, Source
from schemas.events import Side
from streams.settings import Settings
from streams.worker.messages import SourceRef

__all__ = ["SourceConsumer"]

log = logging.getLogger(__name__)
# The client's transient errors go with librdkafka's own lines, which repeat during an outage and are rate-limited.
kafka_log = logging.getLogger("streams.worker.kafka")

PartitionsAssigned = Callable[[set[int]], None]
#: Given the partitions lost, returns the records (of any partition) that may be committed before they go.
PartitionsRevoked = Callable[[set[int]], Sequence[RawRecord[SourceRef]]]


class SourceConsumer:
    """Reads the predictions and outcomes topics in bulk, and knows which of their partitions have unread messages.

    Parameters
    ----------
    settings
        Process settings: the broker, the topics, the batch size and timeout.
    on_assigned, on_revoked
        Called with the source partition numbers this consumer gains or loses (the two topics are
        co-partitioned: a partition number stands for both sides).  ``on_revoked`` returns the records to
        commit before the partitions go; a lost partition (the group moved on without us) is revoked too.
    """

    def __init__(self, settings: Settings, on_assigned: PartitionsAssigned, on_revoked: PartitionsRevoked) -> None:
        self.settings = settings
        topics = settings.topics
        self.side_of_topic: dict[str, Side] = {topics.predictions: "prediction", topics.outcomes: "outcome"}
        self._on_assigned, self._on_revoked = on_assigned, on_revoked
        # Per assigned (topic, partition): the next offset this process will be handed (committed, then read).
        self._next_offset: dict[tuple[str, int], int | None] = {}
        self._consumer = Consumer({
            **settings.confluent_config(),
            "group.id": settings.ingest_group,
            "partition.assignment.strategy": "range",
            # Offsets are committed after a step's outputs are acknowledged (see IngestService.step).
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(settings.broker_session_timeout * 1000),
            "logger": logging.getLogger("streams.worker.kafka"),
            # Static membership (see Settings.instance_id): the faust consumer's group is another, so one id
            # serves both.
            **({"group.instance.id": settings.instance_id} if settings.instance_id else {}),
        })
        self._consumer.subscribe(list(self.side_of_topic), on_assign=self._assigned, on_revoke=self._revoked,
                                 on_lost=self._lost)

    # -- rebalances (called from inside poll) ------------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp.topic in self.side_of_topic]
        if not mine:
            return
        by_topic = {topic: {tp.partition for tp in mine if tp.topic == topic} for topic in self.side_of_topic}
        if len({frozenset(p) for p in by_topic.values()}) != 1:
            # A prediction and its outcome would be joined in two processes, that is never.
            raise KafkaException(KafkaError(KafkaError._INCONSISTENT, f"source partitions not co-assigned: {by_topic}"))
        # Where the group left each partition: until a message of it is read, "unread" is judged from here.
        for tp in consumer.committed(mine, timeout=self.settings.broker_request_timeout):
            self._next_offset[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        log.info("source partitions %s assigned to this worker's ingest stage", sorted({tp.partition for tp in mine}))
        self._on_assigned({tp.partition for tp in mine})

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition], commit: bool = True) -> None:
        revoked = {tp.partition for tp in partitions if tp.topic in self.side_of_topic}
        for tp in partitions:
            self._next_offset.pop((tp.topic, tp.partition), None)
        if not revoked:
            return
        log.info("source partitions %s leave this worker's ingest stage", sorted(revoked))
        confirmed = self._on_revoked(revoked)
        try:
            if commit:
                # Synchronously: the next owner starts from the committed offsets.
                self.commit(confirmed, asynchronous=False)
        except KafkaException as exc:
            # Nothing is lost: the next owner reads those records again, and their changelog marks them replayed.
            log.warning("source consumer: commit on revocation failed: %s", exc)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us (a session timeout): the partitions may be someone else's already,
        # so their offsets are not ours to commit.
        lost = sorted({tp.partition for tp in partitions if tp.topic in self.side_of_topic})
        if lost:
            # Not a routine rebalance: the on-call engineer wants to see it (the next owner reads them again).
            log.warning("source partitions %s lost: the ingest group moved on without this worker (its session "
                        "timed out); their next owner reads what was not committed again", lost)
        self._revoked(consumer, partitions, commit=False)

    # -- reading ---------------------------------------------------------------

    def poll(self) -> list[RawRecord[SourceRef]]:
        """Up to ``batch_size`` source messages, waiting at most ``batch_seconds`` to fill the batch."""
        messages = self._consumer.consume(self.settings.batch_size, self.settings.batch_seconds)
        # Per message only what must be: this loop runs for every event read (a few µs each adds up).
        records: list[RawRecord[SourceRef]] = []
        last: dict[tuple[str, int], int] = {}
        side_of_topic = self.side_of_topic
        for m in messages:
            if m.error() is not None and not self._readable(m):
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            records.append(RawRecord(side_of_topic[topic], m.value(), SourceRef(topic, partition, offset, m.key()),
                                     partition))
            last[(topic, partition)] = offset  # in offset order within a partition
        for key, offset in last.items():
            self._next_offset[key] = max(self._next_offset.get(key) or 0, offset + 1)
        return records

    def _readable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.fatal():
            raise KafkaException(error)
        if error.code() != KafkaError._PARTITION_EOF:
            # Transient (a broker restarting, a leader moving): librdkafka retries by itself.
            kafka_log.warning("source consumer: %s", error)
        return False

    def commit(self, records: Sequence[RawRecord[SourceRef]], asynchronous: bool = True) -> None:
        """Commit past ``records``, whose outputs and changelog position are acknowledged.

        Asynchronously between steps: a commit lost in a crash only means more records read again, and the
        join's changelog position marks those as replayed (see :mod:`detectors.ingest.join_log`).
        """
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.ref.topic, record.ref.partition)
            offsets[key] = max(offsets.get(key, 0), record.ref.offset + 1)
        if offsets:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=asynchronous)

    # -- what is assigned, and what is unread -----------------------------------

    def owned(self) -> set[Source]:
        """The (side, partition) sources assigned to this consumer now."""
        # Kept by the rebalance callbacks (asking librdkafka for its assignment each step cost ~3% of the stage).
        return {(self.side_of_topic[topic], partition) for topic, partition in self._next_offset}

    def unread(self) -> dict[tuple[str, int], int]:
        """Unread messages per assigned (topic, partition): its high-water mark from the last fetch (no request)
        past the next offset this process will be handed.  A partition never fetched is left out."""
        unread = {}
        for (topic, partition), next_offset in self._next_offset.items():
            try:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            # Never committed: the group starts it at its earliest message (auto.offset.reset).
            start = next_offset if next_offset is not None else low
            if high != OFFSET_INVALID and start != OFFSET_INVALID:
                unread[(topic, partition)] = max(high - start, 0)
        return unread

    def caught_up(self) -> bool:
        """Whether every assigned source partition has been fetched and read to its high-water mark."""
        unread = self.unread()
        return bool(self._next_offset) and all(unread.get(key) == 0 for key in self._next_offset)

    def busy(self) -> set[Source]:
        """The assigned sources with unread messages; the others are left to the join's quiet-period rule."""
        return {(self.side_of_topic[topic], partition) for (topic, partition), n in self.unread().items() if n}

    def close(self) -> None:
        """Leave the group (its partitions are revoked first, so their step is handed over cleanly)."""
        self._consumer.close()

