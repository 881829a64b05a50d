"""Which source partitions still have unread messages: the ingest watermark must not overtake them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError
from faust.types import TP

from detectors.ingest.stage import RawRecord, Source
from schemas.events import Side
from streams.worker.messages import SourceRef

__all__ = ["SourceProgress"]


class SourceProgress:
    """Which source partitions still have unread messages, from the consumer's last fetched high-water marks.

    A partition is busy while its high-water mark is past the next offset this process will be handed: one
    past the last message read here, or, for a partition not read from since it was assigned, the consumer's
    position when it was first seen.  The second case matters at the start of traffic: the Kafka client
    drains its fetched partitions one after another (a whole fetch of one before the next), and faust
    buffers what it drained, so a partition can wait seconds, fetched but not handed over, behind another.
    Counting it busy keeps the watermark from overtaking it.  A partition never fetched is left to the
    quiet-period rule.
    """

    def __init__(self, side_of_topic: dict[str, Side]) -> None:
        self._side_of_topic = side_of_topic
        self._next_offset: dict[TP, int] = {}
        self._start_offset: dict[TP, int] = {}

    def note(self, records: Sequence[RawRecord[SourceRef]]) -> None:
        """Remember how far the source records handed to this process reach."""
        for record in records:
            tp = TP(record.ref.topic, record.ref.partition)
            self._next_offset[tp] = max(self._next_offset.get(tp, 0), record.ref.offset + 1)

    async def busy(self, consumer: Any) -> set[Source]:
        assigned = {TP(tp.topic, tp.partition) for tp in consumer.assignment() if tp.topic in self._side_of_topic}
        # A partition assigned again after a rebalance starts wherever the group left it, not where we did.
        for offsets in (self._next_offset, self._start_offset):
            for tp in [tp for tp in offsets if tp not in assigned]:
                del offsets[tp]
        busy: set[Source] = set()
        for tp in assigned:
            try:
                highwater = consumer.highwater(tp)
                next_offset = self._next_offset.get(tp, self._start_offset.get(tp))
                if next_offset is None:
                    next_offset = await consumer.position(tp)
                    if next_offset is not None:
                        self._start_offset[tp] = next_offset
            # The client asserts the partition is assigned; during a rebalance it may no longer be.
            except (AssertionError, KeyError, RuntimeError, KafkaError):
                continue
            if highwater is not None and next_offset is not None and highwater > next_offset:
                busy.add((self._side_of_topic[tp.topic], tp.partition))
        return busy
