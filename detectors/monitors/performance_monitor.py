"""The performance monitor: what the worker and the backtest run on each model's labelled examples.

A :class:`ModelMonitor` keeps, for one model, a rolling performance metric and a
change detector on the per-example loss.  It fires an alert when the metric
crosses its threshold or the detector alarms, resolves it once the metric is
back past the threshold by the hysteresis margin (no flapping), and asks for a
retrain at most once per cooldown.  Everything is decided per event, in event
order, so the same stream gives the same alerts however it is cut into batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
import numpy as np
import numpy.typing as npt

from detectors.base import SMALL_BATCH, DriftDetector, alarms_with_state
from detectors.monitors.episodes import AlertEpisodes, MonitorResult, RetrainGate
from detectors.performance import RollingMetric, UnscorableExample, components_of
from schemas.config import ModelSpec
from schemas.events import Alert, LabelledExample, PredictionEvent, RetrainTrigger, Severity, deterministic_id

__all__ = ["ModelMonitor", "UnscorableExample", "loss_of"]

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


@dataclass(frozen=True)
class _Alarm:
    statistic: float
    threshold: float
    change_start: int | None



#: Per-example flags of a batch: an array, or a list for a batch of a few (see ModelMonitor.observe).
Flags = npt.NDArray[np.bool_] | list[bool]


def _first_true(flags: Flags, start: int) -> int | None:
    """The first index from ``start`` on whose flag is set, if any."""
    if isinstance(flags, list):
        return next((i for i in range(start, len(flags)) if flags[i]), None)
    hits = np.flatnonzero(flags[start:])
    return start + int(hits[0]) if len(hits) else None


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
    gate
        The model's retrain cooldown, shared with its other monitors (a fresh one when None).
    threshold_name
        The name its threshold alerts are published under.

    Examples
    --------
    A speech model's accuracy falls from 95% to 80% at utterance 3,000.  The
    change detector (a Bernoulli GLR on the per-example error) fires a few
    dozen utterances later, the 500-example rolling accuracy crosses its 0.85
    threshold a few hundred later, and the first alert asks for a retrain:

    >>> from datetime import datetime, timedelta, timezone
    >>> import numpy as np
    >>> from detectors.registry import build_detector
    >>> from schemas.config import parse_monitor_config
    >>> from schemas.events import OutcomeEvent
    >>> spec = parse_monitor_config(
    ...     "models: {asr: {task: classification, performance: {metric: accuracy, window: 500, threshold: 0.85},"
    ...     " detector: {name: bernoulli_glr, params: {false_alarm_horizon: 100000}}}}").models["asr"]
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> rng = np.random.default_rng(7)
    >>> def utterance(i: int, correct: bool) -> LabelledExample:
    ...     t = t0 + timedelta(seconds=i)
    ...     p = PredictionEvent(prediction_id=f"u{i}", model="asr", model_version="1", event_time=t, prediction="yes")
    ...     o = OutcomeEvent(prediction_id=f"u{i}", event_time=t, actual="yes" if correct else "no")
    ...     return LabelledExample(prediction=p, outcome=o)
    >>> examples = [utterance(i, rng.random() < (0.95 if i < 3000 else 0.80)) for i in range(6000)]
    >>> monitor = ModelMonitor("asr", spec, build_detector(spec.detector_name, **spec.detector.params))
    >>> result = monitor.observe(examples)
    >>> [(a.detector, a.status, int((a.event_time - t0).total_seconds())) for a in result.alerts]
    [('bernoulli_glr', 'fired', 3024), ('threshold', 'fired', 3300)]
    >>> [t.reason for t in result.triggers], round(monitor.metric_value, 3), monitor.open_alerts
    (['performance_decay'], 0.842, ['bernoulli_glr', 'threshold'])
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
        self._episodes: AlertEpisodes[str] = AlertEpisodes(model, segment, scope=(model, segment or ""))
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
        return sorted(self._episodes)

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
        completed = (np.array([e.completed_at.timestamp() for e in scored])
                     if perf.window_seconds is not None else None)
        values = self._rolling.update_many(np.asarray(components, dtype=float), completed)
        n_in_window = self._rolling.counts
        self._times.extend(e.prediction.event_time for e in scored)
        min_samples = perf.min_samples or perf.window
        breach: Flags
        healthy: Flags
        if len(scored) <= SMALL_BATCH:
            # The same comparisons on Python floats (NaN compares false in both): with 1,000 models most batches
            # hand a model one example, and five array operations on one value cost more than the rest.
            pairs = list(zip(values.tolist(), n_in_window.tolist(), strict=True))
            if self._higher_is_better:
                breach = [v < perf.threshold and n >= min_samples for v, n in pairs]
                healthy = [v >= perf.threshold + perf.hysteresis for v, _ in pairs]
            else:
                breach = [v > perf.threshold and n >= min_samples for v, n in pairs]
                healthy = [v <= perf.threshold - perf.hysteresis for v, _ in pairs]
        elif self._higher_is_better:
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
            episode = self._episodes.get(name)
            open_since = episode.fired_at - first_index if episode is not None else None
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
                    recovered = _first_true(healthy, max(pos, open_since + perf.window))
                    if recovered is None:
                        break
                    idx = recovered
                    transitions.append((idx, order, name, None))
                    open_since = None
                pos = idx + 1
        for idx, _, name, alarm in sorted(transitions, key=lambda t: (t[0], t[1])):
            if name in self._episodes:
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
        self, name: str, pos: int, breach: Flags, alarms: dict[int, _Alarm]
    ) -> tuple[int, _Alarm | None] | None:
        if name == self.threshold_name:
            hit = _first_true(breach, pos)
            return (hit, None) if hit is not None else None
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
        severity: Severity
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
        alert = self._episodes.fire(name, (PERFORMANCE, name), global_index, example, kind="performance_decay",
                                    severity=severity, monitor=PERFORMANCE, statistic=statistic,
                                    threshold=threshold, message=message)
        result.alerts.append(alert)
        self._maybe_trigger(alert, idx, global_index, lookback, example.event_time)

    def _resolve(self, name: str, example: PredictionEvent, value: float, result: MonitorResult) -> None:
        perf = self.spec.performance
        message = (
            f"{self._label}: {self.metric_name} recovered to {value:.4g} "
            f"(threshold {perf.threshold:g}, hysteresis {perf.hysteresis:g}); {name} alert resolved"
        )
        result.alerts.append(self._episodes.resolve(name, example, statistic=value, threshold=perf.threshold,
                                                    message=message))

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
