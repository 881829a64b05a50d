"""The CUSUM bank under the GLR and CUSUM detectors: fixed-point Page CUSUMs over a grid of post-change rows.

:class:`CUSUMBank` is the shared machinery (warm-up, then one CUSUM per row,
alarm on the largest); the row builders give each row's log-likelihood-ratio
coefficients, for the detectors and for the simulations that calibrate their
thresholds (:mod:`detectors.calibration`).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special

from detectors.base import DriftDetector

__all__ = ["SCALE", "CUSUMBank", "bernoulli_rows", "gaussian_rows", "normal_scores", "randomized_normal_scores"]

# Fixed-point resolution of the statistics: 2**-24 nat is far below any
# threshold's precision, and leaves int64 head-room for 10**9-event segments.
SCALE = float(2**24)
# Events per vectorised block: big enough to amortise numpy's call overhead,
# small enough that the (rows x block) work arrays stay in cache.
_BLOCK = 4096


class CUSUMBank(DriftDetector):
    """Shared machinery: a warm-up that fixes the reference, then a bank of CUSUMs.

    Subclasses implement the warm-up (``_absorb``, ``_absorb_many``,
    ``_finish_warmup``) and the per-row fixed-point increments
    (``_increments_one``, ``_increments``).
    """

    warmup: int
    false_alarm_horizon: float

    def _init_state(self) -> None:
        self._warm = False
        self._s: list[int] = []
        self._since: list[int] = []
        self._threshold_int = 0
        self._threshold = math.inf
        self._statistic_int = 0
        self._change_start: int | None = None

    # -- read-only answers -------------------------------------------------
    @property
    def statistic(self) -> float:
        """The GLR statistic after the last update, in nats (0 during warm-up)."""
        return self._statistic_int / SCALE

    @property
    def threshold(self) -> float:
        """The alarm threshold in nats (``inf`` until the warm-up has fixed it)."""
        return self._threshold

    @property
    def change_start(self) -> int | None:
        """Updates since the alarming CUSUM last stood at zero: the change-time estimate."""
        return self._change_start

    @property
    def is_warm(self) -> bool:
        """Whether the warm-up is over and the detector is monitoring."""
        return self._warm

    # -- subclass hooks ----------------------------------------------------
    def _absorb(self, x: float) -> None:
        raise NotImplementedError

    def _absorb_many(self, xs: npt.NDArray[np.float64]) -> None:
        raise NotImplementedError

    def _finish_warmup(self) -> float:
        """Fix the reference and the rows; return the threshold in nats."""
        raise NotImplementedError

    def _increments_one(self, x: float) -> list[int]:
        raise NotImplementedError

    def _increments(self, xs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        raise NotImplementedError

    def _n_rows(self) -> int:
        raise NotImplementedError

    # -- the recursion -----------------------------------------------------
    def _start_monitoring(self) -> None:
        self._threshold = self._finish_warmup()
        self._threshold_int = int(self._threshold * SCALE)
        k = self._n_rows()
        self._s = [0] * k
        self._since = [0] * k
        self._warm = True

    def update(self, x: float) -> None:
        if self._drift_detected:
            # The post-change level becomes the new normal after a fresh
            # warm-up, so a persisting change is reported once.
            self.reset()
        self._n += 1
        if not self._warm:
            self._absorb(float(x))
            if self._n >= self.warmup:
                self._start_monitoring()
            return
        best, best_row = -1, 0
        s, since = self._s, self._since
        for k, w in enumerate(self._increments_one(float(x))):
            v = s[k] + w
            if v <= 0:
                v = 0
                since[k] = 0
            else:
                since[k] += 1
            s[k] = v
            if v > best:
                best, best_row = v, k
        self._statistic_int = best
        if best > self._threshold_int:
            self._drift_detected = True
            self._change_start = since[best_row]

    def update_many(self, xs: npt.ArrayLike) -> npt.NDArray[np.intp]:
        values = np.asarray(xs, dtype=float).ravel()
        alarms: list[int] = []
        i, n = 0, len(values)
        while i < n:
            if self._drift_detected:
                self.reset()
            if not self._warm:
                take = min(self.warmup - self._n, n - i)
                self._absorb_many(values[i:i + take])
                self._n += take
                i += take
                if self._n >= self.warmup:
                    self._start_monitoring()
                continue
            block = values[i:i + _BLOCK]
            hit = self._scan(block)
            if hit >= 0:
                alarms.append(i + hit)
                i += hit + 1
            else:
                i += len(block)
        return np.asarray(alarms, dtype=np.intp)

    def _scan(self, block: npt.NDArray[np.float64]) -> int:
        """Run the bank over ``block``; stop at the first alarm and return its index, else -1."""
        inc = self._increments(block)
        s0 = np.asarray(self._s, dtype=np.int64)
        # S_t = max(0, S_{t-1} + w_t) unrolls to C_t - min(-S_0, min_{j<=t} C_j).
        c = np.cumsum(inc, axis=1)
        floor = np.minimum.accumulate(c, axis=1)
        np.minimum(floor, -s0[:, None], out=floor)
        stat = c - floor
        top = stat.max(axis=0)
        over = np.flatnonzero(top > self._threshold_int)
        length = len(block)
        if len(over):
            t = int(over[0])
            row = int(np.argmax(stat[:, t]))
            zeros = np.flatnonzero(stat[row, : t + 1] == 0)
            self._change_start = t - int(zeros[-1]) if len(zeros) else self._since[row] + t + 1
            self._statistic_int = int(top[t])
            self._n += t + 1
            self._drift_detected = True
            return t
        is_zero = stat == 0
        last_zero = length - 1 - np.argmax(is_zero[:, ::-1], axis=1)
        any_zero = is_zero.any(axis=1)
        self._since = [
            int(length - 1 - lz) if az else since + length
            for lz, az, since in zip(last_zero, any_zero, self._since)
        ]
        self._s = [int(v) for v in stat[:, -1]]
        self._statistic_int = int(top[-1])
        self._n += length
        self._drift_detected = False
        return -1


def bernoulli_rows(p0: float, ratios: tuple[float, ...], two_sided: bool) -> list[float]:
    """Post-change rates of the bank, deduplicated and kept inside (0, 1)."""
    rows: list[float] = []
    for r in sorted(ratios):
        p1 = min(p0 * r, 1 - (1 - p0) / r)  # cap the rise so that odds stay finite
        if p1 > p0 and p1 not in rows:
            rows.append(p1)
    if two_sided:
        for r in sorted(ratios):
            p1 = p0 / r
            if p1 < p0 and p1 not in rows:
                rows.append(p1)
    return rows


def normal_scores(values: npt.NDArray[np.float64], sorted_reference: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each value's mid-rank among a sorted reference sample, mapped to a standard normal quantile.

    Under no change a value is as likely to fall in any gap of the reference,
    whatever the series' distribution, so the scores are close to standard
    normal for skewed and heavy-tailed data alike (ties score their mid-rank).

    >>> ref = np.sort(np.random.default_rng(0).lognormal(size=999))
    >>> [round(float(z), 2) for z in normal_scores(np.array([0.0, float(np.median(ref)), 1e9]), ref)]
    [-3.29, 0.0, 3.29]
    """
    n = len(sorted_reference)
    ranks = (np.searchsorted(sorted_reference, values, side="left")
             + np.searchsorted(sorted_reference, values, side="right")) / 2.0
    return np.asarray(special.ndtri((ranks + 0.5) / (n + 1.0)), dtype=float)


def randomized_normal_scores(
    values: npt.NDArray[np.float64], sorted_reference: npt.NDArray[np.float64], uniforms: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Each value's rank among a sorted reference, ties broken at random by ``uniforms``, as a normal quantile.

    A randomised probability integral transform: a value tied with ``m`` reference values takes a rank
    uniform over its ``m + 1`` places, and a uniform offset within it.  Under no change (the value and the
    reference exchangeable) the result is exactly standard normal for any distribution, counts and
    zero-inflated ones included, where mid-ranks (:func:`normal_scores`) bunch a tie into one score whose
    mean is off zero (a feature 60% zeros: +0.07 sd, enough to wreck a calibrated threshold).

    >>> ref = np.sort(np.random.default_rng(0).poisson(1.0, 999).astype(float))
    >>> z = randomized_normal_scores(np.zeros(4), ref, np.array([0.01, 0.3, 0.6, 0.99]))
    >>> [round(float(v), 2) for v in z]
    [-2.69, -1.24, -0.79, -0.38]
    """
    n = len(sorted_reference)
    left = np.searchsorted(sorted_reference, values, side="left")
    right = np.searchsorted(sorted_reference, values, side="right")
    return np.asarray(special.ndtri((left + uniforms * (right - left + 1)) / (n + 1.0)), dtype=float)


def gaussian_rows(
    shifts: tuple[float, ...], variance_ratios: tuple[float, ...], two_sided: bool
) -> tuple[list[float], list[float], list[float]]:
    """Coefficients of each row's log-likelihood ratio ``alpha*z + beta*z**2 + gamma``."""
    alpha: list[float] = []
    beta: list[float] = []
    gamma: list[float] = []
    signs = (1.0, -1.0) if two_sided else (1.0,)
    for sign in signs:
        for d in sorted(shifts):
            alpha.append(sign * float(d))
            beta.append(0.0)
            gamma.append(-float(d) * float(d) / 2)
    for r in sorted(variance_ratios):
        alpha.append(0.0)
        beta.append(0.5 * (1 - 1 / (float(r) * float(r))))
        gamma.append(-math.log(float(r)))
    return alpha, beta, gamma
