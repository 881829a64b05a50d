"""Calibrated label-free performance estimates of one classifier version (CBPE-like, per prediction).

An :class:`EstimateMonitor` watches one model version through its predictions and, as they arrive, its labelled
examples:

1. **calibration**: the version's labelled reference (the lines of ``drift.reference_file`` that carry an outcome,
   then its first live labelled examples, ``calibration_size`` in all) fits a map from the confidence to the chance
   that the prediction is right and, for a named ``positive_class``, from the positive-class score to the chance
   that the outcome is positive (:class:`~detectors.score_calibration.ScoreCalibration`).  It is refitted on all
   the version's labelled examples so far at each doubling of that count, up to ``max_calibration_size``: with
   2,000 examples the map alone is off by up to 0.02 after a shift of the scores, with 10,000 by half that
   (``benchmarks/bench_monitors_performance.py``).  Then (``keep_refitting``) it is refitted every
   ``calibration_size`` labels on the latest ``max_calibration_size``: after the scores shift, the map fitted
   before the shift is thin where the scores now fall, and was measured 0.0034 low on average after a 3-point
   drop, where the refitted one is 0.0009 low.  A new version is a new monitor, so it is refitted on every
   version change.  Until the map is fitted the estimates are the raw scores,
   reported as uncalibrated, and do not alert (``alert_uncalibrated`` turns that on).
2. **estimates**, after every prediction, over the last ``window`` of them: accuracy, the mean calibrated chance of
   being right; for the positive class, the expected confusion matrix (``TP = sum of p over predicted positives``,
   ``FN = sum of p over predicted negatives``, ``FP = predicted positives - TP``) and from it precision, recall and
   F1; and ROC AUC, the AUC expected from the calibrated probabilities (judged every ``window // 20`` predictions,
   as it needs a sort of the window).  NannyML's CBPE does the same on fixed chunks, which leaves a change up to a
   chunk late; a sliding window judges on every prediction.
3. **alerts**: each estimate with a threshold fires once when it falls below it by more than ``margin_z`` standard
   errors of the calibration (``sqrt(v (1 - v) / n)`` for an estimate ``v`` and the ``n`` fitting examples behind
   it: all of them for accuracy, the predicted positives for precision, the positives for recall, the smaller
   class for ROC AUC), and resolves once it is back above the threshold by the hysteresis, like the label-based
   threshold alerts.  The margin is what keeps a map fitted on its first 2,000 labels, which can be a point off,
   from paging on stable traffic; it shrinks as the refits add labels.  These are thresholds a person sets, outside the
   false-alarm budget.
4. **realized counterparts**, over the last ``window`` labelled examples, so that a dashboard shows each estimate
   being confirmed (or not) once the labels come.

Sums are kept in fixed point (``2**-24``) integers, so a stream gives the same estimates however it is batched.
A (re)fitted map applies from the next prediction on, to the whole window: where labels and predictions interleave
differently (one worker's batches against another's), the estimates differ only between the two fitting moments.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from detectors.monitors.data_monitor import confidence_of
from detectors.monitors.episodes import AlertEpisodes
from detectors.score_calibration import ScoreCalibration, expected_auc, realized_auc
from schemas.config import EstimatedPerformanceSpec, ModelSpec
from schemas.events import Alert, LabelledExample, PredictionEvent

__all__ = ["ESTIMATED", "EstimateMonitor", "positive_score_of"]

ESTIMATED = "estimated_performance"
_FIXED = 1 << 24
# ROC AUC is judged this many times per window (each judgement sorts the window).
_AUC_JUDGEMENTS_PER_WINDOW = 20


def positive_score_of(prediction: PredictionEvent, positive: bool | int | str) -> float | None:
    """The model's probability that the outcome is ``positive``: its class probability, else (binary) from its
    confidence in what it predicted; None if it gave neither.

    >>> from datetime import datetime, timezone
    >>> p = PredictionEvent(prediction_id="a", model="m", model_version="1", prediction=False, confidence=0.9,
    ...                     event_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    >>> round(positive_score_of(p, True), 3)
    0.1
    """
    if prediction.probabilities and str(positive) in prediction.probabilities:
        return prediction.probabilities[str(positive)]
    confidence = confidence_of(prediction)
    if confidence is None:
        return None
    return confidence if prediction.prediction == positive else 1.0 - confidence


class EstimateMonitor:
    """Calibrated accuracy (and positive-class precision, recall, F1, ROC AUC) estimates of one model version.

    Parameters
    ----------
    model, version
        The classifier and the version these predictions come from.
    spec
        The model's monitor config (its ``estimated_performance`` must be set).
    reference
        Labelled reference examples (``drift.reference_file`` lines with an outcome); they come first in the
        calibration, before the version's live labelled examples.

    Examples
    --------
    A model whose confidences run 3 points below its accuracy (0.90 against 0.93).  The raw mean confidence would sit
    below a 0.91 threshold from the start; calibrated on the first 1,000 labelled examples, the estimate is right, and
    it alerts only when harder inputs (lower confidences, the same calibration) bring the accuracy down 4 points (it
    must fall below the threshold by two standard errors of a rate measured on 1,000 labels, about 0.02):

    >>> from datetime import datetime, timedelta, timezone
    >>> from schemas.config import parse_monitor_config
    >>> from schemas.events import OutcomeEvent
    >>> spec = parse_monitor_config("models: {m: {task: classification, performance: {threshold: 0.8},"
    ...     " estimated_performance: {threshold: 0.91, window: 1000, calibration_size: 1000}}}").models["m"]
    >>> rng = np.random.default_rng(5)
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> confidence = np.clip(rng.normal(np.r_[np.full(4000, 0.90), np.full(3000, 0.86)], 0.05), 0.5, 0.99)
    >>> right = rng.random(7000) < np.minimum(confidence + 0.03, 1.0)
    >>> events = [PredictionEvent(prediction_id=f"p{i}", model="m", model_version="1", prediction="yes",
    ...                           confidence=round(float(c), 4), event_time=t0 + timedelta(seconds=i))
    ...           for i, c in enumerate(confidence)]
    >>> labelled = [LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id=p.prediction_id,
    ...             event_time=p.event_time, actual="yes" if r else "no")) for p, r in zip(events, right)]
    >>> monitor = EstimateMonitor("m", "1", spec)
    >>> alerts = monitor.observe_predictions(events[:1500]) + monitor.observe_labelled(labelled[:1000])
    >>> alerts += monitor.observe_predictions(events[1500:])
    >>> [(a.detector, a.status, int((a.event_time - t0).total_seconds())) for a in alerts]
    [('estimated_accuracy', 'fired', 4900)]
    >>> truth = float(np.minimum(confidence[-1000:] + 0.03, 1.0).mean())  # the expected accuracy of the last window
    >>> monitor.calibrated, round(monitor.estimates["accuracy"], 3), round(truth, 3)
    (True, 0.881, 0.889)
    """

    def __init__(self, model: str, version: str, spec: ModelSpec, reference: Sequence[LabelledExample] = ()) -> None:
        estimate = spec.estimated_performance
        if estimate is None:
            raise ValueError(f"{model}: estimated_performance is not configured")
        self.model, self.version = model, version
        self.spec: EstimatedPerformanceSpec = estimate
        self.metrics = estimate.metrics
        self._positive = estimate.positive_class
        window = estimate.window
        if estimate.calibration == "none":
            self._maps: tuple[ScoreCalibration, ScoreCalibration] | None = None
        else:
            self._maps = (ScoreCalibration(estimate.calibration, estimate.min_bin_count),
                          ScoreCalibration(estimate.calibration, estimate.min_bin_count))
        # Calibration pairs: (confidence, right), and (positive score, outcome positive) where the score is known;
        # float32 and bool, as they travel in every checkpoint.
        self._fit_confidence = np.empty(0, dtype=np.float32)
        self._fit_right = np.empty(0, dtype=bool)
        self._fit_predicted = np.empty(0, dtype=bool)  # predicted the positive class
        self._fit_score = np.empty(0, dtype=np.float32)
        self._fit_positive = np.empty(0, dtype=bool)
        self._next_fit = estimate.calibration_size
        # The window of predictions: raw scores (to recalibrate when the map arrives) and fixed-point probabilities.
        self._confidence: deque[float] = deque(maxlen=window)
        self._score: deque[float] = deque(maxlen=window)  # NaN where the positive score is unknown
        self._predicted_positive: deque[bool] = deque(maxlen=window)
        self._p_right: deque[int] = deque(maxlen=window)
        self._p_positive: deque[int] = deque(maxlen=window)
        # Realized counterparts over the last window labelled examples: right, predicted positive, positive, score.
        self._realized: deque[tuple[bool, bool, bool, float]] = deque(maxlen=window)
        self._episodes: AlertEpisodes[str] = AlertEpisodes(model, None, scope=(model, version, ""), version=version)
        self.n_seen = 0
        self.n_calibration = 0
        # Fitting examples behind each estimate's map, for its margin (none before a fit: no margin).
        self._support: dict[str, int] = {}
        #: The latest value of each estimate (NaN until defined).
        self.estimates: dict[str, float] = {str(metric): math.nan for metric in self.metrics}
        self._label = f"{model} version {version}"
        self.observe_labelled(reference)

    def __setstate__(self, state: dict[str, object]) -> None:
        # A checkpoint from before keep_refitting counted the fitting pairs' predicted positives instead of keeping
        # a flag per pair, stopped at max_calibration_size (emptying its pairs), and its spec lacks the field.
        if "_fit_predicted" not in state:
            spec = state["spec"]
            assert isinstance(spec, EstimatedPerformanceSpec)
            spec = EstimatedPerformanceSpec.model_validate(
                {name: getattr(spec, name) for name in type(spec).model_fields if name in spec.__dict__})
            state["spec"] = spec
            right = state["_fit_right"]
            assert isinstance(right, np.ndarray)
            counted = state.pop("_n_fit_predicted_positive", 0)
            assert isinstance(counted, int)
            # The count is kept exactly; which pairs it covered is not known, and matters only as they age out.
            state["_fit_predicted"] = np.arange(len(right)) < counted
            n_calibration, next_fit = state["n_calibration"], state["_next_fit"]
            assert isinstance(n_calibration, int) and isinstance(next_fit, int)
            if next_fit <= n_calibration:  # it had stopped: refit once the pairs are back to the largest fit
                state["_next_fit"] = n_calibration + spec.max_calibration_size - len(right)
        self.__dict__.update(state)

    # ------------------------------------------------------------ answers

    @property
    def calibrated(self) -> bool:
        """Whether the estimates come from a fitted calibration (always, with ``calibration: none``)."""
        return self._maps is None or self._maps[0].is_fitted

    @property
    def open_alerts(self) -> list[str]:
        return sorted(self._episodes)

    @property
    def realized(self) -> dict[str, float]:
        """Each estimate's label-based counterpart over the last ``window`` labelled examples (NaN if undefined)."""
        out: dict[str, float] = {metric: math.nan for metric in self.metrics}
        if not self._realized:
            return out
        right, predicted, positive, score = (np.asarray(column) for column in zip(*self._realized, strict=True))
        out["accuracy"] = float(right.mean())
        if self._positive is not None:
            tp = float(np.sum(predicted & positive))
            fp, fn = float(np.sum(predicted & ~positive)), float(np.sum(~predicted & positive))
            out["precision"] = tp / (tp + fp) if tp + fp else math.nan
            out["recall"] = tp / (tp + fn) if tp + fn else math.nan
            out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
            known = np.isfinite(score.astype(float))
            out["roc_auc"] = realized_auc(score[known], positive[known]) if known.any() else math.nan
        return out

    # ------------------------------------------------------------ labels

    def observe_labelled(self, examples: Sequence[LabelledExample]) -> list[Alert]:
        """Take labelled examples of this version: the calibration's first, then the realized metrics."""
        pairs: list[tuple[float, bool, float, bool, bool]] = []
        for example in examples:
            prediction = example.prediction
            confidence = confidence_of(prediction)
            if confidence is None:
                continue
            right = prediction.prediction == example.outcome.actual
            score = positive_score_of(prediction, self._positive) if self._positive is not None else None
            positive = self._positive is not None and example.outcome.actual == self._positive
            self._realized.append((right, prediction.prediction == self._positive, positive,
                                   math.nan if score is None else score))
            if self._maps is not None and (self.spec.keep_refitting
                                           or self.n_calibration < self.spec.max_calibration_size):
                pairs.append((confidence, right, math.nan if score is None else score, positive,
                              prediction.prediction == self._positive))
                self.n_calibration += 1
                if self.n_calibration == self._next_fit:
                    self._take(pairs)
                    pairs = []
                    self._fit()
                    maximum = self.spec.max_calibration_size
                    # Doublings up to the maximum, then (keep_refitting) a refit every calibration_size labels.
                    self._next_fit = (min(2 * self._next_fit, maximum) if self._next_fit < maximum
                                      else self._next_fit + self.spec.calibration_size)
        self._take(pairs)
        # Alerts are decided on predictions only: a label never moves an estimate by itself.
        return []

    def _take(self, pairs: list[tuple[float, bool, float, bool, bool]]) -> None:
        if not pairs:
            return
        confidence, right, score, positive, predicted = (np.asarray(column) for column in zip(*pairs, strict=True))
        # Only the latest max_calibration_size pairs are fitted on (or kept in a checkpoint).
        keep = self.spec.max_calibration_size
        self._fit_confidence = np.r_[self._fit_confidence, confidence.astype(np.float32)][-keep:]
        self._fit_right = np.r_[self._fit_right, right.astype(bool)][-keep:]
        self._fit_predicted = np.r_[self._fit_predicted, predicted.astype(bool)][-keep:]
        known = np.isfinite(score)
        self._fit_score = np.r_[self._fit_score, score[known].astype(np.float32)][-keep:]
        self._fit_positive = np.r_[self._fit_positive, positive[known].astype(bool)][-keep:]

    def _fit(self) -> None:
        assert self._maps is not None
        accuracy_map, positive_map = self._maps
        accuracy_map.fit(self._fit_confidence, self._fit_right)
        self._support = {"accuracy": len(self._fit_right)}
        if len(self._fit_score):
            positive_map.fit(self._fit_score, self._fit_positive)
            n_positive = int(np.count_nonzero(self._fit_positive))
            n_negative = len(self._fit_positive) - n_positive
            n_predicted = int(np.count_nonzero(self._fit_predicted))
            self._support.update(precision=n_predicted, recall=n_positive,
                                 f1=min(n_predicted, n_positive), roc_auc=min(n_positive, n_negative))
        if not self.spec.keep_refitting and self.n_calibration >= self.spec.max_calibration_size:
            self._fit_confidence, self._fit_right = np.empty(0, np.float32), np.empty(0, bool)
            self._fit_predicted = np.empty(0, bool)
            self._fit_score, self._fit_positive = np.empty(0, np.float32), np.empty(0, bool)
        # The window's predictions are re-scored with the map, so the next judgement uses it throughout.
        right, positive = self._calibrate(np.asarray(self._confidence), np.asarray(self._score))
        self._p_right = deque(right.tolist(), maxlen=self.spec.window)
        self._p_positive = deque(positive.tolist(), maxlen=self.spec.window)

    def _calibrate(self, confidence: npt.NDArray[np.float64],
                   score: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        if self._maps is None:
            right, positive = np.clip(confidence, 0, 1), np.clip(np.nan_to_num(score), 0, 1)
        else:
            # Each map is the identity until fitted (the raw scores, reported as uncalibrated).
            right, positive = self._maps[0].transform(confidence), self._maps[1].transform(np.nan_to_num(score))
        return np.rint(right * _FIXED).astype(np.int64), np.rint(positive * _FIXED).astype(np.int64)

    # ------------------------------------------------------- predictions

    def observe_predictions(self, predictions: Sequence[PredictionEvent]) -> list[Alert]:
        """Update the estimates after each prediction (in event order) and decide their alerts."""
        kept = [(i, p, c) for i, p in enumerate(predictions) if (c := confidence_of(p)) is not None]
        if not kept:
            return []
        start = self.n_seen
        self.n_seen += len(kept)
        confidence = np.array([c for _, _, c in kept])
        if self._positive is not None:
            scores = [positive_score_of(p, self._positive) for _, p, _ in kept]
            score = np.array([math.nan if s is None else s for s in scores])
            predicted = np.array([p.prediction == self._positive for _, p, _ in kept])
        else:
            score, predicted = np.full(len(kept), math.nan), np.zeros(len(kept), dtype=bool)
        p_right, p_positive = self._calibrate(confidence, score)
        n_before = len(self._confidence)
        window = self.spec.window
        # Windows ending at each new prediction: prefix sums over what the window held, then the batch.
        all_right = np.r_[np.asarray(self._p_right, dtype=np.int64), p_right]
        all_positive = np.r_[np.asarray(self._p_positive, dtype=np.int64), p_positive]
        all_predicted = np.r_[np.asarray(self._predicted_positive, dtype=bool), predicted]
        all_known = np.r_[np.isfinite(np.asarray(self._score, dtype=float)), np.isfinite(score)]
        ends = np.arange(n_before, n_before + len(kept))
        count = np.minimum(ends + 1, window)
        values = {"accuracy": _window_sums(all_right, ends, window) / (count * float(_FIXED))}
        if self._positive is not None:
            tp = _window_sums(np.where(all_predicted & all_known, all_positive, 0), ends, window)
            fn = _window_sums(np.where(~all_predicted & all_known, all_positive, 0), ends, window)
            predicted_positive = _window_sums((all_predicted & all_known).astype(np.int64), ends, window) * _FIXED
            with np.errstate(invalid="ignore", divide="ignore"):
                values["precision"] = np.where(predicted_positive > 0, tp / predicted_positive, math.nan)
                values["recall"] = np.where(tp + fn > 0, tp / (tp + fn), math.nan)
                values["f1"] = np.where(predicted_positive + tp + fn > 0,
                                        2 * tp / (predicted_positive + tp + fn), math.nan)
            values["roc_auc"] = self._auc_judgements(start, ends, window, all_positive, confidence, score)
        self._confidence.extend(confidence.tolist())
        self._score.extend(score.tolist())
        self._predicted_positive.extend(predicted.tolist())
        self._p_right.extend(p_right.tolist())
        self._p_positive.extend(p_positive.tolist())
        for metric, series in values.items():
            finite = np.flatnonzero(np.isfinite(series))
            if len(finite):
                self.estimates[metric] = float(series[finite[-1]])
        judged = count >= window
        if not (self.calibrated or self.spec.alert_uncalibrated):
            return []
        alerts: list[tuple[int, int, Alert]] = []
        events = [p for _, p, _ in kept]
        for order, metric in enumerate(self.metrics):
            threshold = self.spec.threshold_of(metric)
            if threshold is not None:
                alerts.extend((i, order, a) for i, a in self._decide(metric, values[metric], judged, threshold,
                                                                      start, events))
        alerts.sort(key=lambda t: (t[0], t[1]))
        return [a for _, _, a in alerts]

    def _auc_judgements(self, start: int, ends: npt.NDArray[np.intp], window: int, all_positive: npt.NDArray[np.int64],
                        confidence: npt.NDArray[np.float64], score: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Expected ROC AUC at every ``window // 20``-th prediction (by the version's count), NaN elsewhere."""
        step = max(1, window // _AUC_JUDGEMENTS_PER_WINDOW)
        out = np.full(len(ends), math.nan)
        positions = np.flatnonzero((start + np.arange(len(ends)) + 1) % step == 0)
        if not len(positions):
            return out
        all_score = np.r_[np.asarray(self._score, dtype=float), score]
        for j in positions:
            lo = max(0, int(ends[j]) - window + 1)
            s = all_score[lo:int(ends[j]) + 1]
            known = np.isfinite(s)
            out[j] = expected_auc(s[known], all_positive[lo:int(ends[j]) + 1][known] / float(_FIXED))
        return out

    def _decide(self, metric: str, values: npt.NDArray[np.float64], judged: npt.NDArray[np.bool_], threshold: float,
                start: int, events: Sequence[PredictionEvent]) -> list[tuple[int, Alert]]:
        hysteresis = self.spec.hysteresis
        support = self._support.get(metric, 0) if self.calibrated else 0
        with np.errstate(invalid="ignore"):
            margin = (self.spec.margin_z * np.sqrt(np.clip(values * (1 - values), 0, None) / support) if support
                      else 0.0)
            breach = judged & (values < threshold - margin)
            healthy = judged & (values >= threshold + hysteresis)
        out = []
        pos = 0
        while pos < len(values):
            is_open = metric in self._episodes
            hits = np.flatnonzero((healthy if is_open else breach)[pos:])
            if not len(hits):
                break
            idx = pos + int(hits[0])
            value, at = float(values[idx]), events[idx]
            if is_open:
                message = f"{self._label}: estimated {metric} back to {value:.3f}; alert resolved"
                out.append((idx, self._episodes.resolve(metric, at, statistic=value, threshold=threshold,
                                                        message=message)))
            else:
                how = (f"calibrated on {support} labelled examples" if support else
                       "calibrated" if self.calibrated else "uncalibrated (raw scores)")
                below = f"{threshold:g} less a margin of {float(np.broadcast_to(margin, values.shape)[idx]):.3f}"
                message = (f"{self._label}: estimated {metric} ({how}, over the last {self.spec.window} predictions) "
                           f"fell to {value:.3f}, below {below if support else f'{threshold:g}'}; outcomes have not "
                           "confirmed it yet")
                out.append((idx, self._episodes.fire(
                    metric, (ESTIMATED, metric), start + idx, at, kind="performance_decay", severity="warning",
                    monitor=ESTIMATED, detector=f"estimated_{metric}", statistic=value, threshold=threshold,
                    message=message)))
            pos = idx + 1
        return out

    def retire(self, at: PredictionEvent, why: str) -> list[Alert]:
        """Resolve every open alert: this version is no longer watched."""
        return [self._episodes.resolve(metric, at, statistic=self.estimates.get(metric, math.nan), threshold=0.0,
                                       message=f"{self._label}: estimated {metric} alert resolved: {why}")
                for metric in sorted(self._episodes)]


def _window_sums(values: npt.NDArray[np.int64], ends: npt.NDArray[np.intp], window: int) -> npt.NDArray[np.float64]:
    """Sum of ``values`` over the ``window`` entries ending at each of ``ends`` (fewer at the start), exactly."""
    prefix = np.r_[0, np.cumsum(values, dtype=np.int64)]
    sums: npt.NDArray[np.float64] = (prefix[ends + 1] - prefix[np.maximum(ends + 1 - window, 0)]).astype(float)
    return sums
