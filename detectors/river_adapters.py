"""River's drift detectors behind Driftline's protocol, so a config can choose them by name.

Each adapter takes river's hyperparameters under river's names and defaults
(except KSWIN's ``seed``, fixed here so that a replay gives the same alarms),
validates them at construction, and forwards every update.  River restarts a
detector on the update after a drift, as ours do.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from detectors.base import DriftDetector
from detectors.exceptions import InvalidParameter

__all__ = ["ADWIN", "DDM", "EDDM", "HDDMA", "HDDMW", "KSWIN", "PageHinkley"]


def _river_drift() -> ModuleType:
    """``river.drift``, imported on first use: the package's import pulls in ``river.datasets`` and with it pandas,
    scikit-learn and SQLAlchemy, about 0.4 s of every worker's start, which a config without river's detectors never
    needs."""
    from river import drift

    return drift


def _river_binary() -> ModuleType:
    """``river.drift.binary``, imported on first use (see :func:`_river_drift`)."""
    from river.drift import binary

    return binary


def _check_open_unit(name: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise InvalidParameter(name, "must be between 0 and 1")


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidParameter(name, f"must be an integer of at least {minimum}")


def _check_positive(name: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise InvalidParameter(name, "must be a positive number")


class _RiverAdapter(DriftDetector):
    """Forwards to a river detector built from this object's hyperparameters."""

    _binary = False

    def _build(self) -> Any:
        raise NotImplementedError

    def _init_river(self) -> None:
        self._river = self._build()
        self._warning_detected = False

    @property
    def warning_detected(self) -> bool:
        """Whether the last update raised a warning (detectors without warnings: always False)."""
        return self._warning_detected

    def update(self, x: float) -> None:
        if self._drift_detected:
            self._n = 0
        self._n += 1
        self._river.update(bool(x) if self._binary else float(x))
        self._drift_detected = bool(self._river.drift_detected)
        self._warning_detected = bool(getattr(self._river, "warning_detected", False))


class ADWIN(_RiverAdapter):
    """River's ADWIN: adaptive windowing on a bounded real-valued stream.

    Parameters
    ----------
    delta, clock, max_buckets, min_window_length, grace_period
        As in :class:`river.drift.ADWIN`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> errors = np.concatenate([rng.random(3000) < 0.08, rng.random(2000) < 0.20])
    >>> [int(a) for a in ADWIN().update_many(errors)]
    [3295]
    """

    def __init__(self, delta: float = 0.002, clock: int = 32, max_buckets: int = 5,
                 min_window_length: int = 5, grace_period: int = 10) -> None:
        super().__init__()
        _check_open_unit("delta", delta)
        for name, value in (("clock", clock), ("max_buckets", max_buckets),
                            ("min_window_length", min_window_length), ("grace_period", grace_period)):
            _check_positive_int(name, value)
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self._init_river()

    def _build(self) -> Any:
        return _river_drift().ADWIN(**self._get_params())

    @property
    def change_start(self) -> int | None:
        return int(self._river.width) if self._drift_detected else None


class PageHinkley(_RiverAdapter):
    """River's Page-Hinkley test (its threshold is in the data's units).

    Parameters
    ----------
    min_instances, delta, threshold, alpha, mode
        As in :class:`river.drift.PageHinkley`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> xs = np.concatenate([rng.normal(0, 1, 1000), rng.normal(3, 1, 200)])
    >>> [int(a) for a in PageHinkley().update_many(xs)]
    [1010]
    """

    def __init__(self, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0,
                 alpha: float = 1 - 0.0001, mode: str = "both") -> None:
        super().__init__()
        _check_positive_int("min_instances", min_instances)
        if not (isinstance(delta, (int, float)) and delta >= 0):
            raise InvalidParameter("delta", "must be a non-negative number")
        _check_positive("threshold", threshold)
        if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
            raise InvalidParameter("alpha", "must be in (0, 1]")
        if mode not in ("up", "down", "both"):
            raise InvalidParameter("mode", "must be 'up', 'down' or 'both'")
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.mode = mode
        self._init_river()

    def _build(self) -> Any:
        return _river_drift().PageHinkley(**self._get_params())


class KSWIN(_RiverAdapter):
    """River's KSWIN: a Kolmogorov-Smirnov test between a sliding window's old and new parts.

    Parameters
    ----------
    alpha, window_size, stat_size
        As in :class:`river.drift.KSWIN`.
    seed
        Seed of the reference sample; fixed by default so replays agree.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> xs = np.concatenate([rng.normal(0, 1, 300), rng.normal(3, 1, 100)])
    >>> [int(a) for a in KSWIN().update_many(xs)][-1]
    305
    """

    def __init__(self, alpha: float = 0.005, window_size: int = 100, stat_size: int = 30,
                 seed: int | None = 42) -> None:
        super().__init__()
        _check_open_unit("alpha", alpha)
        _check_positive_int("window_size", window_size, 2)
        _check_positive_int("stat_size", stat_size)
        if stat_size >= window_size:
            raise InvalidParameter("stat_size", "must be smaller than window_size")
        self.alpha = alpha
        self.window_size = window_size
        self.stat_size = stat_size
        self.seed = seed
        self._init_river()

    def _build(self) -> Any:
        return _river_drift().KSWIN(**self._get_params())


class DDM(_RiverAdapter):
    """River's DDM (drift detection method) on a 0/1 error stream.

    Parameters
    ----------
    warm_start, warning_threshold, drift_threshold
        As in :class:`river.drift.binary.DDM`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> errors = np.concatenate([rng.random(3000) < 0.08, rng.random(2000) < 0.20])
    >>> [int(a) for a in DDM().update_many(errors)]
    [3244]
    """

    _binary = True

    def __init__(self, warm_start: int = 30, warning_threshold: float = 2.0,
                 drift_threshold: float = 3.0) -> None:
        super().__init__()
        _check_positive_int("warm_start", warm_start)
        _check_positive("warning_threshold", warning_threshold)
        _check_positive("drift_threshold", drift_threshold)
        self.warm_start = warm_start
        self.warning_threshold = warning_threshold
        self.drift_threshold = drift_threshold
        self._init_river()

    def _build(self) -> Any:
        return _river_binary().DDM(**self._get_params())


class EDDM(_RiverAdapter):
    """River's EDDM (early drift detection method) on a 0/1 error stream.

    Parameters
    ----------
    warm_start, alpha, beta
        As in :class:`river.drift.binary.EDDM`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> errors = np.concatenate([rng.random(3000) < 0.08, rng.random(2000) < 0.20])
    >>> [int(a) for a in EDDM().update_many(errors)][:3]
    [383, 791, 1096]
    """

    _binary = True

    def __init__(self, warm_start: int = 30, alpha: float = 0.95, beta: float = 0.9) -> None:
        super().__init__()
        _check_positive_int("warm_start", warm_start)
        _check_open_unit("alpha", alpha)
        _check_open_unit("beta", beta)
        if beta >= alpha:
            raise InvalidParameter("beta", "must be smaller than alpha")
        self.warm_start = warm_start
        self.alpha = alpha
        self.beta = beta
        self._init_river()

    def _build(self) -> Any:
        return _river_binary().EDDM(**self._get_params())


class HDDMA(_RiverAdapter):
    """River's HDDM_A (Hoeffding bound on moving averages), for values in [0, 1].

    Parameters
    ----------
    drift_confidence, warning_confidence, two_sided_test
        As in :class:`river.drift.binary.HDDMA`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> errors = np.concatenate([rng.random(3000) < 0.08, rng.random(2000) < 0.20])
    >>> [int(a) for a in HDDMA().update_many(errors)]
    [3418]
    """

    _binary = True

    def __init__(self, drift_confidence: float = 0.001, warning_confidence: float = 0.005,
                 two_sided_test: bool = False) -> None:
        super().__init__()
        _check_open_unit("drift_confidence", drift_confidence)
        _check_open_unit("warning_confidence", warning_confidence)
        self.drift_confidence = drift_confidence
        self.warning_confidence = warning_confidence
        self.two_sided_test = two_sided_test
        self._init_river()

    def _build(self) -> Any:
        return _river_binary().HDDMA(**self._get_params())


class HDDMW(_RiverAdapter):
    """River's HDDM_W (Hoeffding bound on weighted moving averages), for values in [0, 1].

    Parameters
    ----------
    drift_confidence, warning_confidence, lambda_val, two_sided_test
        As in :class:`river.drift.binary.HDDMW`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> errors = np.concatenate([rng.random(3000) < 0.08, rng.random(2000) < 0.20])
    >>> [int(a) for a in HDDMW().update_many(errors)]
    []
    """

    _binary = True

    def __init__(self, drift_confidence: float = 0.001, warning_confidence: float = 0.005,
                 lambda_val: float = 0.05, two_sided_test: bool = False) -> None:
        super().__init__()
        _check_open_unit("drift_confidence", drift_confidence)
        _check_open_unit("warning_confidence", warning_confidence)
        _check_open_unit("lambda_val", lambda_val)
        self.drift_confidence = drift_confidence
        self.warning_confidence = warning_confidence
        self.lambda_val = lambda_val
        self.two_sided_test = two_sided_test
        self._init_river()

    def _build(self) -> Any:
        return _river_binary().HDDMW(**self._get_params())
