"""Champion/challenger promotion rules."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retrainer import LearnerSpec, OnlineModel, decide, evaluate, score

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
error = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
margin = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)


@given(champion=unit, challenger=unit, margin=margin, n=st.integers(1, 10_000))
def test_accuracy_promotes_exactly_when_the_win_exceeds_the_margin(champion: float, challenger: float, margin: float, n: int) -> None:
    result = decide(champion, challenger, metric="accuracy", margin=margin, n_holdout=n)
    assert result.promote == (challenger - champion > margin)
    assert (result.champion, result.challenger, result.n_holdout, result.margin) == (champion, challenger, n, margin)
    assert result.reason.startswith("promoted" if result.promote else "rejected")
    assert f"{n} held-out" in result.reason


@given(champion=error, challenger=error, margin=margin)
def test_mae_promotes_exactly_when_the_error_drops_by_more_than_the_margin(champion: float, challenger: float, margin: float) -> None:
    result = decide(champion, challenger, metric="mae", margin=margin, n_holdout=10)
    assert result.promote == (champion - challenger > margin)
    assert result.improvement == pytest.approx(champion - challenger)


@given(value=unit, margin=margin)
def test_a_tie_never_promotes(value: float, margin: float) -> None:
    assert not decide(value, value, metric="accuracy", margin=margin, n_holdout=1).promote


def test_reasons_say_why() -> None:
    worse = decide(0.9, 0.8, metric="accuracy", margin=0.0, n_holdout=100)
    assert not worse.promote and "no better than champion 0.9000" in worse.reason
    close = decide(0.80, 0.81, metric="accuracy", margin=0.02, n_holdout=100)
    assert not close.promote and "not more than the margin 0.0200" in close.reason
    better = decide(0.80, 0.90, metric="accuracy", margin=0.02, n_holdout=100)
    assert better.promote and "beats champion 0.8000" in better.reason


@pytest.mark.parametrize("bad", [dict(champion=float("nan")), dict(margin=-0.1), dict(n_holdout=0)])
def test_decide_rejects_bad_inputs(bad: dict[str, float]) -> None:
    args = dict(champion=0.5, challenger=0.6, margin=0.0, n_holdout=10) | bad
    with pytest.raises(ValueError):
        decide(args["champion"], args["challenger"], metric="accuracy", margin=args["margin"], n_holdout=int(args["n_holdout"]))


def _stream(rng: random.Random, n: int, flipped: bool) -> list[tuple[dict[str, float], bool]]:
    out = []
    for _ in range(n):
        a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
        out.append(({"a": a, "b": b}, (a - b > 0) != flipped))
    return out


def _trained(spec: LearnerSpec, data: list[tuple[dict[str, float], bool]]) -> OnlineModel:
    model = OnlineModel(spec)
    for x, y in data:
        model.learn_one(x, y)
    return model


@pytest.mark.parametrize("kind", ["logistic_regression", "adaptive_random_forest"])
def test_better_challenger_promoted_and_worse_rejected(kind: str) -> None:
    rng = random.Random(11)
    spec = LearnerSpec(kind=kind, promotion_margin=0.05)
    stale = _trained(spec, _stream(rng, 600, flipped=False))
    fresh = _trained(spec, _stream(rng, 600, flipped=True))
    recent = _stream(rng, 200, flipped=True)

    result = evaluate(stale, fresh, recent, spec)
    assert result.promote, result.reason
    assert result.challenger > 0.8 > 0.2 > result.champion

    reverse = evaluate(fresh, stale, recent, spec)
    assert not reverse.promote
    assert reverse.challenger == result.champion and reverse.champion == result.challenger


def test_margin_blocks_a_small_win() -> None:
    rng = random.Random(4)
    data = _stream(rng, 800, flipped=False)
    recent = _stream(rng, 300, flipped=False)
    spec = LearnerSpec(promotion_margin=0.0)
    champion, challenger = _trained(spec, data[:100]), _trained(spec, data)
    gap = score(challenger, recent) - score(champion, recent)
    assert gap > 0
    assert evaluate(champion, challenger, recent, spec).promote
    assert not evaluate(champion, challenger, recent, LearnerSpec(promotion_margin=gap + 0.001)).promote


def test_evaluation_changes_neither_model() -> None:
    rng = random.Random(8)
    spec = LearnerSpec()
    champion, challenger = _trained(spec, _stream(rng, 100, False)), _trained(spec, _stream(rng, 100, True))
    before = pickle.dumps(champion), pickle.dumps(challenger)
    # Unseen feature names: river would add zero entries for them if we scored the original.
    holdout = [({"a": 0.5, "never_seen": 1.0}, True), ({"b": -0.5, "other=x": 1.0}, False)]
    first = evaluate(champion, challenger, holdout, spec)
    assert (pickle.dumps(champion), pickle.dumps(challenger)) == before
    assert evaluate(champion, challenger, holdout, spec) == first


def test_an_untrained_classifier_scores_zero() -> None:
    assert score(OnlineModel(LearnerSpec()), [({"a": 1.0}, True)]) == 0.0
    with pytest.raises(ValueError):
        score(OnlineModel(LearnerSpec()), [])
