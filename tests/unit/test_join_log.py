"""The join's changelog: a crash anywhere in the log loses no waiting event and joins nothing twice."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from detectors.ingest.join_log import POSITION_KEY, JoinLog, PendingEntry, Record, rebuild
from detectors.ingest.stage import JoinStage, RawRecord

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TTL = 60.0
BATCH = 5


def _stream(seed: int, n: int = 40) -> list[RawRecord[int]]:
    """Predictions and outcomes of one partition in arrival order; offsets count per side (two topics)."""
    rng = random.Random(seed)
    timed: list[tuple[float, str, bytes]] = []
    for i in range(n):
        t = i * 5.0
        timed.append((t, "prediction", json.dumps({
            "prediction_id": f"p{i}", "model": "m", "model_version": "1", "prediction": 1,
            "event_time": (T0 + timedelta(seconds=t)).isoformat()}).encode()))
        if rng.random() < 0.8:  # the rest never get an outcome and expire
            delay = rng.uniform(-3, 20)  # an outcome may even come first
            timed.append((t + delay, "outcome", json.dumps({
                "prediction_id": f"p{i}", "actual": 1,
                "event_time": (T0 + timedelta(seconds=t + delay)).isoformat()}).encode()))
    timed.sort(key=lambda x: x[0])
    offsets = {"prediction": 0, "outcome": 0}
    records = []
    for _, side, value in timed:
        records.append(RawRecord(side, value, offsets[side], 0))  # type: ignore[arg-type]
        offsets[side] += 1
    return records


def _stage() -> JoinStage[int]:
    return JoinStage(TTL, 4096, hold_for_order=False, log_changes=True)


@dataclass
class _Run:
    log: list[Record] = field(default_factory=list)
    #: Per step: the log length once its entries were written (its outputs acknowledged), and its outputs.
    steps: list[tuple[int, list[str], list[str]]] = field(default_factory=list)
    pending: set[tuple[str, str]] = field(default_factory=set)


def _process(stage: JoinStage[int], log: JoinLog, records: list[RawRecord[int]], run: _Run) -> None:
    for start in range(0, len(records), BATCH):
        batch = records[start:start + BATCH]
        out = stage.process(batch)
        assert not out.dead_letters  # a record read again is never taken for a duplicate
        added, resolved = stage.take_changes().get(0, ([], []))
        offsets: dict[str, int] = {}
        for r in batch:
            offsets[r.side] = max(offsets.get(r.side, 0), r.ref + 1)
        step = log.step(0, [(side, pid, r.ref, r.value or b"") for side, pid, r in added], resolved, offsets,
                        stage.clocks(0))  # type: ignore[arg-type]
        run.log += step.entries
        joined = [e.prediction.prediction_id for e in out.labelled]
        expired = [f"{x.side}/{x.prediction_id}" for x in out.expired]
        run.steps.append((len(run.log), joined, expired))
        run.log += step.position


def _restart(prefix: list[Record], records: list[RawRecord[int]], run: _Run) -> None:
    """A new worker: rebuild from the changelog prefix, then read the source again from the start."""
    state = rebuild(prefix)
    stage, log = _stage(), JoinLog()
    log.resume(0, state)
    out = stage.restore(0, [RawRecord(e.side, e.value, e.offset, 0) for e in state.pending], state.clocks, 0.0)
    assert not out.labelled and not out.dead_letters
    _process(stage, log, [r for r in records if not state.is_replayed(r.side, r.ref)], run)
    run.pending = _pending_keys(stage)


def _pending_keys(stage: JoinStage[int]) -> set[tuple[str, str]]:
    joiner = stage._joiner(0)
    return {("prediction", p) for p in joiner._predictions} | {("outcome", p) for p in joiner._outcomes}


@pytest.mark.parametrize("seed", range(6))
def test_a_crash_anywhere_in_the_log_loses_nothing_and_joins_nothing_twice(seed: int) -> None:
    records = _stream(seed)
    straight = _Run()
    stage = _stage()
    _process(stage, JoinLog(max_resolved_per_record=2), records, straight)
    joined_straight = sorted(p for _, j, _ in straight.steps for p in j)
    expired_straight = sorted(x for _, _, e in straight.steps for x in e)
    assert expired_straight and len(joined_straight) > 20  # the stream exercises both
    for crash in range(len(straight.log) + 1):
        # Outputs of the steps whose entries were all written were acknowledged before the crash.
        before = [s for s in straight.steps if s[0] <= crash]
        after = _Run()
        _restart(straight.log[:crash], records, after)
        joined = sorted([p for _, j, _ in before for p in j] + [p for _, j, _ in after.steps for p in j])
        expired = sorted([x for _, _, e in before for x in e] + [x for _, _, e in after.steps for x in e])
        # A step cut short between its outputs and its position is done again: its outputs may repeat
        # (downstream drops them by id); any other repeat, and any loss, is a bug.
        cut_short = [s for s in before if not any(k == POSITION_KEY for k, _ in straight.log[s[0]:crash])]
        repeated = {p for _, j, _ in cut_short for p in j} | {x for _, _, e in cut_short for x in e}
        assert sorted(set(joined)) == joined_straight, crash
        assert sorted(set(expired)) == expired_straight, crash
        assert all(p in repeated for p in set(joined) if joined.count(p) > 1), crash
        assert all(x in repeated for x in set(expired) if expired.count(x) > 1), crash
        assert after.pending == _pending_keys(stage), crash


def test_rebuild_drops_entries_of_a_step_cut_short_and_keys_resolved_by_the_last_one() -> None:
    log = JoinLog()
    first = log.step(3, [("prediction", "a", 0, b"{}"), ("prediction", "b", 1, b"{}")], [], {"prediction": 2}, {})
    second = log.step(3, [("outcome", "c", 0, b"{}")], [("prediction", "a")], {"outcome": 1}, {})
    written = first.entries + first.position + second.entries + second.position
    assert {e.prediction_id for e in rebuild(written).pending} == {"b", "c"}
    # Cut before the second position: "c" is read again from the source, "a" is still waiting.
    state = rebuild(first.entries + first.position + second.entries)
    assert {e.prediction_id for e in state.pending} == {"a", "b"}
    assert state.is_replayed("prediction", 1) and not state.is_replayed("outcome", 0)
    assert state.pending[0] == PendingEntry("prediction", "a", 0, b"{}")


def test_a_step_resolving_many_keys_lists_them_in_several_records_and_the_next_step_tombstones_them() -> None:
    log = JoinLog(max_resolved_per_record=2)
    log.step(0, [("prediction", f"p{i}", i, b"{}") for i in range(5)], [], {"prediction": 5}, {})
    step = log.step(0, [], [("prediction", f"p{i}") for i in range(5)], {}, {})
    assert [k for k, _ in step.entries] == [b"resolved/0", b"resolved/1", b"resolved/2"]
    following = log.step(0, [], [("prediction", "p9")], {}, {})
    assert [k for k, v in following.entries if v is None] == [f"prediction/p{i}".encode() for i in range(5)]
    # The following step overwrites resolved/0 only; resolved/1 and /2 are stale and ignored.
    rebuilt = rebuild(step.entries + step.position + following.entries + following.position)
    assert rebuilt.resolved == [("prediction", "p9")] and rebuilt.pending == []


def test_a_stage_without_holding_sends_at_once_but_keeps_the_same_watermark() -> None:
    records = _stream(1)
    holding, passing = JoinStage(TTL, 4096, hold_for_order=True), JoinStage(TTL, 4096, hold_for_order=False)
    sent_at_once = 0
    for start in range(0, len(records), BATCH):
        held_out = holding.process(records[start:start + BATCH])
        passed_out = passing.process(records[start:start + BATCH])
        sent_at_once += len(passed_out.labelled) - len(held_out.labelled)
        assert holding.released_through == passing.released_through
        assert passing.n_held == 0
    assert sent_at_once > 0
