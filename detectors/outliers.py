"""Point outliers: spikes on a numeric series, flagged the event they happen."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from detectors.base import DriftDetector
from detectors.distribution import mad_scale
from detectors.exceptions import InvalidParameter

__all__ = ["RobustSpikeDetector"]


class RobustSpikeDetector(DriftDetector):
    """Robust z-score spike detector over a rolling window (median and MAD).

    Each value is compared with the median and ``1.4826 * MAD`` of the last
    ``window`` values (spikes included: both statistics ignore up to half the
    window being outliers).  A value whose robust z-score ``|x - median| /
    scale`` exceeds ``threshold`` is flagged on that very update.  To keep the
    cost per event low, the reference is recomputed every ``refresh`` updates
    rather than on each one.

    Unlike the change detectors, a spike is a point anomaly: ``drift_detected``
    answers for the last value only and the detector does not restart after a
    spike.  ``change_start`` is 0 on a flagged update (the spike itself).

    Parameters
    ----------
    window
        Number of recent values the reference is computed from.
    threshold
        Robust z-score above which a value is a spike.
    min_samples
        Values needed before anything is flagged.
    refresh
        Updates between recomputations of the reference.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> prices = 100 + np.cumsum(rng.normal(0, 0.5, 2000))
    >>> returns = np.diff(np.log(prices))
    >>> returns[[700, 1500]] += [0.08, -0.1]
    >>> [int(i) for i in RobustSpikeDetector().update_many(returns)]
    [700, 1500]
    """

    def __init__(self, window: int = 500, threshold: float = 6.0, min_samples: int = 50,
                 refresh: int = 25) -> None:
        super().__init__()
        if not isinstance(window, int) or window < 3:
            raise InvalidParameter("window", "must be an integer of at least 3")
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
            raise InvalidParameter("threshold", "must be a positive number")
        if not isinstance(min_samples, int) or not 3 <= min_samples <= window:
            raise InvalidParameter("min_samples", "must be an integer between 3 and window")
        if not isinstance(refresh, int) or refresh < 1:
            raise InvalidParameter("refresh", "must be an integer of at least 1")
        self.window = window
        self.threshold = threshold
        self.min_samples = min_samples
        self.refresh = refresh
        self._buffer = np.zeros(window)
        self._filled = 0
        self._pos = 0
        self._center: float | None = None
        self._scale = 0.0
        self._statistic = 0.0

    @property
    def statistic(self) -> float:
        """Robust z-score of the last value (0 before a reference exists)."""
        return self._statistic

    @property
    def change_start(self) -> int | None:
        return 0 if self._drift_detected else None

    def _zscores(self, xs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self._center is None:
            return np.zeros(len(xs))
        dev = np.abs(xs - self._center)
        if self._scale > 0:
            return dev / self._scale
        # A constant reference: any departure is infinitely unusual.
        return np.where(dev > 0, np.inf, 0.0)

    def _push(self, xs: npt.NDArray[np.float64]) -> None:
        for start in range(0, len(xs), self.window):
            part = xs[start:start + self.window]
            idx = (self._pos + np.arange(len(part))) % self.window
            self._buffer[idx] = part
            self._pos = int((self._pos + len(part)) % self.window)
            self._filled = min(self.window, self._filled + len(part))
        self._maybe_refresh()

    def _maybe_refresh(self) -> None:
        if self._n % self.refresh == 0 and self._filled >= self.min_samples:
            values = self._buffer[: self._filled]
            self._center = float(np.median(values))
            self._scale = mad_scale(values, self._center)

    def update(self, x: float) -> None:
        # update_many's arithmetic on one Python float: numpy's fixed cost was most of a one-value call, and the
        # data monitors of a thousand models mostly feed one or two values at a time (alarms_with_state).
        x = float(x)
        if self._center is None:
            z = 0.0
        else:
            dev = abs(x - self._center)
            z = dev / self._scale if self._scale > 0 else (math.inf if dev > 0 else 0.0)
        self._statistic = z
        self._drift_detected = z > self.threshold
        self._n += 1
        self._buffer[self._pos] = x
        self._pos = (self._pos + 1) % self.window
        self._filled = min(self.window, self._filled + 1)
        self._maybe_refresh()

    def update_many(self, xs: npt.ArrayLike) -> npt.NDArray[np.intp]:
        values = np.asarray(xs, dtype=float).ravel()
        alarms: list[npt.NDArray[np.intp]] = []
        i = 0
        while i < len(values):
            # The reference is fixed until the next refresh boundary.
            take = min(self.refresh - self._n % self.refresh, len(values) - i)
            seg = values[i:i + take]
            z = self._zscores(seg)
            flags = z > self.threshold
            alarms.append(np.flatnonzero(flags) + i)
            self._statistic = float(z[-1])
            self._drift_detected = bool(flags[-1])
            self._n += take
            self._push(seg)
            i += take
        return np.concatenate(alarms).astype(np.intp) if alarms else np.empty(0, dtype=np.intp)
