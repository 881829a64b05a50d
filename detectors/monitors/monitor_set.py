"""Every configured model's monitors, and the routing of a batch to them by model, version and segment."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from detectors.base import DriftDetector
from detectors.exceptions import InvalidParameter
from detectors.monitors.budget import DATA, PERFORMANCE, SEGMENT_DATA, SEGMENT_PERFORMANCE, AlarmBudget, takes_horizon
from detectors.monitors.data_monitor import DataMonitor
from detectors.monitors.episodes import MonitorResult
from detectors.monitors.estimate_monitor import EstimateMonitor
from detectors.monitors.performance_monitor import ModelMonitor
from detectors.segment_baseline import BorrowedBaselineGLR
from schemas.config import ModelSpec, MonitorConfig, PerformanceSpec
from schemas.events import Alert, LabelledExample, PredictionEvent
from schemas.exceptions import ConfigError

__all__ = ["DetectorFactory", "MonitorSet"]

DetectorFactory = Callable[..., DriftDetector]


class MonitorSet:
    """Every configured model's monitors: performance on labelled examples, data monitors on predictions.

    Per model there is one :class:`ModelMonitor` (and one per segment where
    asked) and, for each of its recent versions, one
    :class:`~detectors.monitors.data_monitor.DataMonitor` (again per segment where
    asked) and, with ``estimated_performance``, one
    :class:`~detectors.monitors.estimate_monitor.EstimateMonitor`.  The model's
    false-alarm budget is split between them (:mod:`detectors.monitors.budget`).
    A segment's Bernoulli GLR borrows the model's pooled error rate of its first
    ``warmup`` labelled examples until it has its own baseline
    (:mod:`detectors.segment_baseline`).  Events of models absent from the config
    are counted, not watched.

    Examples
    --------
    A packaging robot's model, version 1 then version 2, and a scanner model
    nobody configured.  Predictions are watched per version; a quarter of
    the robot's labels disagree, so its 50-example accuracy alerts as soon as
    the window is full; the scanner's examples are counted, not watched:

    >>> from datetime import datetime, timedelta, timezone
    >>> from detectors.registry import build_detector
    >>> from schemas.config import parse_monitor_config
    >>> from schemas.events import OutcomeEvent
    >>> config = parse_monitor_config("models: {robot: {task: classification, performance: {threshold: 0.8, window: 50},"
    ...                               " prediction_drift: true, drift: {reference_size: 100, window: 50}}}")
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> predictions = [PredictionEvent(prediction_id=f"{model}-{i}", model=model, model_version=version,
    ...                                prediction="box", event_time=t0 + timedelta(seconds=i))
    ...                for model, n in (("robot", 300), ("scanner", 5)) for i in range(n)
    ...                for version in ["1" if i < 150 else "2"]]
    >>> monitors = MonitorSet(config, build_detector)
    >>> monitors.observe_predictions(predictions).alerts, list(monitors.data_monitors), monitors.n_predictions
    ([], [('robot', '1', None), ('robot', '2', None)], Counter({'robot': 300}))
    >>> labelled = [LabelledExample(prediction=p, outcome=OutcomeEvent(
    ...     prediction_id=p.prediction_id, event_time=p.event_time, actual="box" if i % 4 else "bag"))
    ...     for i, p in enumerate(predictions)]
    >>> result = monitors.observe(labelled)
    >>> [(a.model, a.detector, a.status, int((a.event_time - t0).total_seconds())) for a in result.alerts]
    [('robot', 'threshold', 'fired', 49)]
    >>> result.n_unmonitored, round(monitors.monitors["robot"].metric_value, 2)
    (5, 0.76)
    """

    #: Where a model's segments beyond ``max_segments``, and events without a segment, are pooled.
    POOLED = "pooled-other"

    def __init__(self, config: MonitorConfig, build_detector: DetectorFactory) -> None:
        self.config = config
        self._build_detector = build_detector
        #: Each model's false-alarm budget and its split.
        self.budgets: dict[str, AlarmBudget] = {model: AlarmBudget.of(spec) for model, spec in config.models.items()}
        self.monitors: dict[str, ModelMonitor] = {
            model: ModelMonitor(model, spec, self._detector_for(model, spec, PERFORMANCE))
            for model, spec in config.models.items()
        }
        #: (model, version) -> its label-free estimates.
        self.estimate_monitors: dict[tuple[str, str], EstimateMonitor] = {}
        #: model -> (labelled examples, errors) of its first ``warmup`` ones, the baseline its segments borrow.
        self.pool: dict[str, tuple[int, int]] = {}
        self.segment_monitors: dict[tuple[str, str], ModelMonitor] = {}
        #: (model, metric) -> the monitor of one of the model's further metrics (``metrics:`` in its spec).
        self.metric_monitors: dict[tuple[str, str], ModelMonitor] = {
            (model, extra.metric or ""): self._metric_monitor(model, spec, extra)
            for model, spec in config.models.items() for extra in spec.metrics
        }
        #: (model, version, segment or None) -> its data monitor.
        self.data_monitors: dict[tuple[str, str, str | None], DataMonitor] = {}
        self.n_predictions: Counter[str] = Counter()
        self._clock = 0
        # Named (not pooled) segment monitors per (model,) and per (model, version), for O(1) pooling decisions.
        self._n_named: Counter[tuple[str, ...]] = Counter()

    def _metric_monitor(self, model: str, spec: ModelSpec, extra: PerformanceSpec) -> ModelMonitor:
        return ModelMonitor(model, spec.metric_spec(extra), None, gate=self.monitors[model].gate,
                            threshold_name=f"threshold_{extra.metric}")

    def metric_monitors_of(self, model: str) -> dict[str, ModelMonitor]:
        """A model's further metrics' monitors, by metric."""
        return {metric: m for (owner, metric), m in self.metric_monitors.items() if owner == model}

    def _detector_for(self, model: str, spec: ModelSpec, group: str) -> DriftDetector | None:
        if spec.detector is None or spec.detector_name is None:
            return None
        params = dict(spec.detector.params)
        if takes_horizon(spec.detector_name):
            params["false_alarm_horizon"] = self.budgets[model].horizon(group)
        try:
            if group == SEGMENT_PERFORMANCE and spec.detector_name == "bernoulli_glr" and "p0" not in params:
                self._build_detector(spec.detector_name, **params)  # validates the parameters, naming a bad one
                grid: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
                return BorrowedBaselineGLR(**grid)
            return self._build_detector(spec.detector_name, **params)
        except InvalidParameter as exc:
            where = "name" if exc.name == "name" else "params" if exc.name == "params" else f"params.{exc.name}"
            raise ConfigError("monitor config", [(f"models.{model}.detector.{where}", exc.rule)]) from exc
        except (TypeError, KeyError, ValueError) as exc:
            raise ConfigError("monitor config", [(f"models.{model}.detector", str(exc))]) from exc

    def _routed_segment(self, name: str, has_monitor: bool, n_named: int, spec: ModelSpec) -> str:
        """``name``, or the pool once ``max_segments`` named segments (``n_named`` so far) have monitors."""
        assert spec.segments is not None
        if name == self.POOLED or has_monitor:
            return name
        return self.POOLED if n_named >= spec.segments.max_segments else name

    def _segment_key(self, model: str, spec: ModelSpec, segment: str | None) -> tuple[str, str]:
        # Counted, not searched: this runs once per example.
        name = segment or self.POOLED
        key = (model, self._routed_segment(name, (model, name) in self.segment_monitors, self._n_named[(model,)], spec))
        if key not in self.segment_monitors:
            detector = self._detector_for(model, spec, SEGMENT_PERFORMANCE)
            rate = self.pooled_rate(model)
            if isinstance(detector, BorrowedBaselineGLR) and rate is not None:
                detector.borrow(rate)
            self.segment_monitors[key] = ModelMonitor(model, spec, detector, key[1])
            self._n_named[(model,)] += key[1] != self.POOLED
        return key

    def _pool_size(self, spec: ModelSpec) -> int:
        warmup = spec.detector.params.get("warmup", 2000) if spec.detector is not None else 2000
        return int(warmup) if isinstance(warmup, int) else 2000

    def pooled_rate(self, model: str) -> float | None:
        """The model's error rate over its first ``warmup`` labelled examples (Laplace), None until it has them."""
        n, errors = self.pool.get(model, (0, 0))
        spec = self.config.models[model]
        return (errors + 1) / (n + 2) if n >= self._pool_size(spec) else None

    def _pool_example(self, model: str, spec: ModelSpec, example: LabelledExample) -> bool:
        """Count one labelled example into the model's pooled rate; True if it just completed it."""
        n, errors = self.pool.get(model, (0, 0))
        size = self._pool_size(spec)
        if n >= size:
            return False
        self.pool[model] = (n + 1, errors + (example.prediction.prediction != example.outcome.actual))
        return n + 1 == size

    def _lend_pooled_rate(self, model: str) -> None:
        rate = self.pooled_rate(model)
        assert rate is not None
        for (owner, _), monitor in self.segment_monitors.items():
            if owner == model and isinstance(monitor.detector, BorrowedBaselineGLR):
                monitor.detector.borrow(rate)

    def observe(self, examples: Sequence[LabelledExample]) -> MonitorResult:
        """Route a batch to each model's (and segment's) monitor, keeping event order within each."""
        by_model: dict[str, list[LabelledExample]] = defaultdict(list)
        by_segment: dict[tuple[str, str], list[LabelledExample]] = defaultdict(list)
        by_version: dict[tuple[str, str], list[LabelledExample]] = defaultdict(list)
        # The model's pooled rate completes at one example: its segments' examples up to there are scored before
        # they borrow it, the rest after, as one by one.  model -> {segment key: examples before it}
        split: dict[str, dict[tuple[str, str], int]] = {}
        result = MonitorResult()
        for example in examples:
            model = example.prediction.model
            if model not in self.monitors:
                result.n_unmonitored += 1
                continue
            by_model[model].append(example)
            spec = self.config.models[model]
            by_version[(model, example.prediction.model_version)].append(example)
            if spec.segments is not None:
                key = self._segment_key(model, spec, example.prediction.segment)
                by_segment[key].append(example)
                if spec.task == "classification" and self._pool_example(model, spec, example):
                    split[model] = {k: len(v) for k, v in by_segment.items() if k[0] == model}
        for version_key, labelled in by_version.items():
            estimate = self.estimate_monitors.get(version_key)
            if estimate is not None:
                estimate.observe_labelled(labelled)
        for model, batch in by_model.items():
            result.extend(self.monitors[model].observe(batch))
            for extra in self.metric_monitors_of(model).values():
                extra_result = extra.observe(batch)
                extra_result.rejected.clear()  # reported once, by the main monitor
                result.extend(extra_result)
        for model, before in split.items():
            for key, n in before.items():
                self._observe_segment(key, by_segment[key][:n], result)
                by_segment[key] = by_segment[key][n:]
            self._lend_pooled_rate(model)
        for key, batch in by_segment.items():
            self._observe_segment(key, batch, result)
        return result

    def _observe_segment(self, key: tuple[str, str], batch: Sequence[LabelledExample], result: MonitorResult) -> None:
        if not batch:
            return
        segment_result = self.segment_monitors[key].observe(batch)
        # Unscorable examples were already reported by the model-wide monitor.
        segment_result.rejected.clear()
        result.extend(segment_result)

    def observe_predictions(self, predictions: Sequence[PredictionEvent]) -> MonitorResult:
        """Route a batch of predictions to each model version's (and segment's) data monitor, in event order."""
        self._clock += 1
        result = MonitorResult()
        batches: dict[tuple[str, str, str | None], list[PredictionEvent]] = defaultdict(list)
        for prediction in predictions:
            spec = self.config.models.get(prediction.model)
            if spec is None or not spec.watches_predictions:
                continue
            self.n_predictions[prediction.model] += 1
            key: tuple[str, str, str | None] = (prediction.model, prediction.model_version, None)
            if key not in self.data_monitors:
                result.alerts.extend(self._add_version(key, spec, prediction))
            batches[key].append(prediction)
            if spec.segments is not None:
                model, version = key[0], key[1]
                name = prediction.segment or self.POOLED
                segment = self._routed_segment(name, (model, version, name) in self.data_monitors,
                                               self._n_named[(model, version)], spec)
                segment_key = (model, version, segment)
                if segment_key not in self.data_monitors:
                    self.data_monitors[segment_key] = self._data_monitor(segment_key, spec)
                    self._n_named[(model, version)] += segment != self.POOLED
                batches[segment_key].append(prediction)
        for key, batch in batches.items():
            data_monitor = self.data_monitors[key]
            data_monitor.last_seen = self._clock
            alerts, triggers = data_monitor.observe(batch)
            result.alerts.extend(alerts)
            result.triggers.extend(triggers)
            estimate = self.estimate_monitors.get((key[0], key[1])) if key[2] is None else None
            if estimate is not None:
                result.alerts.extend(estimate.observe_predictions(batch))
        return result

    def _data_monitor(self, key: tuple[str, str, str | None], spec: ModelSpec) -> DataMonitor:
        model, version, segment = key
        horizon = self.budgets[model].horizon(DATA if segment is None else SEGMENT_DATA)
        return DataMonitor(model, version, spec, self._build_detector, segment, self.monitors[model].gate,
                           self.config.reference_of(model), false_alarm_horizon=horizon)

    def _add_version(self, key: tuple[str, str, str | None], spec: ModelSpec, at: PredictionEvent) -> list[Alert]:
        """Start watching a new version; beyond ``max_versions``, retire the one seen least recently."""
        model, version, _ = key
        alerts: list[Alert] = []
        versions = {v: m.last_seen for (m_, v, s), m in self.data_monitors.items() if m_ == model and s is None}
        if len(versions) >= spec.drift.max_versions:
            oldest = min(versions, key=lambda v: (versions[v], v))
            self._n_named.pop((model, oldest), None)
            for old_key in [k for k in self.data_monitors if k[0] == model and k[1] == oldest]:
                why = f"version {oldest} is no longer watched: version {version} is the {spec.drift.max_versions + 1}th seen"
                alerts.extend(self.data_monitors.pop(old_key).retire(at, why))
                retired = self.estimate_monitors.pop(old_key[:2], None)
                if retired is not None:
                    alerts.extend(retired.retire(at, why))
        self.data_monitors[key] = self._data_monitor(key, spec)
        if spec.estimated_performance is not None:
            # Each version is calibrated afresh: a new version's scores mean something else.
            self.estimate_monitors[(model, version)] = EstimateMonitor(
                model, version, spec, self.config.labelled_reference_of(model))
        return alerts

    def estimate_monitors_of(self, model: str) -> dict[str, EstimateMonitor]:
        """A model's label-free estimate monitors, by version."""
        return {v: m for (m_, v), m in self.estimate_monitors.items() if m_ == model}

    def data_monitors_of(self, model: str) -> dict[tuple[str, str | None], DataMonitor]:
        """A model's data monitors, by (version, segment)."""
        return {(v, s): m for (m_, v, s), m in self.data_monitors.items() if m_ == model}

    def install(
        self, model: str, monitor: ModelMonitor, segments: Mapping[str, ModelMonitor],
        data: Mapping[tuple[str, str | None], DataMonitor], metrics: Mapping[str, ModelMonitor] | None = None,
        n_predictions: int = 0, estimates: Mapping[str, EstimateMonitor] | None = None,
        pool: tuple[int, int] | None = None,
    ) -> None:
        """Take over a model's restored state (from a checkpoint); its monitors share one retrain gate."""
        self.monitors[model] = monitor
        self.n_predictions[model] = n_predictions
        for version_key in [k for k in self.estimate_monitors if k[0] == model]:
            del self.estimate_monitors[version_key]
        for version, estimate in (estimates or {}).items():
            self.estimate_monitors[(model, version)] = estimate
        if pool is not None:
            self.pool[model] = pool
        for metric, metric_monitor in (metrics or {}).items():
            if (model, metric) in self.metric_monitors:
                metric_monitor.gate = monitor.gate
                self.metric_monitors[(model, metric)] = metric_monitor
        for segment, segment_monitor in segments.items():
            self.segment_monitors[(model, segment)] = segment_monitor
        for key in [k for k in self.data_monitors if k[0] == model]:
            del self.data_monitors[key]
        for (version, data_segment), data_monitor in data.items():
            data_monitor.gate = monitor.gate
            self.data_monitors[(model, version, data_segment)] = data_monitor
        for counted in [k for k in self._n_named if k[0] == model]:
            del self._n_named[counted]
        for owner, segment in self.segment_monitors:
            if owner == model:
                self._n_named[(model,)] += segment != self.POOLED
        for owner, version, data_segment in self.data_monitors:
            if owner == model and data_segment is not None:
                self._n_named[(model, version)] += data_segment != self.POOLED
