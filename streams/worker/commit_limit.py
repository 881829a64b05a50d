"""How far faust may commit the monitor-input partitions: no further than the monitor stage has acked.

Faust commits a partition up to the first run of consecutive acked offsets, and counts as acked the messages
its streams skip: those of an earlier consumer generation still buffered when a rebalance came, and those
read while flow is suspended (``Stream.__aiter__`` acks them "otherwise the lag would increase").  They are
read again after the rebalance, from the committed offset.  Yet ``Consumer._new_offset`` checks that the run
starts at the committed offset only when that offset is known and not 0, and then lets one unacked message
through (faust-streaming 0.15.3).  So on a partition that was never committed, the skipped messages' acks
could commit past every message the monitor still held unscored, and a kill -9 then lost them all: most
likely what lost ``test_kill_recovery.py`` 525 of 2,000 examples in one CI run (its last worker restored a
checkpoint at offset 30 and read nothing below the messages after it), though not reproduced here.

:class:`CommitLimit` is the monitor's own account of each partition, and ``streams.app``'s consumer commits
no further than it: the offset after the last message the monitor acked, which it does only once every item
of it, and of every message before it, is scored and checkpointed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from faust.types import TP

__all__ = ["CommitLimit"]

log = logging.getLogger(__name__)


class CommitLimit:
    """Per monitor-input partition of this assignment: the offset after the last message the monitor acked.

    >>> limit = CommitLimit("monitor-input")
    >>> limit.clamp(TP("monitor-input", 0), 15)   # faust's acks only, none of the monitor's: no commit
    >>> limit.advance(0, 5)
    >>> limit.clamp(TP("monitor-input", 0), 15), limit.clamp(TP("monitor-input", 0), 3)
    (5, 3)
    >>> limit.clamp(TP("another-topic", 0), 15), limit.clamp(TP("monitor-input", 0), None)
    (15, None)
    >>> limit.forget({0}); limit.clamp(TP("monitor-input", 0), 5)
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._acked_to: dict[int, int] = {}
        self.n_clamped = 0

    def advance(self, partition: int, next_offset: int) -> None:
        """The monitor acked the partition's messages below ``next_offset`` (in order, as it reads them)."""
        if next_offset > self._acked_to.get(partition, -1):
            self._acked_to[partition] = next_offset

    def forget(self, partitions: Collection[int]) -> None:
        """The partitions were revoked: in the next assignment they count from the monitor's first ack again."""
        for partition in partitions:
            self._acked_to.pop(partition, None)

    def clamp(self, tp: TP, offset: int | None) -> int | None:
        """The offset to commit for ``tp`` instead of faust's ``offset``: at most the monitor's, or none."""
        if offset is None or tp.topic != self.topic:
            return offset
        limit = self._acked_to.get(tp.partition)
        if limit is not None and offset <= limit:
            return offset
        self.n_clamped += 1
        log.info("faust would commit %s[%d] at %d, past the monitor's acks (%s): %s", tp.topic, tp.partition,
                 offset, limit, "not committed" if limit is None else f"committed at {limit}")
        return limit
