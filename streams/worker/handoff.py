"""Monitor-input batches handed from the ingest stage to the monitor stage of the same process, decoded.

With ``--role all`` one process writes a monitor-input message and then reads it back.  Decoding it again
cost the monitor stage more than anything else (pydantic validates every nested item: 7-20 µs an item,
about a fifth of the worker's time on the speech backlog).  The ingest stage built those items itself, so
it leaves them here, keyed by where the broker stored the message; the monitor stage takes them instead of
decoding, when the bytes it reads are the very bytes that were written.

Kafka stays the only path that counts: the message is still written, acknowledged, read and acked as
before, and anything not found here (another process wrote it, it was evicted, the worker restarted) is
decoded from its bytes.  Only partitions the local monitor stage reads are kept, and at most ``max_items``
items.  The ingest stage waits (a bounded time) for room before each read: in one process the two stages
share one interpreter lock, and an ingest stage running ahead would only make the monitor stage decode
what no longer fits, the slowest way through.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from schemas.events import MonitorBatch

__all__ = ["BatchHandoff"]


class BatchHandoff:
    """Decoded monitor-input batches by (partition, offset), for the local monitor stage to take.

    Thread-safe: the ingest thread puts (from its producer's delivery reports), the event loop takes.

    >>> handoff = BatchHandoff(max_items=10)
    >>> handoff.want(0)
    >>> batch = MonitorBatch(model="m")
    >>> handoff.put(0, 41, b"{...}", batch, n_items=1)
    >>> handoff.take(0, 41, b"{...}") is batch, handoff.take(0, 41, b"{...}")
    (True, None)
    >>> handoff.put(1, 7, b"{...}", batch, n_items=1)   # not read here: not kept
    >>> handoff.take(1, 7, b"{...}") is None
    True
    """

    def __init__(self, max_items: int = 50_000) -> None:
        self.max_items = max_items
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        # Per partition wanted here, by offset (delivery reports of a partition come in offset order).
        self._batches: dict[int, OrderedDict[int, tuple[bytes, MonitorBatch, int]]] = {}
        self._n_items = 0
        #: Batches taken instead of decoded, and those that were not found (decoded from their bytes).
        self.n_taken = 0
        self.n_missed = 0

    def wait_for_room(self, timeout: float) -> bool:
        """Wait until fewer than ``max_items`` items are kept, at most ``timeout`` seconds; False if still full.

        Bounded: a monitor stage that stopped reading (a rebalance, a stall) must not stop the ingest stage.
        """
        with self._room:
            return self._room.wait_for(lambda: self._n_items < self.max_items, timeout)

    def want(self, partition: int) -> None:
        """The local monitor stage reads this monitor-input partition now."""
        with self._lock:
            self._batches.setdefault(partition, OrderedDict())

    def drop(self, partition: int) -> None:
        """It no longer does: forget what was kept for it."""
        with self._lock:
            for _value, _batch, n_items in self._batches.pop(partition, {}).values():
                self._n_items -= n_items
            self._room.notify_all()

    def put(self, partition: int, offset: int, value: bytes, batch: MonitorBatch, n_items: int) -> None:
        """Keep ``batch``, the decoded form of ``value``, which the broker stored at ``offset``."""
        with self._lock:
            kept = self._batches.get(partition)
            # Full: keep the oldest, which the monitor stage reads first; the newer ones are decoded.
            if kept is None or self._n_items + n_items > self.max_items:
                return
            kept[offset] = (value, batch, n_items)
            self._n_items += n_items

    def take(self, partition: int, offset: int, value: bytes) -> MonitorBatch | None:
        """The batch kept for this message, if its bytes are the ones written; else None (decode them)."""
        found = None
        with self._lock:
            kept = self._batches.get(partition)
            # Those below it were read past (decoded, or skipped): they will never be taken.
            while kept and next(iter(kept)) <= offset:
                first, entry = kept.popitem(last=False)
                self._n_items -= entry[2]
                if first == offset:
                    found = entry
            self._room.notify_all()
        if found is None or found[0] != value:
            self.n_missed += 1
            return None
        self.n_taken += 1
        return found[1]
