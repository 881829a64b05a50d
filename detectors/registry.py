"""Build a change detector from its configured name and hyperparameters."""

from __future__ import annotations

import inspect
from typing import Any

from detectors.base import DriftDetector
from detectors.cusum import BernoulliCUSUM
from detectors.exceptions import InvalidParameter
from detectors.glr import BernoulliGLR, GaussianGLR
from detectors.outliers import RobustSpikeDetector
from detectors.river_adapters import ADWIN, DDM, EDDM, HDDMA, HDDMW, KSWIN, PageHinkley

__all__ = ["DETECTORS", "build_detector"]

DETECTORS: dict[str, type[DriftDetector]] = {
    "bernoulli_cusum": BernoulliCUSUM,
    "bernoulli_glr": BernoulliGLR,
    "gaussian_glr": GaussianGLR,
    "spike": RobustSpikeDetector,
    "adwin": ADWIN,
    "page_hinkley": PageHinkley,
    "kswin": KSWIN,
    "ddm": DDM,
    "eddm": EDDM,
    "hddm_a": HDDMA,
    "hddm_w": HDDMW,
}


def build_detector(name: str, **params: Any) -> DriftDetector:
    """A detector by registry name, with hyperparameters as keyword arguments.

    Lists (as YAML gives them) are accepted for tuple-valued grids.  An unknown
    name or parameter, or a value breaking its rule, raises
    :class:`~detectors.exceptions.InvalidParameter` naming it.

    Examples
    --------
    >>> build_detector("gaussian_glr", false_alarm_horizon=1e6, shifts=[0.5, 1.0])
    GaussianGLR(false_alarm_horizon=1000000.0, warmup=1000, shifts=(0.5, 1.0), variance_ratios=(1.5, 2.5), two_sided=True, clip=3.0, scores='normal')
    >>> build_detector("adwin", delta=2)
    Traceback (most recent call last):
    ...
    detectors.exceptions.InvalidParameter: delta: must be between 0 and 1
    >>> build_detector("cusum")
    Traceback (most recent call last):
    ...
    detectors.exceptions.InvalidParameter: name: must be one of adwin, bernoulli_cusum, bernoulli_glr, ddm, eddm, gaussian_glr, hddm_a, hddm_w, kswin, page_hinkley, spike
    """
    cls = DETECTORS.get(name)
    if cls is None:
        raise InvalidParameter("name", "must be one of " + ", ".join(sorted(DETECTORS)))
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    for key, value in list(params.items()):
        if key not in accepted:
            raise InvalidParameter(key, f"is not a parameter of {name}; expected one of {', '.join(accepted)}")
        default = signature.parameters[key].default
        if _is_number(default) and not _is_number(value):
            raise InvalidParameter(key, f"must be a number, got {value!r}")
        if isinstance(value, list):
            params[key] = tuple(value)
    try:
        return cls(**params)
    except InvalidParameter:
        raise
    except (TypeError, ValueError) as exc:
        # A wrapped library's complaint does not say which parameter; name them all.
        raise InvalidParameter("params", str(exc)) from exc


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
