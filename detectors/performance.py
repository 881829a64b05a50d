"""Rolling performance metrics, each built from per-example components so that any window is exact.

Every metric is a function of the window means of a few per-example numbers:
accuracy of ``[correct]``, precision of ``[tp, fp]``, F1 of ``[tp, fp, fn]``,
RMSE of ``[squared error]`` and so on.  Keeping those means (not the metric)
lets a window slide by any batch and give the metric after every example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.exceptions import DetectorError
from detectors.rolling import RollingMean
from schemas.config import ModelSpec
from schemas.events import LabelledExample

__all__ = ["METRICS", "MetricDef", "RollingMetric", "UnscorableExample", "components_of"]

# log loss of a probability below this is capped, as scikit-learn does, so one confident miss stays finite.
_MIN_PROBABILITY = 1e-15

Array = npt.NDArray[np.float64]


class UnscorableExample(DetectorError, ValueError):
    """A labelled example whose prediction or outcome does not fit the model's task or metric."""


@dataclass(frozen=True)
class MetricDef:
    name: str
    higher_is_better: bool
    n_components: int
    combine: Callable[[Array], Array]


def _ratio(num: Array, den: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


METRICS: dict[str, MetricDef] = {
    "accuracy": MetricDef("accuracy", True, 1, lambda m: m[:, 0]),
    "precision": MetricDef("precision", True, 2, lambda m: _ratio(m[:, 0], m[:, 0] + m[:, 1])),
    "recall": MetricDef("recall", True, 2, lambda m: _ratio(m[:, 0], m[:, 0] + m[:, 1])),
    "f1": MetricDef("f1", True, 3, lambda m: _ratio(2 * m[:, 0], 2 * m[:, 0] + m[:, 1] + m[:, 2])),
    "log_loss": MetricDef("log_loss", False, 1, lambda m: m[:, 0]),
    "mae": MetricDef("mae", False, 1, lambda m: m[:, 0]),
    "rmse": MetricDef("rmse", False, 1, lambda m: np.sqrt(m[:, 0])),
    "bias": MetricDef("bias", False, 1, lambda m: np.abs(m[:, 0])),
}


def _numbers(example: LabelledExample) -> tuple[float, float]:
    predicted, actual = example.prediction.prediction, example.outcome.actual
    if isinstance(predicted, str) or isinstance(actual, str):
        raise UnscorableExample(f"regression needs numeric prediction and actual, got {predicted!r} and {actual!r}")
    return float(predicted), float(actual)


def components_of(example: LabelledExample, spec: ModelSpec) -> tuple[float, ...]:
    """The per-example numbers whose window means give ``spec``'s metric.

    >>> from datetime import datetime, timezone
    >>> from schemas.config import parse_monitor_config
    >>> from schemas.events import OutcomeEvent, PredictionEvent
    >>> spec = parse_monitor_config(
    ...     "models: {m: {task: classification, performance: {metric: f1, positive_class: fraud, threshold: 0.5}}}"
    ... ).models["m"]
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> p = PredictionEvent(prediction_id="a", model="m", model_version="1", event_time=t, prediction="fraud")
    >>> components_of(LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id="a", event_time=t, actual="ok")), spec)
    (0.0, 1.0, 0.0)
    """
    metric = spec.metric
    if metric in ("mae", "rmse", "bias"):
        predicted, actual = _numbers(example)
        error = predicted - actual
        return (abs(error),) if metric == "mae" else (error * error,) if metric == "rmse" else (error,)
    predicted_label, actual_label = example.prediction.prediction, example.outcome.actual
    if metric == "accuracy":
        return (1.0 if predicted_label == actual_label else 0.0,)
    if metric == "log_loss":
        probabilities = example.prediction.probabilities
        if not probabilities:
            raise UnscorableExample("log_loss needs the prediction's class probabilities")
        p = probabilities.get(str(actual_label), 0.0)
        return (-math.log(max(p, _MIN_PROBABILITY)),)
    positive = spec.performance.positive_class
    predicted_positive, actually_positive = predicted_label == positive, actual_label == positive
    tp = float(predicted_positive and actually_positive)
    fp = float(predicted_positive and not actually_positive)
    fn = float(actually_positive and not predicted_positive)
    if metric == "precision":
        return (tp, fp)
    if metric == "recall":
        return (tp, fn)
    return (tp, fp, fn)


class RollingMetric:
    """A metric over the last ``window`` examples, after every example of a batch.

    Parameters
    ----------
    metric
        A name from :data:`METRICS`.
    window
        How many of the most recent examples the metric covers.
    """

    def __init__(self, metric: str, window: int) -> None:
        self.metric = metric
        self.window = window
        self._means = [RollingMean(window) for _ in range(self.definition.n_components)]

    @property
    def definition(self) -> MetricDef:
        # Looked up, not stored: the definitions hold functions, and monitor state must pickle.
        return METRICS[self.metric]

    @property
    def n_seen(self) -> int:
        return self._means[0].n_seen

    @property
    def higher_is_better(self) -> bool:
        return self.definition.higher_is_better

    @property
    def value(self) -> float:
        """The metric now (NaN before the first example, or when undefined, e.g. precision with no positives)."""
        means = np.array([[m.mean for m in self._means]])
        return float(self.definition.combine(means)[0])

    def update_many(self, components: Array) -> Array:
        """Add a batch of per-example components, shape (n, n_components); return the metric after each."""
        columns = [mean.update_many(components[:, k]) for k, mean in enumerate(self._means)]
        return self.definition.combine(np.column_stack(columns))
