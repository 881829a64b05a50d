"""Monitor-input batches handed from the ingest stage to the monitor stage of the same process, decoded.

With ``--role all`` one process writes a monitor-input message and then reads it back.  Decoding it again
cost the monitor stage more than anything else (pydantic validates every nested item: 7-20 µs an item,
about a fifth of the worker's time on the speech backlog).  The ingest stage built those items itself, so
it leaves them here, under a key it also puts in the message's ``driftline_handoff`` header (before the
message is produced: a delivery report would come too late, the monitor stage may read the message
first); the monitor stage takes them instead of decoding, when the bytes it reads are the very bytes that
were written.

Kafka stays the only path that counts: the message is still written, acknowledged, read and acked as
before, and anything not found here (another process wrote it, it was evicted, the worker restarted) is
decoded from its bytes.  Only partitions the local monitor stage reads are kept, and at most ``max_items``
items.  The ingest stage waits (a bounded time) for room before each read: in one process the two stages
share one interpreter lock, and an ingest stage running ahead would only make the monitor stage decode
what no longer fits, the slowest way through.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from schemas.events import MonitorBatch

__all__ = ["HANDOFF_HEADER", "BatchHandoff", "handoff_key"]

#: The header under which a monitor-input message carries its handoff key.
HANDOFF_HEADER = "driftline_handoff"


def handoff_key(headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None) -> bytes | None:
    """The handoff key among a message's headers (pairs, or a mapping), if any.

    >>> handoff_key([("a", b"1"), (HANDOFF_HEADER, b"k")]), handoff_key({HANDOFF_HEADER: b"k"}), handoff_key(None)
    (b'k', b'k', None)
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name == HANDOFF_HEADER:
            return value
    return None


class BatchHandoff:
    """Decoded monitor-input batches by partition and key, for the local monitor stage to take.

    Thread-safe: the ingest thread puts, the event loop takes.

    >>> handoff = BatchHandoff(max_items=10)
    >>> handoff.want(0)
    >>> batch = MonitorBatch(model="m")
    >>> key = handoff.put(0, b"{...}", batch, n_items=1)
    >>> handoff.take(0, key, b"{...}") is batch, handoff.take(0, key, b"{...}")
    (True, None)
    >>> handoff.put(1, b"{...}", batch, n_items=1) is None   # partition not read here: not kept
    True
    """

    def __init__(self, max_items: int = 50_000) -> None:
        self.max_items = max_items
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        # Per partition wanted here, by key, in the order they were produced (the order they are read in).
        self._batches: dict[int, OrderedDict[bytes, tuple[bytes, MonitorBatch, int]]] = {}
        # Keys unique to this process: another's messages (or this one's before a restart) never match.
        self._prefix = b"%d-%s-" % (os.getpid(), os.urandom(4).hex().encode())
        self._sequence = itertools.count()
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

    def put(self, partition: int, value: bytes, batch: MonitorBatch, n_items: int) -> bytes | None:
        """Keep ``batch``, the decoded form of ``value``, to be produced to ``partition``: the key to send in
        its :data:`HANDOFF_HEADER`, or None when it is not kept (its partition is not read here, or full)."""
        with self._lock:
            kept = self._batches.get(partition)
            # Full: keep the oldest, which the monitor stage reads first; the newer ones are decoded.  (A step's
            # batches may pass the bound by one step: the ingest stage waits for room before each read.)
            if kept is None or self._n_items >= self.max_items:
                return None
            key = self._prefix + str(next(self._sequence)).encode()
            kept[key] = (value, batch, n_items)
            self._n_items += n_items
            return key

    def take(self, partition: int, key: bytes | None, value: bytes) -> MonitorBatch | None:
        """The batch kept under ``key`` if ``value`` is the bytes written; else None (decode them)."""
        found = None
        with self._lock:
            kept = self._batches.get(partition)
            if key is not None and kept is not None and key in kept:
                # Those before it were read past (decoded, or skipped): they will never be taken.
                while kept:
                    first, entry = kept.popitem(last=False)
                    self._n_items -= entry[2]
                    if first == key:
                        found = entry
                        break
                self._room.notify_all()
        if found is None or found[0] != value:
            self.n_missed += 1
            return None
        self.n_taken += 1
        return found[1]
