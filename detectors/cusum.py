"""CUSUM change detectors for error streams."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from detectors.cusum_bank import SCALE, CUSUMBank
from detectors.exceptions import InvalidParameter

__all__ = ["BernoulliCUSUM"]


class BernoulliCUSUM(CUSUMBank):
    """Page's CUSUM for a rise in a Bernoulli error rate (accuracy decay).

    The baseline error rate ``p0`` is learnt from the first ``warmup`` updates
    unless given.  The detector accumulates the log-likelihood ratio of
    ``p1 = p0 + delta`` against ``p0`` and alarms when it exceeds
    ``h = log(false_alarm_horizon)``; by Lorden's bound the mean number of
    stationary updates between false alarms is then at least about
    ``false_alarm_horizon``.  The bound is conservative: for a shift-agnostic
    detector with a threshold calibrated to the horizon, see
    :class:`detectors.glr.BernoulliGLR`.

    ``update_many`` is vectorised (cumulative sum minus running minimum between
    alarms) on fixed-point statistics, so it matches a loop of ``update``
    exactly.

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
        self._init_state()
        self._threshold = math.log(false_alarm_horizon)
        self._n_errors = 0
        self._weights: tuple[int, int] = (0, 0)
        if p0 is not None:
            self._start_monitoring()

    def _llr_weights(self, p0: float) -> tuple[int, int]:
        p1 = min(p0 + self.delta, 0.999)
        return round(math.log(p1 / p0) * SCALE), round(math.log((1 - p1) / (1 - p0)) * SCALE)

    def _absorb(self, x: float) -> None:
        self._n_errors += 1 if x else 0

    def _absorb_many(self, xs: npt.NDArray[np.float64]) -> None:
        self._n_errors += int(np.count_nonzero(xs))

    def _finish_warmup(self) -> float:
        # Laplace smoothing keeps p0 off 0 and 1 after a perfect warm-up.
        p0 = self.p0 if self.p0 is not None else (self._n_errors + 1) / (self._n + 2)
        self._weights = self._llr_weights(p0)
        if self.p0 is None and self._n_errors == self._n:
            # Only errors in the warm-up: the rate cannot rise, and a
            # persisting all-error stream must not look like a change.
            self._weights = (-1, -1)
        # Lorden's bound: h = log(horizon) guarantees the horizon (conservatively).
        return math.log(self.false_alarm_horizon)

    def _n_rows(self) -> int:
        return 1

    def _increments_one(self, x: float) -> list[int]:
        return [self._weights[0] if x else self._weights[1]]

    def _increments(self, xs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        up, down = self._weights
        return np.where(xs != 0, np.int64(up), np.int64(down))[None, :]
