"""Sequential drift tests of many series against one fixed reference, a batch at a time.

A block test (KS, chi-squared) waits for the end of its block, so its delay is
about the block's length whatever the size of the change.  The tests here
alarm on the event where the evidence suffices: each is a GLR-CUSUM, the
largest of a small bank of Page CUSUMs (as in :mod:`detectors.glr`), against a
reference that never moves (the model version's), so after an alarm a test
restarts from zero and, while the change persists, alarms again.

* **A numeric series** is scored by its position in the reference: the normal
  quantile of its rank, ties broken at random
  (:func:`~detectors.cusum_bank.randomized_normal_scores`), so that under no
  change the score is standard normal whatever the distribution (lognormal,
  heavy-tailed, counts, zero-inflated).  The bank watches a shift of its mean
  (``SHIFTS``, both ways) and a rise of its spread (``VARIANCE_RATIOS``).  The
  random tie-breaks are a hash of the event's position and the series' name,
  so a replay, however batched, gives the same scores.
* **A categorical series** has two tests.  *Unseen*: a rise in the rate of
  categories the reference never had, above the reference's own rate of
  novelty (its Good-Turing missing mass, singletons over size, Laplace-smoothed;
  the smallest rise watched is fourfold, which a misestimate of it does not fake).  *Share*: a rise or fall in the share of each of its common
  categories (two-sided Bernoulli GLRs), the class mix of a classifier, with
  only the ratios the category's reference count can estimate well enough
  (:func:`_affordable`: a rare category's share is too uncertain for a 1.5x row).

Every threshold is simulated (:func:`~detectors.calibration.calibrated_threshold`)
for the test's false-alarm horizon (times ``SAFETY``); a share test splits its
horizon between its categories.  All the CUSUMs of one monitor run in one fixed-point array
(:class:`CUSUMArray`), so a batch costs a few numpy passes over
``rows x events``, and any split of a stream into batches gives the same alarms.
"""

from __future__ import annotations

import math
import zlib
from bisect import bisect_left, bisect_right
from operator import add
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from detectors.calibration import MAX_DIRECT, calibrated_threshold
from detectors.cusum_bank import SCALE, bernoulli_rows, gaussian_rows, randomized_normal_scores
from detectors.exceptions import InvalidParameter

__all__ = ["CLIP", "MIN_REFERENCE", "SHIFTS", "VARIANCE_RATIOS", "CUSUMArray", "SequentialAlarm", "SequentialTests"]

#: Mean shifts watched, in reference standard deviations (of the normal scores).  Smaller shifts are the block
#: tests' to find: a 0.25 sd row would take about 500 events to cross a budgeted threshold anyway.
SHIFTS = (0.5, 1.0, 2.0)
#: Standard-deviation ratios watched.
VARIANCE_RATIOS = (2.0,)
#: Scores are clipped here, so that one value far outside the reference cannot alarm on its own.
CLIP = 3.0
#: Share ratios watched for each common category (up and down), those its reference count can afford (_affordable).
SHARE_RATIOS = (1.5, 3.0, 5.0)
#: A share row is kept only if its reference share's standard error, this many times over, cannot fake it.
SHARE_MARGIN_SE = 3.0
#: Ratios of the unseen rate to the reference's own novelty rate watched.
UNSEEN_RATIOS = (4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
#: A series needs this many reference values for a sequential test.
MIN_REFERENCE = 50
#: Categories with fewer reference counts have no share test of their own (as chi-squared pools them).
MIN_CATEGORY_COUNT = 5
#: At most this many common categories (the most frequent) get a share test; the block test sees the rest.
#: Each costs four CUSUM rows per event: a 50-category feature would otherwise outweigh ten numeric ones.
MAX_SHARE_CATEGORIES = 8
#: Reference sizes the calibration is simulated at: the largest not above the real one (a smaller warm-up is
#: noisier, so this errs conservative), so that nearby sizes share one simulation.
_WARMUP_GRID = (50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: Batches of at most this many events are stepped through in plain Python (:meth:`SequentialTests.update`):
#: numpy's fixed cost per call is most of a one-event batch, and with a thousand models most batches of a
#: model hold one or two predictions.  Integers and IEEE arithmetic in the same order give the same bits.
STEP_BATCH = 4
_MASK64 = (1 << 64) - 1
# Batches of at most this many events rank every series in one search (complex keys); larger ones series by series,
# which is faster there (measured: 8 us against 22 us for 5 series x 1 event, 2.0 ms against 1.5 ms for 21 x 500).
_FEW = 16


def _warmup_bucket(n: int) -> int:
    return max(w for w in _WARMUP_GRID if w <= n)


def _horizon_bucket(horizon: float) -> float:
    """Horizons within the direct range rounded up to a power of two (conservative), so tests share simulations."""
    return float(2 ** math.ceil(math.log2(horizon))) if horizon < MAX_DIRECT else horizon


#: Each test is calibrated at this multiple of its horizon.  Past the simulated range the calibration's
#: extrapolation was measured right at its horizon (38 false alarms where 40 were allowed, 40 normal series
#: of 200,000 events at a horizon of 200,000), not below it as within the range; and a test that may alarm
#: on any event must not be the one that takes a model over its budget.
SAFETY = 2.0


def _threshold(kind: str, horizon: float, warmup: int, spec: dict[str, object]) -> float:
    horizon = _horizon_bucket(SAFETY * horizon)
    direct = min(horizon, float(MAX_DIRECT))
    # Past the direct range the calibration extrapolates one nat per factor e: one simulation serves every horizon.
    return calibrated_threshold(kind, direct, warmup, spec) + math.log(horizon / direct)


def position_uniforms(keys: npt.NDArray[np.uint64], positions: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Uniforms in (0, 1), one per (series key, position): splitmix64 of both, so no state and no batch dependence.

    >>> u = position_uniforms(np.array([1, 2], dtype=np.uint64), np.arange(3))
    >>> u.shape, bool(((u > 0) & (u < 1)).all()), bool(u[0, 1] == position_uniforms(np.array([1], dtype=np.uint64), np.arange(1, 2))[0, 0])
    ((2, 3), True, True)
    """
    x = keys[:, None] ^ (positions.astype(np.uint64)[None, :] * _GOLDEN)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


def _position_uniform(key: int, position: int) -> float:
    """:func:`position_uniforms` of one (series key, position) in Python integers: the same bits."""
    x = key ^ ((position * int(_GOLDEN)) & _MASK64)
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return ((x >> 11) + 0.5) * 2.0 ** -53


def _page(inc: npt.NDArray[np.int64], s0: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Page's recursion ``S_t = max(0, S_{t-1} + w_t)`` on every row: cumulative sum minus its running minimum."""
    c = np.cumsum(inc, axis=1)
    floor = np.minimum.accumulate(c, axis=1)
    np.minimum(floor, -s0[:, None], out=floor)
    stat: npt.NDArray[np.int64] = c - floor
    return stat


@dataclass(frozen=True)
class SequentialAlarm:
    """One alarm: which test, where in the batch, its statistic and threshold (nats), and the change's start."""

    test: int
    index: int
    statistic: float
    threshold: float
    change_start: int


class CUSUMArray:
    """Many independent Page CUSUMs in fixed point, their rows grouped into tests, updated a batch at a time.

    A test alarms when any of its rows passes its threshold; its rows then restart from zero.  The statistics are
    integers (``2**-24`` nat), so the alarms do not depend on how a stream is cut into batches.

    Parameters
    ----------
    thresholds
        Each test's threshold in nats.
    rows_per_test
        How many consecutive rows of the increments each test owns (at least one).

    Examples
    --------
    Two tests, one row each; the second's increments are positive, so it alarms every third event:

    >>> bank = CUSUMArray([10.0, 2.5], [1, 1])
    >>> inc = np.array([[-1.0] * 6, [1.0] * 6])
    >>> [(a.test, a.index, a.statistic) for a in bank.update_many(np.rint(inc * 2**24).astype(np.int64))]
    [(1, 2, 3.0), (1, 5, 3.0)]
    """

    def __init__(self, thresholds: Sequence[float], rows_per_test: Sequence[int]) -> None:
        if len(thresholds) != len(rows_per_test) or any(r < 1 for r in rows_per_test):
            raise InvalidParameter("rows_per_test", "must give at least one row for each threshold")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.rows_per_test = tuple(int(r) for r in rows_per_test)
        self._starts = np.cumsum([0, *self.rows_per_test])[:-1]
        self._threshold_int = np.array([int(t * SCALE) for t in self.thresholds], dtype=np.int64)
        n_rows = sum(self.rows_per_test)
        self._s = np.zeros(n_rows, dtype=np.int64)
        self._since = np.zeros(n_rows, dtype=np.int64)

    @property
    def n_tests(self) -> int:
        return len(self.thresholds)

    @property
    def statistics(self) -> npt.NDArray[np.float64]:
        """Each test's statistic after the last update (nats): the largest of its rows."""
        if not len(self._s):
            return np.zeros(0)
        return np.maximum.reduceat(self._s, self._starts) / SCALE

    def update_many(self, inc: npt.NDArray[np.int64]) -> list[SequentialAlarm]:
        """Feed every row's fixed-point increments for a batch (rows x events); return the alarms in event order.

        An increment of 0 leaves a row as it was: that is how a series skips an event (a missing value).
        """
        n = inc.shape[1] if inc.ndim == 2 else 0
        if n == 0 or not len(self._s):
            return []
        stat = _page(inc, self._s)
        top = np.maximum.reduceat(stat, self._starts, axis=0)
        alarmed = np.flatnonzero((top > self._threshold_int[:, None]).any(axis=1))
        alarms: list[SequentialAlarm] = []
        for test in alarmed.tolist():
            alarms += self._restart_after_alarms(test, inc, stat)
        self._s = stat[:, -1].copy()
        is_zero = stat == 0
        last_zero = n - 1 - np.argmax(is_zero[:, ::-1], axis=1)
        self._since = np.where(is_zero.any(axis=1), n - 1 - last_zero, self._since + n)
        alarms.sort(key=lambda a: (a.index, a.test))
        return alarms

    def step(self, increments: Sequence[Sequence[int]]) -> list[SequentialAlarm]:
        """:meth:`update_many` for a few events, one event (every row's increment) at a time, in Python integers.

        Page's recursion row by row gives the statistics :func:`_page` does, so the alarms and the state are
        :meth:`update_many`'s (a property test checks both on random batch splits).
        """
        if not increments or not len(self._s):
            return []
        s, since = self._s.tolist(), self._since.tolist()
        thresholds = self._threshold_int.tolist()
        lowest = min(thresholds)
        bounds = [(first, first + n) for first, n in zip(self._starts.tolist(), self.rows_per_test, strict=True)]
        alarms: list[SequentialAlarm] = []
        for t, inc in enumerate(increments):
            s = [v if v > 0 else 0 for v in map(add, s, inc)]
            since = [k + 1 if v else 0 for k, v in zip(since, s, strict=True)]
            if max(s) <= lowest:
                continue
            for test, (first, end) in enumerate(bounds):
                top = max(s[first:end])
                if top > thresholds[test]:
                    alarms.append(SequentialAlarm(test, t, top / SCALE, self.thresholds[test],
                                                  since[s.index(top, first, end)]))
                    s[first:end] = since[first:end] = [0] * (end - first)
        self._s = np.array(s, dtype=np.int64)
        self._since = np.array(since, dtype=np.int64)
        return alarms

    def _restart_after_alarms(self, test: int, inc: npt.NDArray[np.int64], stat: npt.NDArray[np.int64]
                              ) -> list[SequentialAlarm]:
        """Find a test's alarms in the batch, restarting its rows from zero after each (``stat`` is rewritten)."""
        first = int(self._starts[test])
        rows = slice(first, first + self.rows_per_test[test])
        threshold = self._threshold_int[test]
        out: list[SequentialAlarm] = []
        t0 = 0
        while True:
            block = stat[rows, t0:]
            over = np.flatnonzero(block.max(axis=0) > threshold)
            if not len(over):
                return out
            t = t0 + int(over[0])
            row = int(np.argmax(stat[rows, t]))
            zeros = np.flatnonzero(stat[first + row, : t + 1] == 0)
            change_start = t - int(zeros[-1]) if len(zeros) else int(self._since[first + row]) + t + 1
            out.append(SequentialAlarm(test, t, int(stat[first + row, t]) / SCALE, self.thresholds[test],
                                       change_start))
            stat[rows, t] = 0
            if t + 1 < stat.shape[1]:
                stat[rows, t + 1:] = _page(inc[rows, t + 1:], np.zeros(self.rows_per_test[test], dtype=np.int64))
            t0 = t + 1
            if t0 >= stat.shape[1]:
                return out


@dataclass(frozen=True)
class _Categorical:
    """A categorical series' reference: its share-tested categories and their rows, and its unseen test."""

    seen: frozenset[Hashable]
    codes: Mapping[Hashable, int]  # share-tested category -> its index
    share_weights: tuple[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]], ...]  # per category: (up, down) rows
    unseen_weights: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None


def _break_even(p0: float, p1: float) -> float:
    """The true rate at which the CUSUM row of ``p1`` against ``p0`` has zero drift (above it, it climbs)."""
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    return -down / (up - down)


def _affordable(p0: float, count: int) -> tuple[float, ...]:
    """The share ratios whose rows a misestimate of ``p0`` from ``count`` reference values cannot set climbing.

    A row's CUSUM climbs on a stationary stream whose true share is past its break-even rate, and then alarms
    however high its threshold: measured on 50 mixed features, the rows of 20- and 50-category features, with
    shares estimated from 10 to 100 counts, made 7 of 16 false alarms.  A row is kept when its break-even rate is
    ``SHARE_MARGIN_SE`` standard errors (relative ``1/sqrt(count)``) away from the estimate, both ways.
    """
    margin = SHARE_MARGIN_SE / math.sqrt(count + 1)
    kept = []
    for ratio in SHARE_RATIOS:
        rows = bernoulli_rows(p0, (ratio,), True)
        if rows and all(abs(_break_even(p0, p1) / p0 - 1) >= margin for p1 in rows):
            kept.append(ratio)
    return tuple(kept)


def _bernoulli_weights(p0: float, ratios: tuple[float, ...], two_sided: bool
                       ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rows = bernoulli_rows(p0, ratios, two_sided)
    up = np.array([round(math.log(p1 / p0) * SCALE) for p1 in rows], dtype=np.int64)
    down = np.array([round(math.log((1 - p1) / (1 - p0)) * SCALE) for p1 in rows], dtype=np.int64)
    return up, down


class SequentialTests:
    """The sequential tests of one data monitor's series against their frozen reference.

    Parameters
    ----------
    numeric
        Each numeric series' name and its reference values (finite, sorted).
    categorical
        Each categorical series' name and its reference category counts.
    horizon
        The false-alarm horizon of each series' test (a categorical series has two tests, each with this horizon).

    Attributes
    ----------
    tests
        Per test of the array: ``(kind, series name, category)``, kind ``"scores"``, ``"unseen"`` or ``"share"``
        (the category only for ``"share"``).

    Examples
    --------
    A lognormal feature shifts by one standard deviation at event 3,000 and a
    new category takes 5% of a categorical one at event 1,000; each is
    alarmed well inside 100 events:

    >>> from collections import Counter
    >>> rng = np.random.default_rng(1)
    >>> ref = np.sort(rng.lognormal(size=2000))
    >>> tests = SequentialTests([("amount", ref)], [("shape", Counter(rng.choice(["box", "bag"], 2000).tolist()))],
    ...                         horizon=1e6)
    >>> amount = np.log(rng.lognormal(size=(1, 4000)))
    >>> amount[0, 3000:] += 1.0
    >>> shape = [["cone" if rng.random() < 0.05 and i >= 1000 else str(rng.choice(["box", "bag"])) for i in range(4000)]]
    >>> alarms = tests.update(np.exp(amount), shape, 0)
    >>> [(tests.tests[a.test][:2], a.index) for a in alarms][:2]
    [(('unseen', 'shape'), 1069), (('unseen', 'shape'), 1180)]
    >>> min(a.index for a in alarms if tests.tests[a.test][0] == "scores")
    3017
    """

    def __init__(self, numeric: Sequence[tuple[str, npt.NDArray[np.float64]]],
                 categorical: Sequence[tuple[str, Mapping[Hashable, int]]], horizon: float) -> None:
        if not (math.isfinite(horizon) and horizon >= 10):
            raise InvalidParameter("horizon", "must be a finite number of at least 10")
        self.horizon = float(horizon)
        self._numeric_names = [name for name, _ in numeric]
        self._references = [np.asarray(ref, dtype=float) for _, ref in numeric]
        # Every reference in one array, series j's values as j + 1j * value: complex numbers sort by real part,
        # then imaginary, so one search ranks a tiny batch of every series at once (see _ranks).
        self._all_references = self._joined_references(self._references)
        self._offsets = np.cumsum([0, *(len(ref) for ref in self._references)])[:-1, None]
        self._keys = np.array([zlib.crc32(name.encode()) for name in self._numeric_names], dtype=np.uint64)
        alpha, beta, gamma = gaussian_rows(SHIFTS, VARIANCE_RATIOS, True)
        n_rows = len(alpha)
        self._alpha, self._beta, self._gamma = (np.asarray(v, dtype=float)[None, :, None] for v in (alpha, beta, gamma))
        self.tests: list[tuple[str, str, Hashable | None]] = []
        thresholds: list[float] = []
        rows: list[int] = []
        for name, ref in numeric:
            spec = {"shifts": SHIFTS, "variance_ratios": VARIANCE_RATIOS, "two_sided": True, "clip": CLIP,
                    "scores": "randomized"}
            self.tests.append(("scores", name, None))
            thresholds.append(_threshold("gaussian", self.horizon, _warmup_bucket(len(ref)), spec))
            rows.append(n_rows)
        self._categorical: list[tuple[str, _Categorical]] = []
        for name, counts in categorical:
            self._categorical.append((name, self._categorical_tests(name, counts, thresholds, rows)))
        self._array = CUSUMArray(thresholds, rows)

    @staticmethod
    def _joined_references(references: Sequence[npt.NDArray[np.float64]]) -> npt.NDArray[np.complex128]:
        joined: npt.NDArray[np.complex128] = np.concatenate([j + 1j * ref for j, ref in enumerate(references)]
                                                            ) if references else np.zeros(0, dtype=complex)
        return joined

    def __getstate__(self) -> dict[str, Any]:
        # The joined references are the references again, twice the bytes: a checkpoint of a thousand models
        # pickles them every interval, so they are rebuilt on load instead.
        state = self.__dict__.copy()
        del state["_all_references"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._all_references = self._joined_references(self._references)

    def _categorical_tests(self, name: str, counts: Mapping[Hashable, int], thresholds: list[float],
                           rows: list[int]) -> _Categorical:
        n = sum(counts.values())
        singletons = sum(1 for c in counts.values() if c == 1)
        # Good-Turing: the chance that the next value is one the reference never had is about singletons / n.
        novelty = (singletons + 1) / (n + 1)
        unseen = None
        if novelty < 0.5:  # else the series is mostly unique values (an id): novelty is its nature, not a change
            unseen = _bernoulli_weights(novelty, UNSEEN_RATIOS, False)
            self.tests.append(("unseen", name, None))
            thresholds.append(_threshold("bernoulli", self.horizon, 0,
                                         {"ratios": UNSEEN_RATIOS, "two_sided": False, "p0": novelty}))
            rows.append(len(unseen[0]))
        # As a Bernoulli GLR's warm-up estimates it, so the calibration's simulation matches.
        p0s = {c: (k + 1) / (n + 2) for c, k in counts.items() if k >= MIN_CATEGORY_COUNT}
        ratios = {c: _affordable(p0, counts[c]) for c, p0 in p0s.items()}
        common = sorted((c for c in p0s if ratios[c]), key=lambda c: (-counts[c], str(c)))[:MAX_SHARE_CATEGORIES]
        weights = []
        for category in common:
            weights.append(_bernoulli_weights(p0s[category], ratios[category], True))
            self.tests.append(("share", name, category))
            thresholds.append(_threshold("bernoulli", self.horizon * len(common), _warmup_bucket(n),
                                         {"ratios": ratios[category], "two_sided": True, "p0": p0s[category]}))
            rows.append(len(weights[-1][0]))
        return _Categorical(frozenset(counts), {c: k for k, c in enumerate(common)}, tuple(weights), unseen)

    @property
    def statistics(self) -> npt.NDArray[np.float64]:
        """Each test's statistic as a share of its threshold (1 is an alarm), after the last update."""
        ratios: npt.NDArray[np.float64] = self._array.statistics / np.asarray(self._array.thresholds)
        return ratios

    def update(self, numeric: npt.NDArray[np.float64], categorical: Sequence[Sequence[Hashable]], first: int
               ) -> list[SequentialAlarm]:
        """Feed a batch: numeric values (series x events, NaN where missing) and categories (per series).

        ``first`` is the position of the batch's first event in the monitored stream: the random tie-breaks
        depend on it, not on the batch.  Returns the alarms in event order.
        """
        if numeric.shape[1] == 0 and not any(len(values) for values in categorical):
            return []
        n_events = numeric.shape[1] if len(numeric) else max((len(v) for v in categorical), default=numeric.shape[1])
        if n_events <= STEP_BATCH:
            return self._step(numeric, categorical, n_events, first)
        return self._update_vectorised(numeric, categorical, first)

    def _update_vectorised(self, numeric: npt.NDArray[np.float64], categorical: Sequence[Sequence[Hashable]],
                           first: int) -> list[SequentialAlarm]:
        increments = self._increments(numeric, categorical, first)
        return [] if increments is None else self._array.update_many(increments)

    def _increments(self, numeric: npt.NDArray[np.float64], categorical: Sequence[Sequence[Hashable]], first: int
                    ) -> npt.NDArray[np.int64] | None:
        """Every row's fixed-point increments for a batch (rows x events); None without a series."""
        parts = []
        if self._numeric_names:
            parts.append(self._numeric_increments(numeric, first))
        for (_, series), values in zip(self._categorical, categorical, strict=True):
            parts.extend(self._categorical_increments(series, values))
        if not parts:
            return None
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _step(self, numeric: npt.NDArray[np.float64], categorical: Sequence[Sequence[Hashable]], n_events: int,
              first: int) -> list[SequentialAlarm]:
        """:meth:`update` of a few events through :meth:`CUSUMArray.step`."""
        increments = self._increments_few(numeric, categorical, n_events, first)
        return self._array.step(increments) if increments and increments[0] else []

    def _increments_few(self, numeric: npt.NDArray[np.float64], categorical: Sequence[Sequence[Hashable]],
                        n_events: int, first: int) -> list[list[int]]:
        """:meth:`_increments` in Python numbers, one list per event: the same integers."""
        increments: list[list[int]] = [[] for _ in range(n_events)]
        if self._numeric_names:
            self._numeric_increments_few(numeric, first, increments)
        for (_, series), values in zip(self._categorical, categorical, strict=True):
            self._categorical_increments_few(series, values, increments)
        return increments

    def _numeric_increments_few(self, values: npt.NDArray[np.float64], first: int, increments: list[list[int]]
                                ) -> None:
        """:meth:`_numeric_increments` in Python floats, appended to each event's increments."""
        alpha, beta, gamma = (v.ravel().tolist() for v in (self._alpha, self._beta, self._gamma))
        zero = [0] * len(alpha)
        keys = self._keys.tolist()
        # The rank quantiles of every present value, then one ndtri call over them all (the ufunc's same loop).
        quantiles: list[float] = []
        for j, (ref, row) in enumerate(zip(self._references, values.tolist(), strict=True)):
            for t, x in enumerate(row):
                if math.isfinite(x):
                    left, right = bisect_left(ref, x), bisect_right(ref, x)
                    u = _position_uniform(keys[j], first + t)
                    quantiles.append((left + u * (right - left + 1)) / (len(ref) + 1.0))
        scores = iter(special.ndtri(np.array(quantiles)).tolist()) if quantiles else iter(())
        for row in values.tolist():
            for t, x in enumerate(row):
                if not math.isfinite(x):
                    increments[t].extend(zero)
                    continue
                z = min(max(next(scores), -CLIP), CLIP)
                zz = z * z
                increments[t].extend([round((a * z + b * zz + g) * SCALE)
                                      for a, b, g in zip(alpha, beta, gamma, strict=True)])

    @staticmethod
    def _categorical_increments_few(series: _Categorical, values: Sequence[Hashable], increments: list[list[int]]
                                    ) -> None:
        """:meth:`_categorical_increments` as lists, appended to each event's increments."""
        unseen = None if series.unseen_weights is None else tuple(w.tolist() for w in series.unseen_weights)
        shares = [(k, up.tolist(), down.tolist()) for k, (up, down) in enumerate(series.share_weights)]
        for t, value in enumerate(values):
            if unseen is not None:
                increments[t].extend(unseen[1] if value in series.seen else unseen[0])
            code = series.codes.get(value, -1)
            for k, up, down in shares:
                increments[t].extend(up if code == k else down)

    def _numeric_increments(self, values: npt.NDArray[np.float64], first: int) -> npt.NDArray[np.int64]:
        uniforms = position_uniforms(self._keys, np.arange(first, first + values.shape[1], dtype=np.int64))
        missing = ~np.isfinite(values)
        if values.shape[1] <= _FEW:
            z = self._scores_of_few(np.where(missing, 0.0, values), uniforms)
        else:
            z = np.empty_like(values)
            for j, ref in enumerate(self._references):
                z[j] = randomized_normal_scores(values[j], ref, uniforms[j])
        np.clip(z, -CLIP, CLIP, out=z)
        z[missing] = 0.0
        # (series, row, event) by broadcasting, then one row per (series, row): no repeated copies of the scores.
        llr = self._alpha * z[:, None, :] + self._beta * (z * z)[:, None, :] + self._gamma
        llr *= SCALE
        np.rint(llr, out=llr)
        inc: npt.NDArray[np.int64] = llr.astype(np.int64).reshape(-1, values.shape[1])
        if missing.any():
            inc[np.repeat(missing, llr.shape[1], axis=0)] = 0
        return inc

    def _scores_of_few(self, values: npt.NDArray[np.float64], uniforms: npt.NDArray[np.float64]
                       ) -> npt.NDArray[np.float64]:
        """:func:`randomized_normal_scores` of every series in two searches: the same ranks, so the same scores.

        A series a call costs about 4 us whatever the batch; the worker often hands a model one prediction.
        """
        keys = np.arange(len(self._references))[:, None] + 1j * values
        left = np.searchsorted(self._all_references, keys, side="left") - self._offsets
        right = np.searchsorted(self._all_references, keys, side="right") - self._offsets
        sizes = np.array([len(ref) for ref in self._references], dtype=float)[:, None]
        return np.asarray(special.ndtri((left + uniforms * (right - left + 1)) / (sizes + 1.0)), dtype=float)

    @staticmethod
    def _categorical_increments(series: _Categorical, values: Sequence[Hashable]) -> list[npt.NDArray[np.int64]]:
        out = []
        if series.unseen_weights is not None:
            seen = series.seen
            novel = np.fromiter((v not in seen for v in values), dtype=bool, count=len(values))
            up, down = series.unseen_weights
            out.append(np.where(novel[None, :], up[:, None], down[:, None]))
        if series.codes:
            codes = np.fromiter((series.codes.get(v, -1) for v in values), dtype=np.int64, count=len(values))
            for k, (up, down) in enumerate(series.share_weights):
                out.append(np.where((codes == k)[None, :], up[:, None], down[:, None]))
        return out
