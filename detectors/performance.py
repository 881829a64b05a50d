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
    """A metric over the last ``window`` examples (and, if set, the last ``window_seconds``), after every example.

    Parameters
    ----------
    metric
        A name from :data:`METRICS`.
    window
        How many of the most recent examples the metric covers at most.
    window_seconds
        If set, examples older than this (event time, behind the latest) leave the window too.

    Examples
    --------
    >>> rm = RollingMetric("accuracy", window=100, window_seconds=10.0)
    >>> values = rm.update_many(np.array([[1.0], [1.0], [0.0], [0.0]]), times=np.array([0.0, 1.0, 20.0, 21.0]))
    >>> values.tolist(), rm.n_in_window   # the first two have aged out by 20 s
    ([1.0, 1.0, 0.0, 0.0], 2)
    """

    def __init__(self, metric: str, window: int, window_seconds: float | None = None) -> None:
        self.metric = metric
        self.window = window
        self.window_seconds = window_seconds
        self._means = [RollingMean(window) for _ in range(self.definition.n_components)]
        # Time-based windows keep the last ``window`` rows and their times; the count window needs only means.
        self._rows = np.empty((0, self.definition.n_components))
        self._times = np.empty(0)
        self._n_seen = 0
        self.n_in_window = 0
        #: How many examples each value of the last :meth:`update_many` covered.
        self.counts: npt.NDArray[np.intp] = np.empty(0, dtype=np.intp)

    @property
    def definition(self) -> MetricDef:
        # Looked up, not stored: the definitions hold functions, and monitor state must pickle.
        return METRICS[self.metric]

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def higher_is_better(self) -> bool:
        return self.definition.higher_is_better

    @property
    def value(self) -> float:
        """The metric now (NaN before the first example, or when undefined, e.g. precision with no positives)."""
        if self.window_seconds is None:
            means = np.array([[m.mean for m in self._means]])
        elif self.n_in_window:
            means = self._rows[-self.n_in_window:].mean(axis=0, keepdims=True)
        else:
            return math.nan
        return float(self.definition.combine(means)[0])

    def update_many(self, components: Array, times: Array | None = None) -> Array:
        """Add a batch of per-example components, shape (n, n_components); return the metric after each.

        ``times`` (event seconds, one per example) is needed with ``window_seconds``; :attr:`counts` then
        holds how many examples each value covers.
        """
        n = len(components)
        if self.window_seconds is None:
            columns = [mean.update_many(components[:, k]) for k, mean in enumerate(self._means)]
            self.counts = np.minimum(np.arange(self._n_seen + 1, self._n_seen + n + 1), self.window)
            self._n_seen += n
            self.n_in_window = int(self.counts[-1]) if n else self.n_in_window
            return self.definition.combine(np.column_stack(columns))
        assert times is not None, "a time-based window needs the examples' times"
        rows = np.concatenate([self._rows, components])
        # Late examples must not make time run backwards inside the window.
        stamps = np.maximum.accumulate(np.concatenate([self._times, np.asarray(times, dtype=float)]))
        history = len(self._rows)
        ends = np.arange(history, history + n)
        by_time = np.searchsorted(stamps, stamps[ends] - self.window_seconds, side="right")
        starts = np.maximum(by_time, ends - self.window + 1)
        sums = np.vstack([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])
        self.counts = ends - starts + 1
        means = (sums[ends + 1] - sums[starts]) / self.counts[:, None]
        self._rows, self._times = rows[-self.window:].copy(), stamps[-self.window:].copy()
        self._n_seen += n
        if n:
            self.n_in_window = int(self.counts[-1])
        return self.definition.combine(means)
