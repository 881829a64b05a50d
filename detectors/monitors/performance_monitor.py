"""The monitors: what the worker and the backtest run on each model's labelled examples.

A :class:`ModelMonitor` keeps, for one model, a rolling performance metric and a
change detector on the per-example loss.  It fires an alert when the metric
crosses its threshold or the detector alarms, resolves it once the metric is
back past the threshold by the hysteresis margin (no flapping), and asks for a
retrain at most once per cooldown.  Everything is decided per event, in event
order, so the same stream gives the same alerts however it is cut into batches.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
import numpy as np
import numpy.typing as npt

from detectors.base import DriftDetector, alarms_with_state
from detectors.monitors.data_monitor import DataMonitor, RetrainGate
from detectors.exceptions import InvalidParameter
from detectors.performance import RollingMetric, UnscorableExample, components_of
from schemas.config import ModelSpec, MonitorConfig, PerformanceSpec
from schemas.events import Alert, LabelledExample, PredictionEvent, RetrainTrigger, deterministic_id
from schemas.exceptions import ConfigError

__all__ = ["ModelMonitor", "MonitorResult", "MonitorSet", "UnscorableExample", "loss_of"]

PERFORMANCE = "performance"
THRESHOLD = "threshold"
# Event times kept to map a detector's change-start estimate back to a time.
_TIME_HISTORY = 20_000


def loss_of(example: LabelledExample, task: str) -> float:
    """0/1 error for classification, absolute error for regression.

    >>> from datetime import datetime, timezone
    >>> from schemas.events import OutcomeEvent, PredictionEvent
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> p = PredictionEvent(prediction_id="a", model="m", model_version="1", event_time=t, prediction=101.5)
    >>> loss_of(LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id="a", event_time=t, actual=100.0)), "regression")
    1.5
    """
    predicted, actual = example.prediction.prediction, example.outcome.actual
    if task == "classification":
        return 0.0 if predicted == actual else 1.0
    if isinstance(predicted, str) or isinstance(actual, str):
        raise UnscorableExample(f"regression needs numeric prediction and actual, got {predicted!r} and {actual!r}")
    return abs(float(predicted) - float(actual))


@dataclass
class MonitorResult:
    """What one batch produced: alerts and triggers to publish, examples refused."""

    alerts: list[Alert] = field(default_factory=list)
    triggers: list[RetrainTrigger] = field(default_factory=list)
    rejected: list[tuple[LabelledExample, str]] = field(default_factory=list)
    n_unmonitored: int = 0

    def extend(self, other: MonitorResult) -> None:
        self.alerts.extend(other.alerts)
        self.triggers.extend(other.triggers)
        self.rejected.extend(other.rejected)
        self.n_unmonitored += other.n_unmonitored


@dataclass(frozen=True)
class _Alarm:
    statistic: float
    threshold: float
    change_start: int | None


@dataclass
class _Episode:
    episode_id: str
    fired_at: int  # index of the firing event among all examples seen
    alert_id: str


class ModelMonitor:
    """Rolling performance and a change detector for one model.

    Parameters
    ----------
    model
        The monitored model's name.
    spec
        Its entry in the monitor config.
    detector
        A change detector fed the per-example loss, or None for threshold only.
    segment
        When set, this monitor watches one segment of the model's traffic.
    """

    def __init__(
        self, model: str, spec: ModelSpec, detector: DriftDetector | None, segment: str | None = None,
        gate: RetrainGate | None = None, threshold_name: str = THRESHOLD,
    ) -> None:
        self.model = model
        self.spec = spec
        # "threshold" for the main metric; a further metric's threshold alerts are named after it.
        self.threshold_name = threshold_name
        self.detector = detector
        self.segment = segment
        # Retrains are per model: a segment's alerts inform, the model-wide monitor triggers.
        self._retrains = spec.retrain.enabled and segment is None
        self._label = model if segment is None else f"{model} [segment {segment}]"
        self._rolling = RollingMetric(spec.metric, spec.performance.window, spec.performance.window_seconds)
        self._times: deque[datetime] = deque(maxlen=max(_TIME_HISTORY, spec.performance.window))
        self._open: dict[str, _Episode] = {}
        # The cooldown is the model's, shared with its data monitors: one retrain answers every alert.
        self.gate = gate or RetrainGate(spec.retrain.cooldown_seconds)
        self._period_start: datetime | None = None
        self._next_scheduled: datetime | None = None
        self._last_periodic: dict[str, datetime] = {}
        self._batch_triggers: list[tuple[int, RetrainTrigger]] = []
        self._higher_is_better = self._rolling.higher_is_better

    @property
    def n_seen(self) -> int:
        return self._rolling.n_seen

    @property
    def metric_name(self) -> str:
        return self.spec.metric

    @property
    def metric_value(self) -> float:
        """The rolling metric now (NaN before the first example, or while undefined)."""
        return self._rolling.value

    @property
    def open_alerts(self) -> list[str]:
        """Names of the detectors whose alert is fired and not yet resolved."""
        return sorted(self._open)

    def observe(self, examples: Sequence[LabelledExample]) -> MonitorResult:
        """Score a batch of this model's examples, in event order, and decide."""
        result = MonitorResult()
        scored: list[LabelledExample] = []
        losses: list[float] = []
        components: list[tuple[float, ...]] = []
        for example in examples:
            try:
                parts = components_of(example, self.spec)
                loss = loss_of(example, self.spec.task)
            except UnscorableExample as exc:
                result.rejected.append((example, str(exc)))
                continue
            components.append(parts)
            losses.append(loss)
            scored.append(example)
        if not scored:
            return result
        first_index = self.n_seen
        perf = self.spec.performance
        # A time-based window ages examples out by when they were complete (labelled), the order they come in.
        completed = (np.array([max(e.prediction.event_time, e.outcome.event_time).timestamp() for e in scored])
                     if perf.window_seconds is not None else None)
        values = self._rolling.update_many(np.asarray(components, dtype=float), completed)
        n_in_window = self._rolling.counts
        self._times.extend(e.prediction.event_time for e in scored)
        min_samples = perf.min_samples or perf.window
        if self._higher_is_better:
            breach = (values < perf.threshold) & (n_in_window >= min_samples)
            healthy = values >= perf.threshold + perf.hysteresis
        else:
            breach = (values > perf.threshold) & (n_in_window >= min_samples)
            healthy = values <= perf.threshold - perf.hysteresis

        alarms = self._detector_alarms(np.asarray(losses))
        # Each detector walks the batch from one state change to the next
        # (changes are rare, so this loops a few times per batch, not once per
        # event); the changes of all detectors are then applied in event order.
        transitions: list[tuple[int, int, str, _Alarm | None]] = []
        for order, name in enumerate(self._detector_names()):
            open_since = self._open[name].fired_at - first_index if name in self._open else None
            pos = 0
            while pos < len(scored):
                if open_since is None:
                    fire = self._next_fire(name, pos, breach, alarms)
                    if fire is None:
                        break
                    idx, alarm = fire
                    transitions.append((idx, order, name, alarm))
                    open_since = idx
                else:
                    # Judge recovery only on a full window of examples after the firing.
                    earliest = max(pos, open_since + perf.window)
                    hits = np.flatnonzero(healthy[earliest:]) if earliest < len(scored) else np.empty(0, np.intp)
                    if len(hits) == 0:
                        break
                    idx = earliest + int(hits[0])
                    transitions.append((idx, order, name, None))
                    open_since = None
                pos = idx + 1
        for idx, _, name, alarm in sorted(transitions, key=lambda t: (t[0], t[1])):
            if name in self._open:
                self._resolve(name, scored[idx].prediction, float(values[idx]), result)
            else:
                self._fire(name, idx, first_index, scored[idx].prediction, float(values[idx]), alarm, result)
        if self._retrains:
            self._periodic_triggers(first_index, scored)
        # Triggers in the order of the examples that caused them, as a one-by-one run would emit them.
        self._batch_triggers.sort(key=lambda pair: pair[0])
        result.triggers.extend(trigger for _, trigger in self._batch_triggers)
        self._batch_triggers.clear()
        return result

    def _periodic_triggers(self, first_index: int, scored: Sequence[LabelledExample]) -> None:
        """Volume- and schedule-based triggers (the fraud case): independent of drift and of the cooldown."""
        retrain = self.spec.retrain
        if self._period_start is None:
            self._period_start = scored[0].prediction.event_time
        if retrain.every_examples is not None:
            n = retrain.every_examples
            # Global example numbers (1-based) in this batch that are multiples of n.
            first_multiple = -(-(first_index + 1) // n) * n
            for number in range(first_multiple, first_index + len(scored) + 1, n):
                position = number - first_index - 1
                event_time = scored[position].prediction.event_time
                self._periodic(position, "volume", f"{number}", event_time, f"{n} new labelled examples")
        if retrain.every_seconds is not None:
            step = timedelta(seconds=retrain.every_seconds)
            if self._next_scheduled is None:
                self._next_scheduled = self._period_start + step
            for position, labelled in enumerate(scored):
                while self._next_scheduled <= labelled.prediction.event_time:
                    due = self._next_scheduled
                    why = f"every {retrain.every_seconds:g} s of event time"
                    self._periodic(position, "schedule", due.isoformat(), due, why)
                    self._next_scheduled = due + step

    def _periodic(self, position: int, reason: str, ordinal: str, event_time: datetime, why: str) -> None:
        data_from = self._last_periodic.get(reason, self._period_start)
        assert data_from is not None
        self._last_periodic[reason] = event_time
        self._batch_triggers.append((position, RetrainTrigger(
                trigger_id=deterministic_id(self.model, reason, ordinal),
                model=self.model,
                reason=reason,  # type: ignore[arg-type]
                data_from=data_from,
                event_time=event_time,
                message=f"{self.model}: {reason} retrain ({why})",
            ),
        ))

    def _detector_alarms(self, losses: npt.NDArray[np.float64]) -> dict[int, _Alarm]:
        """Alarm positions in the batch, with the detector's statistic and change estimate at each."""
        if self.detector is None:
            return {}
        return {i: _Alarm(statistic, threshold, change_start)
                for i, statistic, threshold, change_start in alarms_with_state(self.detector, losses)}

    @property
    def detector_names(self) -> list[str]:
        """Names under which this monitor's alerts are published: the threshold and the change detector."""
        return self._detector_names()

    def _detector_names(self) -> list[str]:
        names = [self.threshold_name]
        if self.detector is not None and self.spec.detector_name is not None:
            names.append(self.spec.detector_name)
        return names

    def _next_fire(
        self, name: str, pos: int, breach: npt.NDArray[np.bool_], alarms: dict[int, _Alarm]
    ) -> tuple[int, _Alarm | None] | None:
        if name == self.threshold_name:
            hits = np.flatnonzero(breach[pos:])
            return (pos + int(hits[0]), None) if len(hits) else None
        later = [a for a in alarms if a >= pos]
        return (min(later), alarms[min(later)]) if later else None

    def _fire(
        self,
        name: str,
        idx: int,
        first_index: int,
        example: PredictionEvent,
        value: float,
        alarm: _Alarm | None,
        result: MonitorResult,
    ) -> None:
        perf = self.spec.performance
        global_index = first_index + idx
        episode_id = deterministic_id(
            self.model, self.segment or "", PERFORMANCE, name, example.prediction_id, example.event_time
        )
        alert_id = deterministic_id(episode_id, "fired")
        self._open[name] = _Episode(episode_id, global_index, alert_id)
        if alarm is None:
            direction = "fell below" if self._higher_is_better else "rose above"
            message = (
                f"{self._label}: {self.metric_name} {value:.4g} over the last {min(global_index + 1, perf.window)} "
                f"examples {direction} the threshold {perf.threshold:g} (model version {example.model_version})"
            )
            statistic, threshold, severity, lookback = value, perf.threshold, "critical", perf.window
        else:
            lookback = alarm.change_start if alarm.change_start is not None else perf.window
            message = (
                f"{self._label}: {name} detected a rise in the per-example loss, "
                f"which began about {lookback} examples earlier; rolling {self.metric_name} is {value:.4g} "
                f"(model version {example.model_version})"
            )
            statistic, threshold, severity = alarm.statistic, alarm.threshold, "warning"
        alert = self._alert(alert_id, "fired", severity, name, statistic, threshold, example, episode_id, message)
        result.alerts.append(alert)
        self._maybe_trigger(alert, idx, global_index, lookback, example.event_time)

    def _resolve(self, name: str, example: PredictionEvent, value: float, result: MonitorResult) -> None:
        episode = self._open.pop(name)
        perf = self.spec.performance
        message = (
            f"{self._label}: {self.metric_name} recovered to {value:.4g} "
            f"(threshold {perf.threshold:g}, hysteresis {perf.hysteresis:g}); {name} alert resolved"
        )
        alert_id = deterministic_id(episode.episode_id, "resolved")
        result.alerts.append(
            self._alert(alert_id, "resolved", "info", name, value, perf.threshold, example, episode.episode_id, message)
        )

    def _alert(
        self,
        alert_id: str,
        status: str,
        severity: str,
        detector: str,
        statistic: float,
        threshold: float,
        example: PredictionEvent,
        episode_id: str,
        message: str,
    ) -> Alert:
        return Alert(
            alert_id=alert_id,
            status=status,  # type: ignore[arg-type]
            kind="performance_decay",
            severity=severity,  # type: ignore[arg-type]
            model=self.model,
            model_version=example.model_version,
            segment=self.segment,
            monitor=PERFORMANCE,
            detector=detector,
            # Alerts carry finite numbers only; a detector without a statistic reports 0.
            statistic=statistic if math.isfinite(statistic) else 0.0,
            threshold=threshold if math.isfinite(threshold) else 0.0,
            event_time=example.event_time,
            episode_id=episode_id,
            message=message,
        )

    def _maybe_trigger(
        self, alert: Alert, position: int, global_index: int, lookback: int, event_time: datetime
    ) -> None:
        if not self._retrains or not self.gate.admit(event_time):
            return
        # self._times ends at the batch's last example; index back from there.
        back = (self.n_seen - 1 - global_index) + lookback
        data_from = self._times[max(0, len(self._times) - 1 - back)]
        trigger = RetrainTrigger(
            trigger_id=deterministic_id(alert.alert_id, "retrain"),
            model=self.model,
            reason="performance_decay",
            alert_ids=[alert.alert_id],
            data_from=data_from,
            event_time=event_time,
            message=alert.message,
        )
        self._batch_triggers.append((position, trigger))


DetectorFactory = Callable[..., DriftDetector]


class MonitorSet:
    """Every configured model's monitors: performance on labelled examples, data monitors on predictions.

    Per model there is one :class:`ModelMonitor` (and one per segment where
    asked) and, for each of its recent versions, one
    :class:`~detectors.monitors.data_monitor.DataMonitor` (again per segment where
    asked).  Events of models absent from the config are counted, not watched.
    """

    #: Where a model's segments beyond ``max_segments``, and events without a segment, are pooled.
    POOLED = "pooled-other"

    def __init__(self, config: MonitorConfig, build_detector: DetectorFactory) -> None:
        self.config = config
        self._build_detector = build_detector
        self.monitors: dict[str, ModelMonitor] = {
            model: ModelMonitor(model, spec, self._detector_for(model, spec)) for model, spec in config.models.items()
        }
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

    def _detector_for(self, model: str, spec: ModelSpec) -> DriftDetector | None:
        if spec.detector is None or spec.detector_name is None:
            return None
        try:
            return self._build_detector(spec.detector_name, **spec.detector.params)
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
            self.segment_monitors[key] = ModelMonitor(model, spec, self._detector_for(model, spec), key[1])
            self._n_named[(model,)] += key[1] != self.POOLED
        return key

    def observe(self, examples: Sequence[LabelledExample]) -> MonitorResult:
        """Route a batch to each model's (and segment's) monitor, keeping event order within each."""
        by_model: dict[str, list[LabelledExample]] = defaultdict(list)
        by_segment: dict[tuple[str, str], list[LabelledExample]] = defaultdict(list)
        result = MonitorResult()
        for example in examples:
            model = example.prediction.model
            if model not in self.monitors:
                result.n_unmonitored += 1
                continue
            by_model[model].append(example)
            spec = self.config.models[model]
            if spec.segments is not None:
                by_segment[self._segment_key(model, spec, example.prediction.segment)].append(example)
        for model, batch in by_model.items():
            result.extend(self.monitors[model].observe(batch))
            for extra in self.metric_monitors_of(model).values():
                extra_result = extra.observe(batch)
                extra_result.rejected.clear()  # reported once, by the main monitor
                result.extend(extra_result)
        for key, batch in by_segment.items():
            segment_result = self.segment_monitors[key].observe(batch)
            # Unscorable examples were already reported by the model-wide monitor.
            segment_result.rejected.clear()
            result.extend(segment_result)
        return result

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
        return result

    def _data_monitor(self, key: tuple[str, str, str | None], spec: ModelSpec) -> DataMonitor:
        model, version, segment = key
        return DataMonitor(model, version, spec, self._build_detector, segment, self.monitors[model].gate,
                           self.config.reference_of(model))

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
        self.data_monitors[key] = self._data_monitor(key, spec)
        return alerts

    def data_monitors_of(self, model: str) -> dict[tuple[str, str | None], DataMonitor]:
        """A model's data monitors, by (version, segment)."""
        return {(v, s): m for (m_, v, s), m in self.data_monitors.items() if m_ == model}

    def install(
        self, model: str, monitor: ModelMonitor, segments: Mapping[str, ModelMonitor],
        data: Mapping[tuple[str, str | None], DataMonitor], metrics: Mapping[str, ModelMonitor] | None = None,
    ) -> None:
        """Take over a model's restored state (from a checkpoint); its monitors share one retrain gate."""
        self.monitors[model] = monitor
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
