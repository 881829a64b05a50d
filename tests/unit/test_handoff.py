"""The in-process handoff of decoded monitor-input batches: taken only for the very bytes written, bounded."""

from __future__ import annotations

import threading

from schemas.events import MonitorBatch
from streams.worker.handoff import BatchHandoff


def _batch(model: str) -> MonitorBatch:
    return MonitorBatch(model=model)


def test_a_batch_is_taken_once_and_only_for_the_bytes_written() -> None:
    handoff = BatchHandoff()
    handoff.want(0)
    kept = _batch("a")
    key = handoff.put(0, b'{"model":"a"}', kept, n_items=3)
    assert key is not None
    assert handoff.take(0, key, b'{"model":"b"}') is None  # other bytes under that key: decode them instead
    assert handoff.take(0, key, b'{"model":"a"}') is None  # and the entry is gone
    key = handoff.put(0, b'{"model":"a"}', kept, n_items=3)
    assert handoff.take(0, None, b'{"model":"a"}') is None  # no header: written by someone else
    assert handoff.take(0, b"other-process-1", b'{"model":"a"}') is None
    assert handoff.take(0, key, b'{"model":"a"}') is kept
    assert (handoff.n_taken, handoff.n_missed) == (1, 4)


def test_keys_are_unique_to_a_handoff() -> None:
    first, second = BatchHandoff(), BatchHandoff()
    for handoff in (first, second):
        handoff.want(0)
    key = first.put(0, b"v", _batch("a"), n_items=1)
    assert key is not None and second.take(0, key, b"v") is None


def test_only_partitions_read_here_are_kept_and_dropping_one_forgets_it() -> None:
    handoff = BatchHandoff(max_items=10)
    assert handoff.put(0, b"x", _batch("a"), n_items=4) is None  # not wanted yet
    handoff.want(0)
    key = handoff.put(0, b"x", _batch("a"), n_items=4)
    handoff.drop(0)
    assert handoff.take(0, key, b"x") is None
    handoff.want(0)
    # The dropped items no longer count against the bound.
    key = handoff.put(0, b"x", _batch("a"), n_items=10)
    assert handoff.take(0, key, b"x") is not None


def test_when_full_the_oldest_are_kept_and_the_read_past_are_released() -> None:
    handoff = BatchHandoff(max_items=10)
    handoff.want(1)
    keys = [handoff.put(1, b"v%d" % i, _batch("a"), n_items=4) for i in range(4)]
    # The third passes the bound (12 > 10: a step may); the fourth finds it full: sent without a key, decoded.
    assert keys[2] is not None and keys[3] is None
    # Taking the second releases the first (read past it, so never to be taken).
    assert handoff.take(1, keys[1], b"v1") is not None
    assert handoff.take(1, keys[0], b"v0") is None
    assert handoff.take(1, keys[2], b"v2") is not None
    assert handoff.put(1, b"v5", _batch("a"), n_items=10) is not None  # room again: nothing is held back


def test_waiting_for_room_ends_when_a_batch_is_taken_or_after_the_timeout() -> None:
    handoff = BatchHandoff(max_items=4)
    handoff.want(0)
    key = handoff.put(0, b"v", _batch("a"), n_items=4)
    assert handoff.wait_for_room(timeout=0.05) is False  # full, and nobody takes
    taker = threading.Timer(0.05, lambda: handoff.take(0, key, b"v"))
    taker.start()
    assert handoff.wait_for_room(timeout=5.0) is True
    taker.join()
