"""Distribution drift of a feature against a reference window, and multiple-testing corrections.

Numeric features: population stability index (PSI), two-sample
Kolmogorov-Smirnov, and the Wasserstein distance in units of the reference's
robust spread (so its threshold does not depend on the feature's scale).
Categorical features: chi-squared test of homogeneity, Jensen-Shannon
distance, and the rate of categories never seen in the reference.
:class:`NumericDrift` and :class:`CategoricalDrift` keep a fixed reference and
a sliding window of recent values and test them on demand.  With many features,
correct the p-values with :func:`holm` or :func:`benjamini_hochberg`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.spatial import distance

from detectors.exceptions import InvalidParameter

__all__ = [
    "CategoricalDrift",
    "DriftTest",
    "NumericDrift",
    "benjamini_hochberg",
    "chi_squared",
    "holm",
    "jensen_shannon",
    "ks",
    "psi",
    "unseen_rate",
    "wasserstein",
]

# Share given to an empty bin or category so that logarithms stay finite.
_EPS = 1e-4


@dataclass(frozen=True)
class DriftTest:
    """One test's result: a statistic and, for hypothesis tests, its p-value."""

    statistic: float
    pvalue: float | None = None


def _numeric(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=float).ravel()
    if len(arr) == 0:
        raise InvalidParameter(name, "must not be empty")
    return arr


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins.

    Common reading: below 0.1 stable, 0.1 to 0.25 moderate shift, above 0.25 large shift.

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(0, 1, 5000)
    >>> round(psi(ref, rng.normal(0, 1, 5000)), 3), round(psi(ref, rng.normal(0.5, 1, 5000)), 2)
    (0.005, 0.25)
    """
    ref = _numeric(reference, "reference")
    cur = _numeric(current, "current")
    if not isinstance(bins, int) or bins < 2:
        raise InvalidParameter("bins", "must be an integer of at least 2")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    q = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    p, q = np.maximum(p, _EPS), np.maximum(q, _EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def ks(reference: npt.ArrayLike, current: npt.ArrayLike) -> DriftTest:
    """Two-sample Kolmogorov-Smirnov test.

    >>> rng = np.random.default_rng(0)
    >>> ks(rng.normal(0, 1, 2000), rng.normal(0.3, 1, 2000)).pvalue < 1e-6
    True
    """
    result = stats.ks_2samp(_numeric(reference, "reference"), _numeric(current, "current"))
    return DriftTest(float(result.statistic), float(result.pvalue))


def wasserstein(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """First Wasserstein distance divided by the reference's normal-consistent MAD.

    A pure location shift of ``d`` reference standard deviations scores about ``d``:

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(50, 8, 5000)
    >>> round(wasserstein(ref, ref + 4), 2)
    0.5
    """
    ref = _numeric(reference, "reference")
    cur = _numeric(current, "current")
    scale = 1.4826 * float(np.median(np.abs(ref - np.median(ref)))) or float(np.std(ref)) or 1.0
    return float(stats.wasserstein_distance(ref, cur)) / scale


def _shares(reference: Iterable[Hashable], current: Iterable[Hashable]) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    ref, cur = Counter(reference), Counter(current)
    if not ref or not cur:
        raise InvalidParameter("reference" if not ref else "current", "must not be empty")
    keys = list(ref.keys() | cur.keys())
    return (np.array([ref[k] for k in keys], dtype=float), np.array([cur[k] for k in keys], dtype=float))


def chi_squared(reference: Iterable[Hashable], current: Iterable[Hashable]) -> DriftTest:
    """Chi-squared test that two categorical samples share one distribution.

    >>> chi_squared(["a"] * 500 + ["b"] * 500, ["a"] * 400 + ["b"] * 600).pvalue < 1e-4
    True
    """
    ref, cur = _shares(reference, current)
    if len(ref) < 2:
        return DriftTest(0.0, 1.0)
    stat, pvalue, _, _ = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    return DriftTest(float(stat), float(pvalue))


def jensen_shannon(reference: Iterable[Hashable], current: Iterable[Hashable]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two categorical samples.

    >>> round(jensen_shannon("aabb", "aabb"), 3), round(jensen_shannon("aaaa", "bbbb"), 3)
    (0.0, 1.0)
    """
    ref, cur = _shares(reference, current)
    return float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))


def unseen_rate(reference: Iterable[Hashable], current: Sequence[Hashable]) -> float:
    """Share of ``current`` whose category never occurs in ``reference`` (new shapes, new classes).

    >>> unseen_rate(["box", "tube"], ["box", "cone", "box", "cone"])
    0.5
    """
    if len(current) == 0:
        raise InvalidParameter("current", "must not be empty")
    seen = set(reference)
    return sum(1 for c in current if c not in seen) / len(current)


def _check_pvalues(pvalues: Sequence[float], alpha: float) -> npt.NDArray[np.float64]:
    if not 0 < alpha < 1:
        raise InvalidParameter("alpha", "must be between 0 and 1")
    p = np.asarray(pvalues, dtype=float)
    if np.any((p < 0) | (p > 1) | ~np.isfinite(p)):
        raise InvalidParameter("pvalues", "must all be between 0 and 1")
    return p


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> npt.NDArray[np.bool_]:
    """Holm's step-down test: which hypotheses to reject with family-wise error rate ``alpha``.

    >>> holm([0.01, 0.04, 0.03, 0.005], alpha=0.05).tolist()
    [True, False, False, True]
    """
    p = _check_pvalues(pvalues, alpha)
    m = len(p)
    reject = np.zeros(m, dtype=bool)
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        reject[i] = True
    return reject


def benjamini_hochberg(pvalues: Sequence[float], alpha: float = 0.05) -> npt.NDArray[np.bool_]:
    """Benjamini-Hochberg step-up test: which hypotheses to reject with false discovery rate ``alpha``.

    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.005], alpha=0.05).tolist()
    [True, True, True, True]
    """
    p = _check_pvalues(pvalues, alpha)
    m = len(p)
    order = np.argsort(p, kind="stable")
    passed = np.flatnonzero(p[order] <= alpha * np.arange(1, m + 1) / m)
    reject = np.zeros(m, dtype=bool)
    if len(passed):
        reject[order[: passed[-1] + 1]] = True
    return reject


class NumericDrift:
    """A fixed reference sample against a sliding window of the latest ``window`` values.

    Parameters
    ----------
    reference
        The reference sample (e.g. the training data or a first stable window).
    window
        Number of recent values compared with it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> drift = NumericDrift(rng.normal(0, 1, 2000), window=500)
    >>> drift.update_many(rng.normal(1, 1, 500))
    >>> result = drift.test()
    >>> result["ks"].pvalue < 1e-6, round(result["wasserstein"].statistic, 1)
    (True, 1.0)
    """

    def __init__(self, reference: npt.ArrayLike, window: int = 1000) -> None:
        if not isinstance(window, int) or window < 2:
            raise InvalidParameter("window", "must be an integer of at least 2")
        self.reference = _numeric(reference, "reference")
        self.window = window
        self._recent: deque[float] = deque(maxlen=window)

    def update_many(self, xs: npt.ArrayLike) -> None:
        """Add values to the sliding window."""
        self._recent.extend(np.asarray(xs, dtype=float).ravel().tolist())

    def test(self) -> dict[str, DriftTest]:
        """PSI, KS and scaled Wasserstein of the window against the reference."""
        cur = np.fromiter(self._recent, dtype=float)
        return {
            "psi": DriftTest(psi(self.reference, cur)),
            "ks": ks(self.reference, cur),
            "wasserstein": DriftTest(wasserstein(self.reference, cur)),
        }


class CategoricalDrift:
    """A fixed categorical reference against a sliding window of the latest ``window`` values.

    Examples
    --------
    >>> drift = CategoricalDrift(["box"] * 900 + ["tube"] * 100, window=200)
    >>> drift.update_many(["box"] * 150 + ["tube"] * 30 + ["cone"] * 20)
    >>> result = drift.test()
    >>> result["unseen_rate"].statistic, result["chi_squared"].pvalue < 1e-6
    (0.1, True)
    """

    def __init__(self, reference: Iterable[Hashable], window: int = 1000) -> None:
        if not isinstance(window, int) or window < 1:
            raise InvalidParameter("window", "must be an integer of at least 1")
        self.reference = tuple(reference)
        if not self.reference:
            raise InvalidParameter("reference", "must not be empty")
        self.window = window
        self._recent: deque[Hashable] = deque(maxlen=window)

    def update_many(self, xs: Iterable[Hashable]) -> None:
        """Add categories to the sliding window."""
        self._recent.extend(xs)

    def test(self) -> dict[str, DriftTest]:
        """Chi-squared, Jensen-Shannon and unseen-category rate of the window against the reference."""
        cur = list(self._recent)
        return {
            "chi_squared": chi_squared(self.reference, cur),
            "jensen_shannon": DriftTest(jensen_shannon(self.reference, cur)),
            "unseen_rate": DriftTest(unseen_rate(self.reference, cur)),
        }
