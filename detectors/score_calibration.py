"""Calibration maps from a model's scores to the probability of an outcome, and expected metrics under them.

A classifier's confidence is rarely its accuracy: one whose confidences run a
point and a half below its accuracy makes a mean-confidence estimate alert on
stable traffic.  NannyML's CBPE answers this by calibrating the scores against
labelled reference data and estimating the confusion matrix from the
calibrated probabilities; these are the pieces for doing that in a stream.

* :class:`ScoreCalibration` is fitted on (score, outcome) pairs, by isotonic
  regression (pool-adjacent-violators) whose blocks are merged until each
  holds ``min_bin_count`` examples, or by equal-count histogram binning.  The
  minimum count bounds the variance of every calibrated value: with 50 per
  block a block's rate is off by at most about ``0.5 / sqrt(50) = 0.07``, and a
  window's mean of many blocks by far less.
* :func:`expected_auc` is the ROC AUC expected when each outcome is a Bernoulli
  draw with its calibrated probability (CBPE's estimate, computed exactly).

Written with numpy rather than scikit-learn's ``IsotonicRegression``: the fit is
thirty lines, the minimum block count (which scikit-learn lacks) is what keeps
a 2,000-example fit stable, and the detectors stay free of a heavy dependency.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from detectors.exceptions import InvalidParameter

__all__ = ["CALIBRATION_METHODS", "ScoreCalibration", "expected_auc", "realized_auc"]

CALIBRATION_METHODS = ("isotonic", "histogram")


class ScoreCalibration:
    """A monotone (isotonic) or binned map from a score to the probability that the outcome is 1.

    Parameters
    ----------
    method
        ``"isotonic"`` (pool-adjacent-violators, interpolated between block centres) or ``"histogram"``
        (equal-count bins, a step function).
    min_bin_count
        Least number of fitting examples behind each block or bin.

    Examples
    --------
    A model whose confidence runs 3 points below its accuracy:

    >>> rng = np.random.default_rng(1)
    >>> confidence = rng.uniform(0.6, 0.97, 4000)
    >>> correct = rng.random(4000) < confidence + 0.03
    >>> calibration = ScoreCalibration().fit(confidence, correct)
    >>> round(float(confidence.mean()), 3), round(float(calibration.transform(confidence).mean()), 3)
    (0.784, 0.804)
    >>> round(float(correct.mean()), 3)
    0.805
    """

    def __init__(self, method: str = "isotonic", min_bin_count: int = 50) -> None:
        if method not in CALIBRATION_METHODS:
            raise InvalidParameter("method", "must be one of " + ", ".join(CALIBRATION_METHODS))
        if not isinstance(min_bin_count, int) or min_bin_count < 1:
            raise InvalidParameter("min_bin_count", "must be a positive integer")
        self.method = method
        self.min_bin_count = min_bin_count
        self._x: npt.NDArray[np.float64] = np.empty(0)  # block centres (isotonic) or bin upper edges (histogram)
        self._y: npt.NDArray[np.float64] = np.empty(0)
        self.n_fitted = 0

    @property
    def is_fitted(self) -> bool:
        return self.n_fitted > 0

    def fit(self, scores: npt.ArrayLike, outcomes: npt.ArrayLike) -> ScoreCalibration:
        """Fit on scores in [0, 1] and 0/1 outcomes (at least one pair); returns self."""
        x = np.asarray(scores, dtype=float)
        y = np.asarray(outcomes, dtype=float)
        if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
            raise InvalidParameter("scores", "scores and outcomes must be equally long, non-empty 1-d arrays")
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        if self.method == "isotonic":
            self._x, self._y = _isotonic_blocks(x, y, self.min_bin_count)
        else:
            self._x, self._y = _histogram_bins(x, y, self.min_bin_count)
        self.n_fitted = len(x)
        return self

    def transform(self, scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Calibrated probabilities of ``scores`` (the scores themselves before any fit)."""
        x = np.asarray(scores, dtype=float)
        if not self.is_fitted:
            return np.asarray(np.clip(x, 0.0, 1.0), dtype=float)
        if self.method == "isotonic":
            return np.asarray(np.interp(x, self._x, self._y), dtype=float)
        index = np.minimum(np.searchsorted(self._x, x, side="left"), len(self._y) - 1)
        return np.asarray(self._y[index], dtype=float)


def _isotonic_blocks(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], min_count: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Pool-adjacent-violators over sorted ``x``, then small blocks merged: (block mean score, block rate)."""
    # Equal scores form one starting block: the map is a function of the score.
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    counts = np.diff(np.r_[starts, len(x)]).astype(float)
    sums_y = np.add.reduceat(y, starts)
    sums_x = np.add.reduceat(x, starts)
    stack_n: list[float] = []
    stack_y: list[float] = []
    stack_x: list[float] = []
    for n, sy, sx in zip(counts.tolist(), sums_y.tolist(), sums_x.tolist(), strict=True):
        stack_n.append(n)
        stack_y.append(sy)
        stack_x.append(sx)
        # Merge while the last block's rate is below the one before it (a violation), or the one before is too small.
        while len(stack_n) > 1 and (stack_y[-1] / stack_n[-1] <= stack_y[-2] / stack_n[-2] or stack_n[-2] < min_count):
            n_last, y_last, x_last = stack_n.pop(), stack_y.pop(), stack_x.pop()
            stack_n[-1] += n_last
            stack_y[-1] += y_last
            stack_x[-1] += x_last
    # The last block may still be small: pool it into its neighbour (monotonicity is kept, a merge averages).
    while len(stack_n) > 1 and stack_n[-1] < min_count:
        n_last, y_last, x_last = stack_n.pop(), stack_y.pop(), stack_x.pop()
        stack_n[-1] += n_last
        stack_y[-1] += y_last
        stack_x[-1] += x_last
    n = np.asarray(stack_n)
    return np.asarray(stack_x) / n, np.asarray(stack_y) / n


def _histogram_bins(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], min_count: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Equal-count bins of at least ``min_count`` sorted examples (ties kept together): (upper edge, rate)."""
    n_bins = max(1, len(x) // min_count)
    cut = np.linspace(0, len(x), n_bins + 1).round().astype(int)[1:-1]
    # A bin ends where the score changes, so equal scores never straddle two bins.
    cut = np.unique(np.searchsorted(x, x[cut], side="right"))
    cut = cut[(cut > 0) & (cut < len(x))]
    bounds = np.r_[0, cut, len(x)]
    edges = np.array([x[end - 1] for end in bounds[1:]])
    edges[-1] = math.inf
    rates = np.array([y[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    return edges, rates


def expected_auc(scores: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """ROC AUC expected when outcome ``i`` is 1 with probability ``probabilities[i]`` (ties count a half).

    It is the chance that a positive outranks a negative, weighted by how likely each pair is to be one:
    ``sum_{s_i > s_j} p_i (1 - p_j) / (sum p * sum (1 - p))`` (pairs ``i = j`` cannot be both).

    >>> round(expected_auc([0.1, 0.4, 0.6, 0.9], [0.1, 0.4, 0.6, 0.9]), 3)
    0.889
    """
    s = np.asarray(scores, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    q = 1.0 - p
    denominator = float(p.sum() * q.sum() - (p * q).sum())
    if len(s) < 2 or denominator <= 0:
        return math.nan
    order = np.argsort(s, kind="stable")
    s, p, q = s[order], p[order], q[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    group_p = np.add.reduceat(p, starts)
    group_q = np.add.reduceat(q, starts)
    group_pq = np.add.reduceat(p * q, starts)
    below_q = np.cumsum(group_q) - group_q
    # Within a group of equal scores every ordered pair counts a half, less the pairs of an example with itself.
    numerator = float((group_p * below_q).sum() + 0.5 * (group_p * group_q - group_pq).sum())
    return numerator / denominator


def realized_auc(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """ROC AUC of ``scores`` against 0/1 outcomes (NaN without both classes): :func:`expected_auc` of certainty.

    >>> realized_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    return expected_auc(scores, np.asarray(positive, dtype=float))
