"""CUSUM change detectors for error streams."""

from __future__ import annotations

import math

from detectors.base import DriftDetector
from detectors.exceptions import InvalidParameter

__all__ = ["BernoulliCUSUM"]


class BernoulliCUSUM(DriftDetector):
    """Page's CUSUM for a rise in a Bernoulli error rate (accuracy decay).

    The baseline error rate ``p0`` is learnt from the first ``warmup`` updates
    unless given.  The detector accumulates the log-likelihood ratio of
    ``p1 = p0 + delta`` against ``p0`` and alarms when it exceeds
    ``h = log(false_alarm_horizon)``; by Lorden's bound the mean number of
    stationary updates between false alarms is then at least about
    ``false_alarm_horizon``.

    Parameters
    ----------
    false_alarm_horizon
        Mean number of stationary updates wanted between false alarms.
    delta
        The smallest rise in error rate worth detecting quickly.
    warmup
        Updates used to learn ``p0`` when it is not given.
    p0
        Known baseline error rate, if any.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> errors = np.concatenate([rng.random(3000) < 0.08, rng.random(2000) < 0.20])
    >>> detector = BernoulliCUSUM()
    >>> alarms = detector.update_many(errors)
    >>> [int(a) for a in alarms]
    [3231]
    """

    def __init__(
        self,
        false_alarm_horizon: float = 100_000,
        delta: float = 0.05,
        warmup: int = 500,
        p0: float | None = None,
    ) -> None:
        super().__init__()
        if not false_alarm_horizon > 1:
            raise InvalidParameter("false_alarm_horizon", "must be greater than 1")
        if not 0 < delta < 1:
            raise InvalidParameter("delta", "must be between 0 and 1")
        if warmup < 1:
            raise InvalidParameter("warmup", "must be at least 1")
        if p0 is not None and not 0 < p0 < 1:
            raise InvalidParameter("p0", "must be between 0 and 1")
        self.false_alarm_horizon = false_alarm_horizon
        self.delta = delta
        self.warmup = warmup
        self.p0 = p0
        self._threshold = math.log(false_alarm_horizon)
        self._statistic = 0.0
        self._n_errors = 0
        self._since_zero = 0
        self._change_start: int | None = None
        self._weights: tuple[float, float] | None = None if p0 is None else self._llr_weights(p0)

    def _llr_weights(self, p0: float) -> tuple[float, float]:
        p1 = min(p0 + self.delta, 0.999)
        return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))

    @property
    def statistic(self) -> float:
        """The current CUSUM statistic (log-likelihood ratio)."""
        return self._statistic

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def change_start(self) -> int | None:
        return self._change_start

    def update(self, x: float) -> None:
        if self._drift_detected:
            # The post-change level becomes the new normal after a fresh
            # warm-up, so a persisting change is reported once.
            self.reset()
        self._n += 1
        error = 1 if x else 0
        if self._weights is None:
            self._n_errors += error
            if self._n >= self.warmup:
                # Laplace smoothing keeps p0 off 0 and 1 after a perfect warm-up.
                p0 = (self._n_errors + 1) / (self._n + 2)
                self._weights = self._llr_weights(p0)
            return
        up, down = self._weights
        self._statistic = max(0.0, self._statistic + (up if error else down))
        self._since_zero = self._since_zero + 1 if self._statistic > 0 else 0
        if self._statistic > self._threshold:
            self._drift_detected = True
            self._change_start = self._since_zero
