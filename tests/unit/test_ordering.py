"""The reorderer releases in event-time order whatever the interleaving of time-ordered sources."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.exceptions import InvalidParameter
from detectors.ingest.ordering import EventTimeReorderer
from detectors.ingest.stage import JoinStage, RawRecord
from streams.scenarios import SpeechScenario

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=30), min_size=1, max_size=4),
    st.randoms(use_true_random=False),
)
def test_released_items_are_sorted_and_none_is_lost(gaps: list[list[int]], rnd: random.Random) -> None:
    # Each source emits increasing times; the sources are read in a random interleaving.
    sources = []
    for s, steps in enumerate(gaps):
        t, items = 0, []
        for g in steps:
            t += g
            items.append((s, t))
        sources.append(items)
    order = EventTimeReorderer[tuple[int, int]](idle_seconds=1e9)
    for s in range(len(sources)):
        order.expect(s, wall_time=0.0)
    cursors = [0] * len(sources)
    released: list[tuple[int, int]] = []
    while any(c < len(src) for c, src in zip(cursors, sources)):
        s = rnd.choice([i for i, src in enumerate(sources) if cursors[i] < len(src)])
        item = sources[s][cursors[s]]
        cursors[s] += 1
        order.observe(s, T0 + timedelta(seconds=item[1]), wall_time=0.0)
        order.push(T0 + timedelta(seconds=item[1]), f"{item[0]}-{cursors[s]:04d}", item)
        released.extend(order.release(wall_time=0.0))
        mark = order.watermark(0.0)
        # Nothing at or before the watermark is still held.
        assert mark is None or all(entry[0] > mark for entry in order._heap)  # noqa: SLF001
    released.extend(order.flush())
    times = [t for _, t in released]
    assert times == sorted(times)
    assert sorted(released) == sorted(item for src in sources for item in src)


def test_a_quiet_source_stops_holding_the_watermark_back() -> None:
    order = EventTimeReorderer[str](idle_seconds=5)
    order.observe("slow", T0, wall_time=0.0)
    order.observe("fast", T0 + timedelta(seconds=100), wall_time=0.0)
    order.push(T0 + timedelta(seconds=50), "x", "x")
    assert order.release(wall_time=4.0) == []
    order.observe("fast", T0 + timedelta(seconds=101), wall_time=6.0)
    assert order.release(wall_time=6.0) == ["x"]


def test_max_buffered_bounds_memory_and_releases_the_oldest() -> None:
    order = EventTimeReorderer[int](idle_seconds=5, max_buffered=3)
    order.observe("stuck", T0, wall_time=0.0)
    for i in range(5):
        order.push(T0 + timedelta(seconds=10 + i), f"{i}", i)
    assert order.release(wall_time=0.0) == [0, 1]
    assert order.n_buffered == 3


@pytest.mark.parametrize(("name", "kwargs"), [("idle_seconds", {"idle_seconds": 0}), ("max_buffered", {"max_buffered": 0})])
def test_bad_parameters_are_named(name: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidParameter) as info:
        EventTimeReorderer(**kwargs)
    assert info.value.name == name


def test_an_expected_source_holds_everything_until_it_delivers_or_goes_quiet() -> None:
    order = EventTimeReorderer[str](idle_seconds=5)
    order.expect("late", wall_time=0.0)
    order.observe("early", T0 + timedelta(seconds=10), wall_time=0.0)
    order.push(T0 + timedelta(seconds=10), "a", "a")
    assert order.release(wall_time=1.0) == []
    order.observe("early", T0 + timedelta(seconds=11), wall_time=6.0)
    assert order.release(wall_time=6.0) == ["a"]


def _two_partition_backlog(n: int = 4000) -> dict[str, list[RawRecord[int]]]:
    streams: dict[str, list[RawRecord[int]]] = {"P0": [], "P1": [], "O0": [], "O1": []}
    for i, (p, o) in enumerate(SpeechScenario(n_events=n, change_at=n).events()):
        part = i % 2
        streams[f"P{part}"].append(RawRecord("prediction", p.model_dump_json().encode(), i, part))
        streams[f"O{part}"].append(RawRecord("outcome", o.model_dump_json().encode(), i, part))
    return streams


@pytest.mark.parametrize("order", [["P0", "P1", "O0", "O1"], ["O0", "O1", "P0", "P1"], ["P0", "O0", "P1", "O1"]])
@pytest.mark.parametrize("with_lag", [True, False])
def test_a_backlog_read_one_partition_after_another_loses_nothing(order: list[str], with_lag: bool) -> None:
    """A consumer may read whole partitions one after another; one wall second per batch of 500.

    With lag information (which sources still have unread messages) the output
    is also in event-time order; without it, quiet sources stop holding the
    watermark after idle_seconds, so order is best effort, but nothing expires.
    """
    streams = _two_partition_backlog()
    remaining = {name: len(records) for name, records in streams.items()}
    source = {name: ("prediction" if name[0] == "P" else "outcome", int(name[1])) for name in streams}
    stage: JoinStage[int] = JoinStage(ttl_seconds=600, max_event_bytes=65536, idle_seconds=5)
    stage.expect_partitions([0, 1], wall_time=0.0)
    wall, released = 0.0, []
    for name in order:
        records = streams[name]
        for k in range(0, len(records), 500):
            wall += 1.0
            remaining[name] -= len(records[k : k + 500])
            busy = {source[n] for n, left in remaining.items() if left > 0} if with_lag else set()
            released += stage.process(records[k : k + 500], wall_time=wall, busy=busy).labelled  # type: ignore[arg-type]
            released += stage.idle(wall, busy=busy).labelled  # type: ignore[arg-type]
    released += stage.idle(wall + 100).labelled
    assert sum(stage.n_expired.values()) == 0
    assert len(released) == 4000
    if with_lag:
        times = [e.outcome.event_time for e in released]
        assert times == sorted(times)


def test_grace_holds_young_items_only_while_a_source_is_quiet() -> None:
    t = lambda s: datetime(2026, 1, 1, 0, 0, s, tzinfo=timezone.utc)  # noqa: E731
    r: EventTimeReorderer[str] = EventTimeReorderer(idle_seconds=5, grace_seconds=2)
    r.expect("quiet", wall_time=0.0)
    r.observe("busy", t(10), wall_time=10.0)
    r.push(t(8), "a", "a@8", wall_time=10.0)
    assert r.release(wall_time=10.5) == [] and r.released_through is None  # "quiet" may be about to speak
    r.observe("quiet", t(7), wall_time=11.0)
    r.push(t(7), "b", "b@7", wall_time=11.0)
    assert r.release(wall_time=11.0) == ["b@7"]  # every source active: no grace needed
    r.observe("quiet", t(20), wall_time=11.5)
    assert r.release(wall_time=11.5) == ["a@8"]
    # All active and the watermark past it: released at once, however young.
    r.push(t(9), "c", "c@9", wall_time=11.6)
    assert r.release(wall_time=11.6) == ["c@9"]
    # "quiet" goes quiet again: a young item waits out the grace, then leaves.
    r.push(t(10), "d", "d@10", wall_time=17.0)
    assert r.release(wall_time=17.0) == [] and r.release(wall_time=19.1) == ["d@10"]


def test_with_a_quiet_source_the_watermark_lags_the_grace_period() -> None:
    """Nothing held is no licence to jump: a quiet source may be about to speak of earlier times.

    The bug this guards: with nothing held the watermark moved straight to the active source's clock, so
    the quiet source's first events, 0.4 s later in wall time, all counted as late.
    """
    t = lambda s: datetime(2026, 1, 1, 0, 0, s, tzinfo=timezone.utc)  # noqa: E731
    r: EventTimeReorderer[str] = EventTimeReorderer(idle_seconds=5, grace_seconds=2)
    r.expect("quiet", wall_time=0.0)
    r.observe("fast", t(30), wall_time=10.0)  # a source that has raced ahead, nothing of it held here
    assert r.release(wall_time=10.0) == [] and r.released_through is None
    r.observe("quiet", t(1), wall_time=10.4)
    r.push(t(1), "a", "a@1", wall_time=10.4)
    assert r.n_late == 0
    assert r.release(wall_time=10.4) == ["a@1"] and r.released_through == t(1)
    # "quiet" goes quiet again while "fast" runs on: the watermark follows "fast" once its clock has stood
    # for the grace period.
    r.observe("fast", t(40), wall_time=20.0)
    r.push(t(3), "b", "b@3", wall_time=20.0)
    assert r.release(wall_time=20.0) == [] and r.released_through == t(1)
    assert r.release(wall_time=22.1) == ["b@3"] and r.released_through == t(40)


def test_predictions_alone_move_the_watermark_while_a_partition_is_quiet() -> None:
    """No outcomes at all (a model whose labels never come) must not stall the stage's watermark."""
    stage: JoinStage[int] = JoinStage(ttl_seconds=3600, max_event_bytes=4096, idle_seconds=5, grace_seconds=2)
    stage.expect_partitions([0, 1], wall_time=0.0)
    released = []
    for i in range(10):
        value = (f'{{"prediction_id": "p{i}", "model": "m", "model_version": "1", '
                 f'"event_time": "2026-01-01T00:00:{i:02d}Z", "prediction": 1}}').encode()
        out = stage.process([RawRecord("prediction", value, i, partition=0)], wall_time=10.0 + i)
        released += [p.prediction_id for p in out.predictions]
    assert released == [f"p{i}" for i in range(8)]  # the watermark as it stood 2 s (wall clock) ago
    assert stage.released_through == datetime(2026, 1, 1, 0, 0, 7, tzinfo=timezone.utc)


def test_the_end_of_a_burst_is_let_through_once_every_source_is_read_to_its_end_and_settled() -> None:
    """A slow partition's clock holds the watermark back; when traffic stops, settle_seconds, not idle_seconds."""
    t = lambda s: datetime(2026, 1, 1, 0, 0, s, tzinfo=timezone.utc)  # noqa: E731
    r: EventTimeReorderer[str] = EventTimeReorderer(idle_seconds=5, grace_seconds=2, settle_seconds=0.5)
    r.observe("slow", t(3), wall_time=10.0)
    r.observe("fast", t(9), wall_time=10.0)
    r.push(t(8), "a", "a@8", wall_time=10.0)
    assert r.release(wall_time=10.0, caught_up=True) == []      # just read: the slow one may have more
    assert r.release(wall_time=10.4, caught_up=True) == []      # not quiet long enough yet
    assert r.release(wall_time=10.6, caught_up=False) == []     # quiet, but unread messages wait somewhere
    assert r.release(wall_time=10.6, caught_up=True) == ["a@8"]  # no grace: everything has been read
    assert r.released_through == t(9)


def test_settling_needs_every_source_quiet_and_is_off_by_default() -> None:
    t = lambda s: datetime(2026, 1, 1, 0, 0, s, tzinfo=timezone.utc)  # noqa: E731
    settling: EventTimeReorderer[str] = EventTimeReorderer(idle_seconds=5, settle_seconds=0.5)
    waiting: EventTimeReorderer[str] = EventTimeReorderer(idle_seconds=5)
    for r in (settling, waiting):
        r.observe("slow", t(3), wall_time=10.0)
        r.observe("fast", t(9), wall_time=11.0)  # spoke 0.2 s ago at 11.2
        r.push(t(8), "a", "a@8", wall_time=11.0)
    assert settling.release(wall_time=11.2, caught_up=True) == []
    assert settling.release(wall_time=11.5, caught_up=True) == ["a@8"]
    assert waiting.release(wall_time=11.5, caught_up=True) == []   # None: a stall rule only
    assert waiting.release(wall_time=15.1, caught_up=True) == ["a@8"]  # slow quiet 5 s


def test_settle_seconds_must_be_positive() -> None:
    with pytest.raises(InvalidParameter, match="settle_seconds"):
        EventTimeReorderer(settle_seconds=0)


def test_a_source_settled_upstream_holds_nothing_back_until_it_speaks_again() -> None:
    """An ingest worker that has read its partitions to their end says so: the merge need not wait them out."""
    t = lambda s: datetime(2026, 1, 1, 0, 0, s, tzinfo=timezone.utc)  # noqa: E731
    r: EventTimeReorderer[str] = EventTimeReorderer(idle_seconds=5, grace_seconds=2)
    r.observe("done", t(5), wall_time=0.0, settled=True)
    r.observe("busy", t(9), wall_time=0.0)
    r.push(t(8), "a", "a@8", wall_time=0.0)
    # "done" is settled at 5 s, so only "busy" (at 9 s) bounds the watermark; a settled source still lags it
    # the grace period (it may start again), but no longer for the idle period.
    assert r.release(wall_time=0.0) == [] and r.release(wall_time=2.1) == ["a@8"]
    # Both settled: what is held leaves at once, without the grace a merely quiet source would get.
    r.observe("busy", t(12), wall_time=3.0, settled=True)
    r.push(t(11), "b", "b@11", wall_time=3.0)
    assert r.release(wall_time=3.0) == ["b@11"]
    # "done" speaks again, unsettled: it holds the watermark back as any active source does.
    r.observe("done", t(6), wall_time=4.0)
    r.observe("busy", t(20), wall_time=4.0)
    r.push(t(13), "c", "c@13", wall_time=4.0)
    assert r.release(wall_time=4.0) == []
    r.observe("done", t(14), wall_time=4.5)
    assert r.release(wall_time=4.5) == ["c@13"]


def test_a_source_only_quiet_still_waits_out_the_grace_when_the_others_are_settled() -> None:
    t = lambda s: datetime(2026, 1, 1, 0, 0, s, tzinfo=timezone.utc)  # noqa: E731
    r: EventTimeReorderer[str] = EventTimeReorderer(idle_seconds=5, grace_seconds=2)
    r.expect("silent", wall_time=0.0)
    r.observe("done", t(5), wall_time=0.0, settled=True)
    r.push(t(4), "a", "a@4", wall_time=6.0)
    # "silent" is idle (6 s) but never said it was settled: the item waits out the grace.
    assert r.release(wall_time=6.0) == [] and r.release(wall_time=8.1) == ["a@4"]
