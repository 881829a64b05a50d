"""The online model that wraps a LearnerSpec's river pipeline, and how an event becomes its ``x`` and ``y``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from river import metrics

from retrainer.config import LearnerSpec
from retrainer.estimators import Task, make_estimator
from retrainer.exceptions import BadExample
from schemas.events import FeatureValue, Label, LabelledExample

__all__ = ["OnlineModel", "example_to_xy", "features_to_x", "target"]


def features_to_x(features: Mapping[str, FeatureValue]) -> dict[str, float]:
    """Turn an event's features into river's numeric ``x``.

    Booleans become 0 or 1, numbers become floats, a string becomes a one-hot
    key ``"name=value"`` set to 1, and ``None`` (missing) is left out, which
    river's learners treat as absent.

    Examples
    --------
    >>> features_to_x({"snr_db": 21, "noisy": True, "accent": "en-GB", "age": None})
    {'snr_db': 21.0, 'noisy': 1.0, 'accent=en-GB': 1.0}
    """
    x: dict[str, float] = {}
    for name, value in features.items():
        if value is None:
            continue
        if isinstance(value, str):
            x[f"{name}={value}"] = 1.0
        else:
            x[name] = float(value)
    return x


def target(actual: Label, task: Task) -> Label:
    """The learning target of an outcome: the label itself, or a float to regress on.

    Examples
    --------
    >>> target(True, "regression"), target("yes", "classification")
    (1.0, 'yes')
    """
    if task == "classification":
        return actual
    if isinstance(actual, str):
        raise BadExample(f"a regression target must be a number, got the string {actual!r}")
    return float(actual)


def example_to_xy(example: LabelledExample, task: Task) -> tuple[dict[str, float], Label]:
    """``(x, y)`` for one labelled example.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> from schemas.events import OutcomeEvent, PredictionEvent
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> ex = LabelledExample(
    ...     prediction=PredictionEvent(prediction_id="p1", model="m", model_version="1", event_time=t,
    ...                                features={"a": 2, "b": "x"}, prediction=False),
    ...     outcome=OutcomeEvent(prediction_id="p1", event_time=t, actual=True))
    >>> example_to_xy(ex, "classification")
    ({'a': 2.0, 'b=x': 1.0}, True)
    """
    return features_to_x(example.prediction.features), target(example.outcome.actual, task)


class OnlineModel:
    """A river pipeline that learns one example at a time, with a progressive metric.

    Progressive validation: each example is predicted *before* it is learnt,
    and the prediction is scored, so the metric is an honest out-of-sample
    estimate computed without a separate test set.  This object is what the
    artifact store pickles; apps call :meth:`predict` on raw event features.

    Parameters
    ----------
    spec
        Which pipeline to build and which metric to keep.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(0)
    >>> model = OnlineModel(LearnerSpec(kind="logistic_regression"))
    >>> for _ in range(500):
    ...     a = rng.uniform(-1, 1)
    ...     _ = model.learn_one({"a": a}, a > 0)
    >>> model.n_learned, model.predict({"a": 0.8}), model.predict({"a": -0.8})
    (500, True, False)
    >>> round(model.progressive_metric, 2)
    0.99
    """

    def __init__(self, spec: LearnerSpec) -> None:
        self.spec = spec
        self.pipeline: Any = make_estimator(spec.kind, spec.params, spec.seed)
        self._metric: metrics.base.Metric = metrics.Accuracy() if spec.task == "classification" else metrics.MAE()
        self.n_learned = 0

    @property
    def progressive_metric(self) -> float:
        """The metric over every prediction made before learning (accuracy or MAE)."""
        return float(self._metric.get())

    def predict_one(self, x: Mapping[str, float]) -> Label | None:
        """Predict from an already numeric ``x``; ``None`` if a classifier has learnt nothing."""
        y_pred: Label | None = self.pipeline.predict_one(dict(x))
        return y_pred

    def predict(self, features: Mapping[str, FeatureValue]) -> Label | None:
        """Predict from an event's raw features (what a serving app calls)."""
        return self.predict_one(features_to_x(features))

    def learn_one(self, x: Mapping[str, float], y: Label) -> Label | None:
        """Predict, score the prediction, then learn; returns the prediction made before learning."""
        x = dict(x)
        y_pred: Label | None = self.pipeline.predict_one(x)
        # river's own progressive_val_score skips predictions a fresh classifier
        # cannot make yet; we do the same so the metric matches its convention.
        if y_pred is not None:
            self._metric.update(y, y_pred)
        self.pipeline.learn_one(x, y)
        self.n_learned += 1
        return y_pred

    def learn_example(self, example: LabelledExample) -> Label | None:
        """:meth:`learn_one` on a labelled example."""
        x, y = example_to_xy(example, self.spec.task)
        return self.learn_one(x, y)

    @classmethod
    def wrapping(cls, spec: LearnerSpec, estimator: Any) -> OnlineModel:
        """A model around a river estimator trained elsewhere (a champion registered outside Driftline).

        Raises
        ------
        TypeError
            ``estimator`` is not a river estimator with ``learn_one`` and ``predict_one``.
        """
        from river import base

        if not isinstance(estimator, base.Estimator) or not callable(getattr(estimator, "predict_one", None)):
            raise TypeError(f"a {type(estimator).__name__} is not a river estimator that predicts")
        model = cls(spec)
        model.pipeline = estimator
        return model

    def reset_metric(self) -> None:
        """Start the progressive metric afresh (a warm-started copy scores only its new data)."""
        self._metric = self._metric.clone()

    def copy(self) -> OnlineModel:
        """An independent deep copy, trained state and metric included (for a warm start)."""
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        return f"OnlineModel(kind={self.spec.kind!r}, n_learned={self.n_learned})"
