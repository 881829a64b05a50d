"""Prediction-side monitors: what a model's inputs and outputs do, with or without labels.

A :class:`DataMonitor` watches one model version (and, where asked, one
segment) through its prediction events alone:

* **feature drift**: the first ``drift.reference_size`` predictions of the
  version (or a stored reference, ``drift.reference_file``) are its
  reference; every later block of ``drift.window`` predictions
  is tested against it (Kolmogorov-Smirnov for numeric features, chi-squared
  for categorical ones), and so is each categorical feature's share of
  categories the reference never had (new shapes, new classes);
* **sequential drift tests** (``drift.sequential``, on by default) run beside
  the block tests on every event, and alarm on the event the evidence
  suffices instead of at the end of a block (:mod:`detectors.sequential`):
  a GLR on each numeric series' normal scores in the reference
  (``normal_score_glr``), on the rate of categories the reference never had
  (``unseen_glr``, critical, under ``new_category``) and on each common
  category's share, the class mix for the predictions (``share_glr``).  The
  block tests stay as the second opinion: they see changes of shape the
  sequential tests do not model, and each test raises its own alerts, its
  name in ``detector``.  A sequential alert resolves at the end of a block
  without another alarm of it, once the block test passes at the uncorrected 5%
  level (the unseen test: once the block's unseen share is at most half
  ``max_unseen_rate``);
* **prediction drift**: the same tests on the predicted class (classification)
  or value (regression);
* **outliers**: a robust z-score spike detector per numeric feature, which
  flags a spike on the event it happens;
* **trend changes**: a scale-free Gaussian GLR on a numeric feature's value.

(The label-free performance estimates are :mod:`detectors.monitors.estimate_monitor`'s.)

The false-alarm budget is per model, and this monitor receives its share as one
horizon (``false_alarm_horizon``; :mod:`detectors.monitors.budget` splits the
model's): the mean number of predictions between false alarms of all these
monitors together.  Each of the ``k`` budgeted tests gets ``1/k`` of that rate:
a windowed test per watched series, a trend or spike detector per feature that
asks for one, and, with ``drift.sequential``, one sequential test per numeric
series and two per categorical one (unseen and share; the share test splits
its part between its categories).  So turning the sequential tests on lowers
the block tests' share of the budget (to about half with numeric features
only, a third with categorical ones only) rather than adding to the budget.
The windowed tests of one block are Holm-corrected together, so fifty features
do not raise fifty times the false alarms of one.  The block unseen-category
rule is a threshold a person sets, outside the budget.

Alerts are fired once per episode and resolved once: a windowed test resolves
on the first later block that passes at the uncorrected 5% level (hysteresis),
a spike or trend alert after a full window of predictions without another
alarm.  Ids are deterministic, so a replay gives the same ids.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from detectors.base import DriftDetector, alarms_with_state
from detectors.exceptions import StaleState
from detectors.distribution import chi_squared, holm, ks, robust_reference, unseen_rate
from detectors.monitors.episodes import AlertEpisodes, RetrainGate
from detectors.outliers import RobustSpikeDetector
from detectors.sequential import MIN_REFERENCE, SequentialAlarm, SequentialTests
from schemas.config import ModelSpec
from schemas.events import Alert, AlertKind, PredictionEvent, RetrainTrigger, Severity, deterministic_id

__all__ = ["SEQUENTIAL_DETECTORS", "DataMonitor", "confidence_of"]

FEATURE_DRIFT = "feature_drift"
PREDICTION_DRIFT = "prediction_drift"
NEW_CATEGORY = "new_category"
OUTLIERS = "outliers"
TREND = "trend"
#: The sequential tests' detector names, by the kind of test in :class:`~detectors.sequential.SequentialTests`.
SEQUENTIAL_DETECTORS = {"scores": "normal_score_glr", "share": "share_glr", "unseen": "unseen_glr"}
# The layout of a DataMonitor's state: a checkpoint of another layout is refused, and its model starts cold.
_STATE_VERSION = 2
# A drift alert resolves once a block passes the test at this uncorrected level.
RESOLVE_PVALUE = 0.05
# Categories rarer than this many reference counts are pooled for the chi-squared test,
# whose p-value is unreliable for tiny expected counts.
_MIN_EXPECTED = 5
MISSING = "<missing>"


def confidence_of(prediction: PredictionEvent) -> float | None:
    """The model's confidence in its prediction: ``confidence``, else the top class probability.

    >>> from datetime import datetime, timezone
    >>> p = PredictionEvent(prediction_id="a", model="m", model_version="1", prediction="box",
    ...                     event_time=datetime(2026, 1, 1, tzinfo=timezone.utc), probabilities={"box": 0.7, "bag": 0.3})
    >>> confidence_of(p)
    0.7
    """
    if prediction.confidence is not None:
        return prediction.confidence
    if prediction.probabilities:
        return max(prediction.probabilities.values())
    return None


def _as_number(value: object) -> float:
    """A numeric feature's value, NaN when missing or not a number (booleans count as 0/1)."""
    if isinstance(value, (int, float)) and not isinstance(value, str):
        return float(value)
    return math.nan


#: ``dict.get`` typed for one of its overloads, so that ``map`` can take it.
_get: Callable[[dict[str, Any], str], Any] = dict.get


def _as_category(value: object) -> str:
    return MISSING if value is None else str(value)


@dataclass
class _Channel:
    """One watched series: a feature, or the predictions themselves."""

    name: str  # the feature's name, or "prediction"
    monitor: str  # FEATURE_DRIFT or PREDICTION_DRIFT
    kind: str  # "numeric" or "categorical"
    drift: bool
    spike: RobustSpikeDetector | None = None
    trend: DriftDetector | None = None
    reference: list[Hashable] | npt.NDArray[np.float64] = field(default_factory=list)
    reference_counts: Counter[Hashable] = field(default_factory=Counter)
    block: list[Hashable] = field(default_factory=list)
    # The frozen numeric reference's (median, robust spread), computed once: per block it cost about 6% of the
    # offline features20 monitors' time.  None until asked (a checkpoint from before this field reads the default).
    reference_center: tuple[float, float] | None = None

    def reference_median_and_spread(self) -> tuple[float, float]:
        """The frozen numeric reference's median and robust spread (:func:`detectors.distribution.robust_reference`)."""
        if self.reference_center is None:
            assert isinstance(self.reference, np.ndarray)
            self.reference_center = robust_reference(self.reference)
        return self.reference_center

    @property
    def feature(self) -> str | None:
        return None if self.monitor == PREDICTION_DRIFT else self.name


@dataclass(frozen=True)
class _Pending:
    """An alert decided inside a batch, kept with its position so that a batch's output is in event order."""

    position: int
    alert: Alert
    trigger_lookback: int | None  # predictions back to train from, if it may trigger a retrain


class DataMonitor:
    """Feature and prediction drift, outliers and trends for one model version.

    Parameters
    ----------
    model, version
        The model and the version these predictions come from.
    spec
        The model's monitor config.
    build_detector
        Makes the trend detectors (``gaussian_glr``).
    segment
        When set, this monitor watches one segment of the version's traffic (no retrains).
    gate
        The model's retrain cooldown, shared with its performance monitor.
    reference
        Stored reference predictions (``drift.reference_file``); without them the version's first
        ``drift.reference_size`` predictions are its reference.
    false_alarm_horizon
        This monitor's share of the model's false-alarm budget (``drift.false_alarm_horizon`` when None).

    Examples
    --------
    A fraud model's ``amount`` feature, normal around 50, has a spike at
    prediction 1,500 and shifts up by two standard deviations from 2,000 on.
    The spike alert fires on its event and resolves after a quiet window; the
    sequential test on the feature's normal scores fires 8 predictions into the
    shift, and the Kolmogorov-Smirnov test, the second opinion, at the end of
    the first block of 500 that is mostly shifted:

    >>> from datetime import datetime, timedelta, timezone
    >>> from detectors.registry import build_detector
    >>> from schemas.config import parse_monitor_config
    >>> spec = parse_monitor_config(
    ...     "models: {fraud: {task: classification, performance: {threshold: 0.9},"
    ...     " features: {amount: {kind: numeric, outliers: true}},"
    ...     " drift: {reference_size: 1000, window: 500}}}").models["fraud"]
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> amounts = np.random.default_rng(3).normal(50, 5, 3000)
    >>> amounts[1500], amounts[2000:] = 500.0, amounts[2000:] + 10
    >>> predictions = [PredictionEvent(prediction_id=f"p{i}", model="fraud", model_version="4", prediction="ok",
    ...                                event_time=t0 + timedelta(seconds=i), features={"amount": float(x)})
    ...                for i, x in enumerate(amounts)]
    >>> monitor = DataMonitor("fraud", "4", spec, build_detector)
    >>> alerts, triggers = monitor.observe(predictions)
    >>> [(a.monitor, a.detector, a.status, int((a.event_time - t0).total_seconds())) for a in alerts]
    [('outliers', 'robust_spike', 'fired', 1500), ('outliers', 'robust_spike', 'resolved', 2000), ('feature_drift', 'normal_score_glr', 'fired', 2008), ('feature_drift', 'ks', 'fired', 2499)]
    >>> monitor.open_alerts
    [('feature_drift', 'amount', 'ks'), ('feature_drift', 'amount', 'normal_score_glr')]
    """

    def __init__(
        self,
        model: str,
        version: str,
        spec: ModelSpec,
        build_detector: Callable[..., DriftDetector],
        segment: str | None = None,
        gate: RetrainGate | None = None,
        reference: Sequence[PredictionEvent] = (),
        false_alarm_horizon: float | None = None,
    ) -> None:
        self._state_version = _STATE_VERSION
        self.model, self.version, self.spec, self.segment = model, version, spec, segment
        self.gate = gate
        drift = spec.drift
        #: This monitor's budget: mean predictions between false alarms of all its budgeted tests together.
        self.false_alarm_horizon = float(false_alarm_horizon or drift.false_alarm_horizon)
        self._channels: list[_Channel] = []
        for name, feature_spec in spec.features.items():
            self._channels.append(_Channel(name, FEATURE_DRIFT, feature_spec.kind, feature_spec.drift))
        if spec.prediction_drift:
            kind = "categorical" if spec.task == "classification" else "numeric"
            self._channels.append(_Channel("prediction", PREDICTION_DRIFT, kind, True))
        n_windowed = sum(c.drift for c in self._channels)
        n_point = sum(f.outliers + f.trend for f in spec.features.values())
        # Sequential tests: one per numeric series, two (unseen, share) per categorical one.
        n_sequential = sum(1 if c.kind == "numeric" else 2 for c in self._channels if c.drift) if drift.sequential else 0
        self.n_budgeted = n_windowed + n_point + n_sequential
        share = 1.0 / (self.false_alarm_horizon * max(self.n_budgeted, 1))  # false alarms per prediction, each
        # Holm across one block's tests keeps the block's family-wise error at the tests' summed share.
        self.block_alpha = min(0.5, n_windowed * drift.window * share)
        self.spike_zscore = max(drift.outlier_min_zscore, float(stats.norm.isf(share / 2)))
        for channel in self._channels:
            feature = spec.features.get(channel.name) if channel.monitor == FEATURE_DRIFT else None
            if feature is not None and feature.outliers:
                channel.spike = RobustSpikeDetector(window=drift.window, threshold=self.spike_zscore)
            if feature is not None and feature.trend:
                channel.trend = build_detector(
                    "gaussian_glr", false_alarm_horizon=self.false_alarm_horizon * self.n_budgeted,
                    warmup=drift.reference_size,
                )
        # Built when the reference is frozen: the series tested, in the order SequentialTests takes them.
        self._sequential_tests: SequentialTests | None = None
        self._sequential_numeric: list[_Channel] = []
        self._sequential_categorical: list[_Channel] = []
        self.n_seen = 0
        self._retrains = spec.retrain.enabled and spec.retrain.on_drift and segment is None
        # By (monitor, series, detector).
        self._episodes: AlertEpisodes[tuple[str, str, str]] = AlertEpisodes(
            model, segment, scope=(model, version, segment or ""), version=version)
        self._times: deque[datetime] = deque(maxlen=drift.window)  # of the predictions before this batch
        #: Latest value of each statistic, by (monitor, series, detector), for the metrics.
        self.statistics: dict[tuple[str, str, str], float] = {}
        self.last_seen = 0  # set by the owner: a clock of which version was seen most recently
        self._label = f"{model} version {version}" + (f" [segment {segment}]" if segment else "")
        # Live predictions still to collect into the reference: none when a stored one is given.
        self._to_collect = 0 if reference else drift.reference_size
        self._reference_source = (f"the stored reference of {len(reference)} predictions" if reference
                                  else f"the reference of the first {drift.reference_size} predictions")
        if reference:
            self._start_from(reference)

    # ------------------------------------------------------------------ state

    def __setstate__(self, state: dict[str, object]) -> None:
        # A checkpoint of an older layout would fail later, at some event, on a missing attribute: refuse it now.
        if state.get("_state_version") != _STATE_VERSION:
            raise StaleState("DataMonitor", state.get("_state_version", 1), _STATE_VERSION)
        self.__dict__.update(state)

    def _start_from(self, reference: Sequence[PredictionEvent]) -> None:
        """Take a stored reference: freeze it, and warm the spike and trend detectors on it."""
        features = [p.features for p in reference]
        for channel in self._channels:
            values = self._column(channel, reference, features)
            if channel.drift:
                self._extend_reference(channel, values)
            numeric = np.asarray(values, dtype=float) if channel.kind == "numeric" else None
            for detector in (channel.spike, channel.trend):
                if detector is not None and numeric is not None:
                    detector.update_many(numeric[np.isfinite(numeric)])
        self._freeze_reference()

    @property
    def reference_complete(self) -> bool:
        return self.n_seen >= self._to_collect

    @property
    def open_alerts(self) -> list[tuple[str, str, str]]:
        return sorted(self._episodes)

    # ---------------------------------------------------------------- observe

    def observe(self, predictions: Sequence[PredictionEvent]) -> tuple[list[Alert], list[RetrainTrigger]]:
        """Watch a batch of this version's predictions, in event order; return alerts and triggers in order."""
        if not predictions:
            return [], []
        pending: list[_Pending] = []
        start = self.n_seen
        features = [p.features for p in predictions]
        columns = {c.name: self._column(c, predictions, features) for c in self._channels}
        for channel in self._channels:
            # Most numeric features have neither a spike nor a trend detector: no array to build for them.
            if channel.kind == "numeric" and (channel.spike is not None or channel.trend is not None):
                self._sequential(channel, np.asarray(columns[channel.name], dtype=float), start, predictions, pending)
        # Reference, then consecutive blocks; a block is judged on the prediction that completes it.
        reference_size, window = self._to_collect, self.spec.drift.window
        numeric: npt.NDArray[np.float64] | None = None  # the sequentially tested numeric series, once needed
        i = 0
        while i < len(predictions):
            position = start + i
            if position < reference_size:
                take = min(reference_size - position, len(predictions) - i)
                for channel in self._channels:
                    if channel.drift:
                        self._extend_reference(channel, columns[channel.name][i:i + take])
                if position + take == reference_size:
                    self._freeze_reference()
            else:
                into_block = (position - reference_size) % window
                take = min(window - into_block, len(predictions) - i)
                for channel in self._channels:
                    if channel.drift:
                        channel.block.extend(columns[channel.name][i:i + take])
                if self._sequential_tests is not None:
                    if numeric is None:
                        numeric = np.array([columns[c.name] for c in self._sequential_numeric],
                                           dtype=float).reshape(len(self._sequential_numeric), len(predictions))
                    self._test_sequentially(numeric, columns, i, take, start, predictions, pending)
                if into_block + take == window:
                    self._judge_block(start + i + take - 1, predictions[i + take - 1], pending)
            i += take
        self.n_seen += len(predictions)
        # Stable sort: alerts of one position keep the order they were decided in.
        pending.sort(key=lambda p: p.position)
        alerts = [p.alert for p in pending]
        triggers = [t for p in pending if (t := self._trigger(p, predictions, start)) is not None]
        self._times.extend(p.event_time for p in predictions[-self.spec.drift.window:])
        return alerts, triggers

    def retire(self, at: PredictionEvent, why: str) -> list[Alert]:
        """Resolve every open alert: this version is no longer watched (``at`` is the event that caused it)."""
        alerts = []
        for key in sorted(self._episodes):
            monitor, series, detector = key
            message = f"{self._label}: {monitor} {detector} alert on {series} resolved: {why}"
            alerts.append(self._resolve(key, at, 0.0, 0.0, message))
        return alerts

    # --------------------------------------------------------------- columns

    def _column(self, channel: _Channel, predictions: Sequence[PredictionEvent],
                features: Sequence[dict[str, Any]]) -> list[Hashable]:
        if channel.monitor == PREDICTION_DRIFT:
            values: list[Any] = [p.prediction for p in predictions]
        else:
            values = list(map(_get, features, repeat(channel.name)))  # (C calls: no bytecode per value)
        # The common case whole (every value a float, or a str), then per value: a call per value was a tenth of
        # the monitor's time at 20 features.
        wanted = float if channel.kind == "numeric" else str
        if set(map(type, values)) == {wanted}:
            return values
        if wanted is float:
            return [v if type(v) is float else _as_number(v) for v in values]
        return [v if type(v) is str else _as_category(v) for v in values]

    def _extend_reference(self, channel: _Channel, values: Sequence[Hashable]) -> None:
        assert isinstance(channel.reference, list)
        channel.reference.extend(values)

    def _freeze_reference(self) -> None:
        for channel in self._channels:
            if channel.kind == "numeric":
                ref = np.asarray(channel.reference, dtype=float)
                channel.reference = np.sort(ref[np.isfinite(ref)])
            else:
                channel.reference_counts = Counter(channel.reference)
                channel.reference = []
        if self.spec.drift.sequential:
            tested = [c for c in self._channels if c.drift and (
                len(c.reference) if c.kind == "numeric" else sum(c.reference_counts.values())) >= MIN_REFERENCE]
            self._sequential_numeric = [c for c in tested if c.kind == "numeric"]
            self._sequential_categorical = [c for c in tested if c.kind == "categorical"]
        if self._sequential_numeric or self._sequential_categorical:
            self._sequential_tests = SequentialTests(
                [(c.name, np.asarray(c.reference)) for c in self._sequential_numeric],
                [(c.name, c.reference_counts) for c in self._sequential_categorical],
                horizon=self.false_alarm_horizon * self.n_budgeted,
            )

    # ------------------------------------------------------- windowed tests

    def _judge_block(self, position: int, at: PredictionEvent, pending: list[_Pending]) -> None:
        tests: list[tuple[_Channel, float, float, str]] = []  # channel, p-value, statistic, description
        for channel in self._channels:
            block, channel.block = channel.block, []
            if not channel.drift:
                continue
            if channel.kind == "numeric":
                result = self._numeric_test(channel, block)
            else:
                result = self._categorical_test(channel, block, position, at, pending)
            if result is not None:
                tests.append((channel, *result))
            else:  # no block test to wait for (too few values or categories): a quiet block resolves
                self._resolve_sequential("scores" if channel.kind == "numeric" else "share", channel, position, at,
                                         0.0, 0.0, "no block test possible", pending)
        if not tests:
            return
        reject = holm([t[1] for t in tests], alpha=self.block_alpha) if self.block_alpha > 0 else [False] * len(tests)
        for (channel, pvalue, statistic, description), drifted in zip(tests, reject, strict=True):
            detector = "ks" if channel.kind == "numeric" else "chi_squared"
            key = (channel.monitor, channel.name, detector)
            self.statistics[key] = statistic
            if drifted and key not in self._episodes:
                what = "predictions" if channel.monitor == PREDICTION_DRIFT else f"feature {channel.name}"
                message = (
                    f"{self._label}: {what} drifted from {self._reference_source}: {description} "
                    f"(p={pvalue:.2g}, corrected level {self.block_alpha:.2g})"
                )
                self._fire(key, position, at, "drift", "warning", statistic, pvalue, message, pending,
                           lookback=self.spec.drift.window)
            elif not drifted and key in self._episodes and pvalue > RESOLVE_PVALUE:
                message = f"{self._label}: {channel.name} is back in line with the reference ({description}, p={pvalue:.2g})"
                pending.append(_Pending(position, self._resolve(key, at, statistic, pvalue, message), None))
            if not drifted and pvalue > RESOLVE_PVALUE:
                self._resolve_sequential("scores" if channel.kind == "numeric" else "share", channel, position, at,
                                         statistic, pvalue, f"{description}, p={pvalue:.2g}", pending)

    def _resolve_sequential(
        self, kind: str, channel: _Channel, position: int, at: PredictionEvent, statistic: float, threshold: float,
        why: str, pending: list[_Pending],
    ) -> None:
        """Resolve a sequential alert at a block's end: the block test passes and the sequential test was quiet.

        The block test's hysteresis, not a quiet spell alone: a small persisting shift re-alarms the sequential
        test slowly, and would otherwise open a new episode every few hundred predictions.
        """
        key = self._sequential_key(kind, channel)
        episode = self._episodes.get(key)
        if episode is None or episode.last_alarm > position - self.spec.drift.window:
            return
        message = (f"{self._label}: {channel.name} is back in line with the reference: no sequential alarm in the "
                   f"last {self.spec.drift.window} predictions and the block test passes ({why}); resolved")
        pending.append(_Pending(position, self._resolve(key, at, statistic, threshold, message), None))

    def _numeric_test(self, channel: _Channel, block: list[Hashable]) -> tuple[float, float, str] | None:
        ref = channel.reference
        cur = np.asarray(block, dtype=float)
        cur = cur[np.isfinite(cur)]
        assert isinstance(ref, np.ndarray)
        if len(ref) < 2 or len(cur) < 2:
            return None
        result = ks(ref, cur)
        ref_median, scale = channel.reference_median_and_spread()
        cur_median = float(np.median(cur))
        shift = (cur_median - ref_median) / (scale or 1.0)
        description = (
            f"median {ref_median:.4g} -> {cur_median:.4g} ({shift:+.2f} robust sd), KS distance {result.statistic:.3f}"
        )
        return result.pvalue, result.statistic, description

    def _categorical_test(
        self, channel: _Channel, block: list[Hashable], position: int, at: PredictionEvent, pending: list[_Pending]
    ) -> tuple[float, float, str] | None:
        if not block or not channel.reference_counts:
            return None
        counts = Counter(block)
        self._judge_unseen(channel, unseen_rate(channel.reference_counts, counts), counts, position, at, pending)
        result = chi_squared(channel.reference_counts, counts, _MIN_EXPECTED)
        if result is None:
            return None
        description = (f"largest change {result.category!r} {result.reference_share:.1%} -> "
                       f"{result.current_share:.1%}")
        return result.pvalue, result.statistic, description

    def _judge_unseen(
        self, channel: _Channel, rate: float, counts: Counter[Hashable], position: int, at: PredictionEvent,
        pending: list[_Pending],
    ) -> None:
        limit = self.spec.drift.max_unseen_rate
        key = (channel.monitor, channel.name, "unseen_rate")
        self.statistics[key] = rate
        if rate > limit and key not in self._episodes:
            new = sorted((str(c) for c in counts if c not in channel.reference_counts), key=lambda c: -counts[c])[:5]
            what = "predicted classes" if channel.monitor == PREDICTION_DRIFT else f"categories of {channel.name}"
            message = (
                f"{self._label}: {rate:.1%} of the last {self.spec.drift.window} predictions have {what} never seen "
                f"in the reference (limit {limit:.1%}): {', '.join(new)}"
            )
            self._fire(key, position, at, "drift", "critical", rate, limit, message, pending,
                       lookback=self.spec.drift.window, monitor=NEW_CATEGORY)
        elif key in self._episodes and rate <= limit / 2:
            message = f"{self._label}: unseen {channel.name} categories down to {rate:.1%}; alert resolved"
            pending.append(_Pending(position, self._resolve(key, at, rate, limit, message), None))
        if rate <= limit / 2:
            self._resolve_sequential("unseen", channel, position, at, rate, limit,
                                     f"unseen categories {rate:.1%} of the block", pending)

    # ------------------------------------------------------ sequential tests

    def _sequential_key(self, kind: str, channel: _Channel) -> tuple[str, str, str]:
        return (channel.monitor, channel.name, SEQUENTIAL_DETECTORS[kind])

    def _test_sequentially(
        self, numeric: npt.NDArray[np.float64], columns: dict[str, list[Hashable]], i: int, take: int, start: int,
        predictions: Sequence[PredictionEvent], pending: list[_Pending],
    ) -> None:
        """Run the sequential tests over ``predictions[i:i + take]``; fire, extend or resolve their episodes."""
        tests = self._sequential_tests
        assert tests is not None
        categorical = [columns[c.name][i:i + take] for c in self._sequential_categorical]
        alarms = tests.update(numeric[:, i:i + take], categorical, start + i)
        channels = {c.name: c for c in (*self._sequential_numeric, *self._sequential_categorical)}
        for alarm in alarms:
            kind, name, category = tests.tests[alarm.test]
            channel = channels[name]
            key = self._sequential_key(kind, channel)
            position = start + i + alarm.index
            episode = self._episodes.get(key)
            if episode is not None:
                episode.last_alarm = position
                continue
            recent = columns[name][max(i, i + alarm.index - alarm.change_start + 1):i + alarm.index + 1]
            message = self._sequential_message(kind, channel, category, alarm, recent)
            self._fire(key, position, predictions[i + alarm.index], "drift",
                       "critical" if kind == "unseen" else "warning", alarm.statistic, alarm.threshold, message,
                       pending, lookback=max(alarm.change_start, 1),
                       monitor=NEW_CATEGORY if kind == "unseen" else channel.monitor)
        ratios = tests.statistics
        by_key: dict[tuple[str, str, str], float] = {}
        for (kind, name, _), ratio in zip(tests.tests, ratios.tolist(), strict=True):
            key = self._sequential_key(kind, channels[name])
            by_key[key] = max(by_key.get(key, 0.0), ratio)
        self.statistics.update(by_key)

    def _sequential_message(self, kind: str, channel: _Channel, category: Hashable | None, alarm: SequentialAlarm,
                            recent: Sequence[Hashable]) -> str:
        what = "predictions" if channel.monitor == PREDICTION_DRIFT else f"feature {channel.name}"
        test = (f"sequential test, GLR {alarm.statistic:.1f} > {alarm.threshold:.1f}, change began about "
                f"{alarm.change_start} predictions earlier")
        if kind == "scores":
            values = np.asarray(recent, dtype=float)
            values = values[np.isfinite(values)]
            ref_median, scale = channel.reference_median_and_spread()
            cur_median = float(np.median(values)) if len(values) else math.nan
            shift = (cur_median - ref_median) / (scale or 1.0)
            return (f"{self._label}: {what} drifted from {self._reference_source}: median of the last "
                    f"{len(values)} values {cur_median:.4g} against {ref_median:.4g} ({shift:+.2f} robust sd) ({test})")
        counts = channel.reference_counts
        n_ref = sum(counts.values())
        if kind == "share":
            share = sum(1 for v in recent if v == category) / max(len(recent), 1)
            return (f"{self._label}: the share of {category!r} in the {what} moved from {counts[category] / n_ref:.1%} "
                    f"in {self._reference_source} to {share:.1%} of the last {len(recent)} ({test})")
        new = Counter(v for v in recent if v not in counts)
        names = ", ".join(str(c) for c, _ in new.most_common(5))
        kinds = "predicted classes" if channel.monitor == PREDICTION_DRIFT else f"categories of {channel.name}"
        return (f"{self._label}: {sum(new.values())} of the last {len(recent)} predictions have {kinds} never seen "
                f"in the reference: {names} ({test})")

    # --------------------------------------------------------- per event

    def _sequential(
        self, channel: _Channel, values: npt.NDArray[np.float64], start: int, predictions: Sequence[PredictionEvent],
        pending: list[_Pending],
    ) -> None:
        present = np.flatnonzero(np.isfinite(values))
        for detector_name, monitor, detector in (("robust_spike", OUTLIERS, channel.spike),
                                                 ("gaussian_glr", TREND, channel.trend)):
            if detector is None:
                continue
            key = (monitor, channel.name, detector_name)
            states = alarms_with_state(detector, values[present]) if len(present) else []
            for j, statistic, threshold, change_start in states:
                idx = int(present[j])
                position = start + idx
                self._maybe_resolve_quiet(key, position, predictions, start, pending)
                episode = self._episodes.get(key)
                if episode is not None:
                    episode.last_alarm = position
                    continue
                value = float(values[idx])
                kind: AlertKind
                if monitor == OUTLIERS:
                    message = (
                        f"{self._label}: {channel.name} = {value:.6g} is a spike, {statistic:.1f} robust standard "
                        f"deviations from the median of its last {self.spec.drift.window} values "
                        f"(limit {self.spike_zscore:.3g})"
                    )
                    kind, lookback = "outlier", 0
                else:
                    began = f"about {change_start} predictions earlier" if change_start is not None else "recently"
                    message = (
                        f"{self._label}: the level of {channel.name} changed (a trend reversal or a new regime), "
                        f"beginning {began}; latest value {value:.6g}"
                    )
                    kind, lookback = "drift", change_start or self.spec.drift.window
                self._fire(key, position, predictions[idx], kind, "warning", statistic, threshold, message, pending,
                           lookback=lookback, monitor=monitor)
            self._maybe_resolve_quiet(key, start + len(values), predictions, start, pending)

    def _maybe_resolve_quiet(
        self, key: tuple[str, str, str], upto: int, predictions: Sequence[PredictionEvent], start: int,
        pending: list[_Pending],
    ) -> None:
        """Resolve a spike or trend alert once a full window has passed without another alarm before ``upto``."""
        episode = self._episodes.get(key)
        if episode is None:
            return
        resolve_at = episode.last_alarm + self.spec.drift.window
        if resolve_at < upto and resolve_at >= start:
            at = predictions[resolve_at - start]
            message = f"{self._label}: no {key[0]} alarm on {key[1]} for {self.spec.drift.window} predictions; resolved"
            pending.append(_Pending(resolve_at, self._resolve(key, at, 0.0, 0.0, message), None))

    # ------------------------------------------------------------- alerts

    def _fire(
        self, key: tuple[str, str, str], position: int, at: PredictionEvent, kind: AlertKind, severity: Severity,
        statistic: float, threshold: float, message: str, pending: list[_Pending], lookback: int | None,
        monitor: str | None = None,
    ) -> None:
        monitor = monitor or key[0]
        alert = self._episodes.fire(
            key, (monitor, key[1], key[2]), position, at, kind=kind, severity=severity, monitor=monitor,
            detector=key[2], feature=None if key[0] == PREDICTION_DRIFT else key[1],
            statistic=statistic, threshold=threshold, message=message,
        )
        pending.append(_Pending(position, alert, lookback if self._retrains else None))

    def _resolve(
        self, key: tuple[str, str, str], at: PredictionEvent, statistic: float, threshold: float, message: str,
    ) -> Alert:
        return self._episodes.resolve(key, at, statistic=statistic, threshold=threshold, message=message)

    def _trigger(self, pending: _Pending, predictions: Sequence[PredictionEvent], start: int) -> RetrainTrigger | None:
        alert = pending.alert
        if pending.trigger_lookback is None or alert.status != "fired" or self.gate is None:
            return None
        if not self.gate.admit(alert.event_time):
            return None
        # Train from where the change began: inside this batch, or in the last window before it (the oldest
        # time kept when the change began earlier still).
        first = pending.position - max(pending.trigger_lookback, 1)
        if first >= start:
            data_from = predictions[first - start].event_time
        elif self._times:
            data_from = self._times[max(0, len(self._times) - (start - first))]
        else:
            data_from = predictions[0].event_time
        return RetrainTrigger(
            trigger_id=deterministic_id(alert.alert_id, "retrain"),
            model=self.model,
            reason="drift",
            alert_ids=[alert.alert_id],
            data_from=min(data_from, alert.event_time),
            event_time=alert.event_time,
            message=alert.message[:1024],
        )
