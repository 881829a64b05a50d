"""LearnerSpec validation, feature conversion and progressive validation of OnlineModel."""

from __future__ import annotations

import math
import pickle
import random
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from river import evaluate, forest, linear_model, metrics, multiclass, preprocessing

from retrainer import BadExample, LearnerSpec, OnlineModel, example_to_xy, features_to_x
from schemas.events import LabelledExample, OutcomeEvent, PredictionEvent

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
KINDS = [
    "logistic_regression",
    "adaptive_random_forest",
    "hoeffding_adaptive_tree_classifier",
    "hoeffding_adaptive_tree_regressor",
    "linear_regression",
]


def _error_locs(exc: ValidationError) -> list[tuple[object, ...]]:
    return [tuple(e["loc"]) for e in exc.errors()]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_builds_and_learns(kind: str) -> None:
    spec = LearnerSpec(kind=kind)
    model = OnlineModel(spec)
    rng = random.Random(0)
    for _ in range(50):
        a = rng.uniform(-1, 1)
        model.learn_one({"a": a}, a > 0 if spec.task == "classification" else 3 * a)
    assert model.n_learned == 50
    # The target follows the sign of `a` (a > 0, or 3a): 50 examples are enough for every kind to get the sign.
    if spec.task == "classification":
        assert model.predict({"a": 0.5}) is True and model.predict({"a": -0.5}) is False
    else:
        assert model.predict({"a": 0.5}) > 0 > model.predict({"a": -0.5})
    assert math.isfinite(model.progressive_metric)


def test_unknown_field_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        LearnerSpec.model_validate({"kind": "logistic_regression", "promotion_marign": 0.1})
    assert ("promotion_marign",) in _error_locs(info.value)


def test_bad_learner_param_is_named_at_validation() -> None:
    with pytest.raises(ValidationError) as info:
        LearnerSpec.model_validate({"kind": "adaptive_random_forest", "params": {"n_modles": 3}})
    assert ("params",) in _error_locs(info.value)
    assert "n_modles" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("kind", "svm"), ("promotion_margin", -0.1), ("holdout_size", 0), ("min_training_examples", 0), ("warm_start", "maybe")],
)
def test_out_of_range_values_are_named(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        LearnerSpec.model_validate({field: value})
    assert (field,) in _error_locs(info.value)


def test_spec_is_frozen() -> None:
    spec = LearnerSpec()
    with pytest.raises(ValidationError):
        spec.promotion_margin = 0.5  # type: ignore[misc]


def test_task_and_metric_follow_kind() -> None:
    assert (LearnerSpec(kind="adaptive_random_forest").metric, LearnerSpec(kind="linear_regression").metric) == ("accuracy", "mae")
    assert LearnerSpec(kind="hoeffding_adaptive_tree_regressor").task == "regression"


feature_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(min_size=0, max_size=8),
)


@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: "=" not in s), feature_values, max_size=20))
def test_features_to_x_is_numeric_and_complete(features: dict[str, object]) -> None:
    x = features_to_x(features)  # type: ignore[arg-type]
    assert all(isinstance(v, float) and math.isfinite(v) for v in x.values())
    for name, value in features.items():
        if value is None:
            assert name not in x and not any(k.startswith(f"{name}=") for k in x)
        elif isinstance(value, bool):
            assert x[name] == (1.0 if value else 0.0)
        elif isinstance(value, str):
            assert x[f"{name}={value}"] == 1.0 and name not in x
        else:
            assert x[name] == float(value)  # type: ignore[arg-type]


def _example(features: dict[str, object], actual: object) -> LabelledExample:
    p = PredictionEvent(prediction_id="p", model="m", model_version="1", event_time=T0, features=features, prediction=0)  # type: ignore[arg-type]
    return LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id="p", event_time=T0, actual=actual))  # type: ignore[arg-type]


def test_example_to_xy_by_task() -> None:
    ex = _example({"flag": False, "colour": "red", "gone": None}, True)
    assert example_to_xy(ex, "classification") == ({"flag": 0.0, "colour=red": 1.0}, True)
    assert example_to_xy(ex, "regression") == ({"flag": 0.0, "colour=red": 1.0}, 1.0)
    with pytest.raises(BadExample):
        example_to_xy(_example({}, "cat"), "regression")


def test_progressive_metric_matches_rivers_progressive_val_score() -> None:
    """Our learn-one-at-a-time loop must give the same number as river's own evaluator."""
    rng = random.Random(5)
    data = []
    for _ in range(400):
        a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
        data.append(({"a": a, "b": b}, rng.random() < (0.9 if a + 0.3 * b > 0 else 0.1)))
    ours = OnlineModel(LearnerSpec(kind="logistic_regression"))
    for x, y in data:
        ours.learn_one(x, y)
    reference = preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression())
    expected = evaluate.progressive_val_score(data, reference, metrics.Accuracy())
    assert ours.progressive_metric == pytest.approx(expected.get())
    assert 0.75 < ours.progressive_metric < 0.95


def test_seeded_forest_is_reproducible_and_pickles() -> None:
    rng = random.Random(2)
    data = [({"a": (a := rng.uniform(-1, 1)), "b": rng.uniform(-1, 1)}, a > 0) for _ in range(300)]
    one, two = OnlineModel(LearnerSpec(kind="adaptive_random_forest")), OnlineModel(LearnerSpec(kind="adaptive_random_forest"))
    for x, y in data:
        one.learn_one(x, y)
        two.learn_one(x, y)
    assert isinstance(one.pipeline, forest.ARFClassifier)
    assert one.progressive_metric == two.progressive_metric
    restored = pickle.loads(pickle.dumps(one))
    probes = [{"a": rng.uniform(-1, 1), "b": 0.0} for _ in range(50)]
    assert [restored.predict_one(p) for p in probes] == [one.predict_one(p) for p in probes]


def test_copy_is_independent() -> None:
    model = OnlineModel(LearnerSpec())
    model.learn_one({"a": 1.0}, True)
    clone = model.copy()
    clone.learn_one({"a": -1.0}, False)
    assert (model.n_learned, clone.n_learned) == (1, 2)
