"""JoinStage: every raw value read is processed, dead-lettered, expired or still pending."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.ingest.stage import JoinStage, RawRecord
from schemas.events import SIDES

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TTL = 60.0
MAX_BYTES = 512


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def pred_bytes(pid: str, t: float, prediction: object = "yes") -> bytes:
    return json.dumps(
        {"prediction_id": pid, "model": "m", "model_version": "1", "event_time": iso(t), "prediction": prediction}
    ).encode()


def out_bytes(pid: str, t: float, actual: object = "yes") -> bytes:
    return json.dumps({"prediction_id": pid, "event_time": iso(t), "actual": actual}).encode()


GARBAGE = [
    None,  # tombstone
    b"not json",
    b"x" * (MAX_BYTES + 1),
    b'{"prediction_id": "p"}',
    b'{"prediction_id": "p", "event_time": "2026-01-01T00:00:00Z", "actual": NaN}',
]


def check_accounting(stage: JoinStage[int]) -> None:
    # Per-side pending is not public; read it from the joiner to check each side on its own.
    pending = stage.pending_by_side()
    assert sum(pending.values()) == stage.n_pending
    for side in SIDES:
        assert stage.n_read[side] == (
            stage.n_processed[side] + stage.n_dead_lettered[side] + stage.n_expired[side] + pending[side]
        ), side


record_specs = st.one_of(
    st.tuples(st.just("pred"), st.integers(0, 15), st.integers(0, 400)),
    st.tuples(st.just("out"), st.integers(0, 15), st.integers(0, 400)),
    st.tuples(st.just("junk"), st.sampled_from(SIDES), st.integers(0, len(GARBAGE) - 1)),
)


def to_record(spec: tuple[object, object, object], ref: int) -> RawRecord[int]:
    kind, a, b = spec
    if kind == "pred":
        return RawRecord("prediction", pred_bytes(f"id{a}", float(b)), ref)  # type: ignore[arg-type]
    if kind == "out":
        return RawRecord("outcome", out_bytes(f"id{a}", float(b)), ref)  # type: ignore[arg-type]
    return RawRecord(a, GARBAGE[b], ref)  # type: ignore[arg-type,index]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(record_specs, max_size=25), max_size=10))
def test_every_value_is_accounted_for_and_idle_drains(batches: list[list[tuple[object, object, object]]]) -> None:
    stage: JoinStage[int] = JoinStage(ttl_seconds=TTL, max_event_bytes=MAX_BYTES, idle_seconds=5.0)
    ref = 0
    seen = {"labelled": 0, "dead": {s: 0 for s in SIDES}, "expired": {s: 0 for s in SIDES}}
    # Make sure each side has a clock, so that idling can drain both.
    batches = [*batches, [("pred", 99, 0), ("out", 98, 0)]]
    wall = 1000.0
    for batch in batches:
        records = []
        for spec in batch:
            records.append(to_record(spec, ref))
            ref += 1
        wall += 1.0
        out = stage.process(records, wall_time=wall)
        for example in out.labelled:
            assert example.prediction.prediction_id == example.outcome.prediction_id
        seen["labelled"] += len(out.labelled)
        for dead in out.dead_letters:
            seen["dead"][dead.record.side] += 1
        for item in out.expired:
            seen["expired"][item.side] += 1
        check_accounting(stage)
        # Joined examples are either released or held back for ordering.
        assert stage.n_processed["prediction"] == seen["labelled"] + stage.n_held
    assert stage.n_processed["prediction"] == stage.n_processed["outcome"]
    assert dict(seen["dead"]) == {s: stage.n_dead_lettered[s] for s in SIDES}
    assert stage.n_read["prediction"] + stage.n_read["outcome"] == ref

    # Not quiet long enough yet: idle changes nothing.
    pending_before = stage.n_pending
    assert stage.idle(wall + 1.0).expired == []
    assert stage.n_pending == pending_before
    # Quiet for longer than the TTL plus the whole event-time span: everything drains.
    out = stage.idle(wall + 10 * 400 + TTL)
    assert len(out.expired) == pending_before
    # Every source is quiet now, so nothing is held back for ordering either.
    seen["labelled"] += len(out.labelled)
    assert stage.n_held == 0
    assert stage.n_processed["prediction"] == seen["labelled"]
    for item in out.expired:
        seen["expired"][item.side] += 1
    assert stage.n_pending == 0
    check_accounting(stage)
    assert dict(seen["expired"]) == {s: stage.n_expired[s] for s in SIDES}


def test_duplicates_and_garbage_are_dead_lettered_with_kinds() -> None:
    stage: JoinStage[str] = JoinStage(ttl_seconds=TTL, max_event_bytes=MAX_BYTES)
    out = stage.process(
        [
            RawRecord("prediction", pred_bytes("a", 0), "p1"),
            RawRecord("prediction", pred_bytes("a", 0), "p2"),  # duplicate while pending
            RawRecord("outcome", out_bytes("a", 1), "o1"),
            RawRecord("outcome", out_bytes("a", 1), "o2"),  # duplicate after join
            RawRecord("outcome", None, "o3"),
            RawRecord("prediction", b"x" * (MAX_BYTES + 1), "p3"),
        ]
    )
    # Held for ordering until the prediction side passes the outcome's time; flush releases it.
    assert len(out.labelled) + len(stage.flush().labelled) == 1
    assert [(d.record.ref, d.rejection.kind) for d in out.dead_letters] == [
        ("p2", "duplicate"),
        ("o2", "duplicate"),
        ("o3", "schema"),
        ("p3", "oversized"),
    ]
    assert stage.n_read == {"prediction": 3, "outcome": 3}
    assert stage.n_processed == {"prediction": 1, "outcome": 1}
    assert stage.n_dead_lettered == {"prediction": 2, "outcome": 2}
    assert stage.n_pending == 0


def test_expiry_happens_at_the_end_of_the_batch_that_outdates() -> None:
    stage: JoinStage[str] = JoinStage(ttl_seconds=TTL, max_event_bytes=MAX_BYTES)
    stage.process([RawRecord("prediction", pred_bytes("a", 0), "p-a")])
    assert stage.process([RawRecord("outcome", out_bytes("b", TTL), "o-b")]).expired == []
    out = stage.process([RawRecord("outcome", out_bytes("c", TTL + 1), "o-c")])
    assert [(e.side, e.prediction_id, e.ref) for e in out.expired] == [("prediction", "a", "p-a")]
    assert stage.n_expired == {"prediction": 1}


def test_idle_waits_for_quiet_and_then_runs_event_time_on() -> None:
    stage: JoinStage[str] = JoinStage(ttl_seconds=TTL, max_event_bytes=MAX_BYTES, idle_seconds=5.0)
    stage.process(
        [RawRecord("prediction", pred_bytes("a", 100), "p-a"), RawRecord("outcome", out_bytes("b", 100), "o-b")],
        wall_time=0.0,
    )
    assert stage.n_pending == 2
    # Without a wall time on record, idle has nothing to go by.
    assert JoinStage(ttl_seconds=TTL, max_event_bytes=MAX_BYTES).idle(1e9).expired == []
    assert stage.idle(4.9).expired == []
    # Quiet, but event time has only moved on 30 s of the 60 s TTL.
    assert stage.idle(30.0).expired == []
    assert stage.n_pending == 2
    out = stage.idle(61.0)
    assert sorted((e.side, e.ref) for e in out.expired) == [("outcome", "o-b"), ("prediction", "p-a")]
    assert stage.n_pending == 0
    assert stage.n_expired == {"prediction": 1, "outcome": 1}


def test_new_traffic_restarts_the_quiet_period() -> None:
    stage: JoinStage[str] = JoinStage(ttl_seconds=TTL, max_event_bytes=MAX_BYTES, idle_seconds=5.0)
    stage.process([RawRecord("prediction", pred_bytes("a", 0), "p-a"), RawRecord("outcome", out_bytes("b", 0), "o-b")], wall_time=0.0)
    stage.process([RawRecord("prediction", pred_bytes("c", 1), "p-c"), RawRecord("outcome", out_bytes("d", 1), "o-d")], wall_time=50.0)
    # 61 s after the first batch but only 11 s after the last on both sides: event time runs on 11 s.
    assert stage.idle(61.0).expired == []
    assert stage.n_pending == 4


def test_a_quiet_outcome_side_expires_predictions_that_keep_flowing() -> None:
    stage: JoinStage[str] = JoinStage(ttl_seconds=TTL, max_event_bytes=MAX_BYTES, idle_seconds=5.0)
    stage.process([RawRecord("prediction", pred_bytes("a", 0), "p-a"), RawRecord("outcome", out_bytes("b", 0), "o-b")], wall_time=0.0)
    for wall in range(10, 70, 10):
        stage.process([RawRecord("prediction", pred_bytes(f"p{wall}", wall), f"p-{wall}")], wall_time=float(wall))
    # The outcome side has been quiet 61 s: its clock stands at 61, past a's deadline (60) only.
    expired = stage.idle(61.0).expired
    assert [(e.side, e.prediction_id) for e in expired] == [("prediction", "a")]

def test_idle_drains_when_only_predictions_ever_came() -> None:
    stage: JoinStage[str] = JoinStage(ttl_seconds=TTL, max_event_bytes=MAX_BYTES, idle_seconds=5.0)
    stage.process([RawRecord("prediction", pred_bytes("a", 0), "p-a")], wall_time=0.0)
    stage.idle(10_000.0)
    assert stage.n_pending == 0
