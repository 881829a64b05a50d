"""OutcomeJoiner: either arrival order, duplicates, and TTL expiry on each side's own clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from detectors.exceptions import InvalidParameter
from detectors.ingest.join import Duplicate, Expired, IdsWithinHorizon, OutcomeJoiner
from schemas.events import LabelledExample, OutcomeEvent, PredictionEvent

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TTL = 60.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pred(pid: str, t: float, prediction: object = "yes") -> PredictionEvent:
    return PredictionEvent(prediction_id=pid, model="m", model_version="1", event_time=at(t), prediction=prediction)


def outc(pid: str, t: float, actual: object = "yes") -> OutcomeEvent:
    return OutcomeEvent(prediction_id=pid, event_time=at(t), actual=actual)


def test_prediction_first() -> None:
    j: OutcomeJoiner[str] = OutcomeJoiner(TTL)
    assert j.add_prediction(pred("a", 0, "yes"), "p-ref") is None
    assert j.n_pending == 1
    joined = j.add_outcome(outc("a", 5, "no"), "o-ref")
    assert isinstance(joined, LabelledExample)
    assert (joined.prediction.prediction, joined.outcome.actual) == ("yes", "no")
    assert j.n_pending == 0
    assert j.expire() == []


def test_outcome_first() -> None:
    j: OutcomeJoiner[str] = OutcomeJoiner(TTL)
    assert j.add_outcome(outc("a", 5, "no"), "o-ref") is None
    joined = j.add_prediction(pred("a", 0, "yes"), "p-ref")
    assert isinstance(joined, LabelledExample)
    assert joined.prediction.prediction_id == joined.outcome.prediction_id == "a"
    assert (joined.prediction.prediction, joined.outcome.actual) == ("yes", "no")
    assert j.n_pending == 0


def test_other_ids_do_not_join() -> None:
    j: OutcomeJoiner[int] = OutcomeJoiner(TTL)
    assert j.add_prediction(pred("a", 0), 1) is None
    assert j.add_outcome(outc("b", 0), 2) is None
    assert j.n_pending == 2


@pytest.mark.parametrize("side", ["prediction", "outcome"])
def test_duplicate_while_pending(side: str) -> None:
    j: OutcomeJoiner[int] = OutcomeJoiner(TTL)
    add = j.add_prediction if side == "prediction" else j.add_outcome
    event = pred("a", 0) if side == "prediction" else outc("a", 0)
    assert add(event, 1) is None  # type: ignore[arg-type]
    dup = add(event, 2)  # type: ignore[arg-type]
    assert dup == Duplicate(side, "a")  # type: ignore[arg-type]
    assert "duplicate" in dup.reason and "'a'" in dup.reason
    assert j.n_pending == 1


@pytest.mark.parametrize("side", ["prediction", "outcome"])
def test_duplicate_after_join(side: str) -> None:
    j: OutcomeJoiner[int] = OutcomeJoiner(TTL)
    assert j.add_prediction(pred("a", 0), 1) is None
    assert isinstance(j.add_outcome(outc("a", 1), 2), LabelledExample)
    again = j.add_prediction(pred("a", 0), 3) if side == "prediction" else j.add_outcome(outc("a", 1), 4)
    assert again == Duplicate(side, "a")  # type: ignore[arg-type]
    assert j.n_pending == 0


def test_joined_ids_are_forgotten_after_ttl_on_both_clocks() -> None:
    j: OutcomeJoiner[int] = OutcomeJoiner(TTL)
    j.add_prediction(pred("a", 0), 1)
    j.add_outcome(outc("a", 10), 2)
    # Only the prediction clock moves on: still remembered.
    j.add_prediction(pred("x", 500), 3)
    j.expire()
    assert isinstance(j.add_outcome(outc("a", 11), 9), Duplicate)
    # Now both clocks are past 10 + TTL: a redelivery is a fresh event again.
    j.add_outcome(outc("y", 500), 4)
    j.expire()
    assert j.add_outcome(outc("a", 11), 5) is None


def test_prediction_expires_on_the_outcome_clock_while_its_own_runs_less_than_two_ttls_ahead() -> None:
    j: OutcomeJoiner[str] = OutcomeJoiner(TTL)
    j.add_prediction(pred("a", 0), "ref-a")
    # The prediction clock racing ahead (a consumer reading ahead) expires nothing within two TTLs.
    j.add_prediction(pred("b", 2 * TTL), "ref-b")
    assert j.expire() == []
    assert j.n_pending == 2
    # Outcome clock exactly at the deadline: not yet.
    j.add_outcome(outc("z", TTL), "ref-z")
    assert j.expire() == []
    j.add_outcome(outc("z2", TTL + 0.001), "ref-z2")
    expired = j.expire()
    assert [(e.side, e.prediction_id, e.ref) for e in expired] == [("prediction", "a", "ref-a")]
    assert j.clock("prediction") == at(2 * TTL) and j.clock("outcome") == at(TTL + 0.001)


def test_outcome_expires_on_the_prediction_clock_while_its_own_runs_less_than_two_ttls_ahead() -> None:
    j: OutcomeJoiner[str] = OutcomeJoiner(TTL)
    j.add_outcome(outc("a", 0), "ref-a")
    j.add_outcome(outc("b", 2 * TTL), "ref-b")
    assert j.expire() == []
    j.add_prediction(pred("y", TTL + 0.001), "ref-y")
    expired = j.expire()
    assert [(e.side, e.prediction_id, e.ref) for e in expired] == [("outcome", "a", "ref-a")]


def test_advance_never_moves_a_clock_backwards() -> None:
    j: OutcomeJoiner[int] = OutcomeJoiner(TTL)
    assert j.clock("outcome") is None
    j.advance("outcome", at(100))
    j.advance("outcome", at(50))
    j.add_outcome(outc("a", 20), 1)
    assert j.clock("outcome") == at(100)


def test_expiry_in_deadline_order_and_complete() -> None:
    j: OutcomeJoiner[int] = OutcomeJoiner(TTL)
    for i, t in enumerate([30, 10, 20, 500]):
        j.add_prediction(pred(f"p{i}", t), i)
    j.advance("outcome", at(200))
    expired = j.expire()
    assert [e.prediction_id for e in expired] == ["p1", "p2", "p0"]
    assert [e.ref for e in expired] == [1, 2, 0]
    assert j.n_pending == 1


@pytest.mark.parametrize("ttl", [0, -1])
def test_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(InvalidParameter) as info:
        OutcomeJoiner(ttl)
    assert info.value.name == "ttl_seconds"


def test_memory_is_bounded_when_no_outcome_ever_arrives() -> None:
    """No partner clock ever moves: max_pending still bounds memory, and evictions are reported."""
    j: OutcomeJoiner[int] = OutcomeJoiner(TTL, max_pending=50)
    expired: list[Expired[int]] = []
    for i in range(1000):
        j.add_prediction(pred(f"p{i}", i * 10.0), i)
        expired.extend(j.expire())
        assert j.n_pending <= 50
    # The oldest go first, and every event is either pending or reported expired.
    assert [e.ref for e in expired] == list(range(950))
    assert j.n_pending + len(expired) == 1000


def test_max_pending_must_be_positive() -> None:
    with pytest.raises(InvalidParameter) as info:
        OutcomeJoiner(TTL, max_pending=0)
    assert info.value.name == "max_pending"



def test_expiry_is_exact_when_joined_deadlines_have_been_dropped() -> None:
    """10,000 predictions, 9 in 10 joined: the deadlines the joined ones leave behind are dropped on the way
    (they would otherwise stay a whole TTL), and exactly the unjoined ones still expire, on time."""
    j: OutcomeJoiner[int] = OutcomeJoiner(TTL)
    for i in range(10_000):
        t = i / 1000  # all within 10 s of event time
        j.add_prediction(pred(f"p{i}", t), i)
        if i % 10:
            assert isinstance(j.add_outcome(outc(f"p{i}", t), i), LabelledExample)
    assert j.n_pending == 1000
    j.add_outcome(outc("clock", 9.985 + TTL), -1)  # the outcome clock just short of the last deadline
    expired = j.expire()
    assert sorted(e.prediction_id for e in expired) == sorted(f"p{i}" for i in range(0, 9990, 10))  # not p9990
    j.add_outcome(outc("clock2", 10.5 + TTL), -2)
    assert [e.prediction_id for e in j.expire()] == ["p9990"]
    # Joined ids are still remembered as duplicates after all that.
    assert isinstance(j.add_outcome(outc("p1", 0.001), 0), Duplicate)


def test_ids_within_horizon_are_forgotten_by_bucket_and_never_early() -> None:
    ids = IdsWithinHorizon(timedelta(seconds=160), n_buckets=16)  # 10 s buckets
    for s in range(0, 100):
        ids.add(f"id{s}", at(s))
    assert len(ids) == 100 and all(f"id{s}" in ids for s in range(100)) and "id100" not in ids
    ids.forget_before(at(45))
    assert all(f"id{s}" in ids for s in range(40, 100))  # ids at or after the cutoff's bucket stay
    assert not any(f"id{s}" in ids for s in range(40))
