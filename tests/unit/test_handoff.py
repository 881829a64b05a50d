"""The in-process handoff of decoded monitor-input batches: taken only for the very bytes written, bounded."""

from __future__ import annotations

from schemas.events import MonitorBatch
from streams.worker.handoff import BatchHandoff


def _batch(model: str) -> MonitorBatch:
    return MonitorBatch(model=model)


def test_a_batch_is_taken_once_and_only_for_the_bytes_written() -> None:
    handoff = BatchHandoff()
    handoff.want(0)
    kept = _batch("a")
    handoff.put(0, 5, b'{"model":"a"}', kept, n_items=3)
    assert handoff.take(0, 5, b'{"model":"b"}') is None  # other bytes at that offset: decode them instead
    assert handoff.take(0, 5, b'{"model":"a"}') is None  # and the entry is gone
    handoff.put(0, 6, b'{"model":"a"}', kept, n_items=3)
    assert handoff.take(0, 6, b'{"model":"a"}') is kept
    assert (handoff.n_taken, handoff.n_missed) == (1, 2)


def test_only_partitions_read_here_are_kept_and_dropping_one_forgets_it() -> None:
    handoff = BatchHandoff(max_items=10)
    handoff.put(0, 1, b"x", _batch("a"), n_items=4)  # not wanted yet
    handoff.want(0)
    handoff.put(0, 2, b"x", _batch("a"), n_items=4)
    handoff.drop(0)
    assert handoff.take(0, 2, b"x") is None
    handoff.want(0)
    # The dropped items no longer count against the bound.
    handoff.put(0, 3, b"x", _batch("a"), n_items=10)
    assert handoff.take(0, 3, b"x") is not None


def test_when_full_the_oldest_are_kept_and_the_skipped_are_released() -> None:
    handoff = BatchHandoff(max_items=10)
    handoff.want(1)
    for offset in range(4):
        handoff.put(1, offset, b"v%d" % offset, _batch("a"), n_items=4)  # the third and fourth do not fit
    # Reading offset 1 releases offset 0 (read past it, so never to be taken); offset 1 was kept.
    assert handoff.take(1, 1, b"v1") is not None
    assert handoff.take(1, 2, b"v2") is None  # it did not fit: decoded from its bytes
    handoff.put(1, 5, b"v5", _batch("a"), n_items=10)  # room again: nothing is held back
    assert handoff.take(1, 5, b"v5") is not None


def test_waiting_for_room_ends_when_a_batch_is_taken_or_after_the_timeout() -> None:
    import threading

    handoff = BatchHandoff(max_items=4)
    handoff.want(0)
    handoff.put(0, 1, b"v", _batch("a"), n_items=4)
    assert handoff.wait_for_room(timeout=0.05) is False  # full, and nobody takes
    taker = threading.Timer(0.05, lambda: handoff.take(0, 1, b"v"))
    taker.start()
    assert handoff.wait_for_room(timeout=5.0) is True
    taker.join()
