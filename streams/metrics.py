"""Prometheus metrics of the worker: names, units and bounded labels in one place."""

from __future__ import annotations

import math
import time
from collections import Counter as Tally
from collections.abc import Mapping, Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, get_args

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from detectors.monitors.data_monitor import (
    FEATURE_DRIFT, NEW_CATEGORY, OUTLIERS, PREDICTION_DRIFT, SEQUENTIAL_DETECTORS, TREND, DataMonitor,
)
from detectors.monitors.estimate_monitor import ESTIMATED
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.signed_state import StateRejectionKind
from schemas.config import ModelSpec, MonitorConfig
from schemas.events import SIDES, PredictionEvent
from streams.health.liveness import HealthMetrics

__all__ = ["WorkerMetrics", "observe_all"]

# A DataMonitor key: (monitor, series, detector), as in DataMonitor.statistics and DataMonitor.open_alerts.
_Key = tuple[str, str, str]
# DataMonitor records no statistic for these monitors (their alarms are per event, or, for the estimates, they
# have gauges of their own); no drift-statistic gauge is declared for them.
_NO_STATISTIC = frozenset({OUTLIERS, TREND, ESTIMATED})
# The detectors of the new-category monitor: the block rule and the sequential test.
_UNSEEN = frozenset({"unseen_rate", SEQUENTIAL_DETECTORS["unseen"]})
# The reasons a changelog record is refused on restore, per state: the join's records carry no signature.
STATE_REJECTIONS = {"monitor": get_args(StateRejectionKind), "join": ("undecodable",)}


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(value)`` for each value, with one increment per bucket rather than one call per value.

    A labelled child's ``observe`` walks the buckets in Python and takes a lock twice: about a microsecond, per
    labelled example on the worker's hot path.  This reads prometheus-client's own fields (``_upper_bounds``,
    ``_buckets``, ``_sum``; a value goes in the first bucket whose bound is at least it, as ``observe`` puts it);
    ``tests/unit/test_metrics_bulk.py`` holds it to ``observe`` on the installed version.

    >>> h = Histogram("h", "h", buckets=[1.0, 5.0], registry=None)
    >>> observe_all(h, [0.5, 1.0, 2.0, 9.0])
    >>> [(s.labels["le"], s.value) for s in h.collect()[0].samples if s.name == "h_bucket"]
    [('1.0', 2.0), ('5.0', 3.0), ('+Inf', 4.0)]
    """
    if not values:
        return
    bounds = histogram._upper_bounds
    # side="left": the index of the first bound >= value.  NaN sorts past every bound: like observe, no bucket.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(sum(values))
    for bucket, n in zip(histogram._buckets, counts[:len(bounds)], strict=True):
        if n:
            bucket.inc(int(n))


@dataclass(frozen=True)
class _DataSeries:
    """A model's bounded prediction-side series, from its spec."""

    statistics: tuple[_Key, ...]  # the DataMonitor.statistics keys it will have
    monitors: tuple[str, ...]  # monitor labels of its open-alert gauges
    alerts: tuple[tuple[str, str], ...]  # (detector, fired severity) of its alerts

    @classmethod
    def of(cls, spec: ModelSpec) -> _DataSeries:
        keys = list(_data_keys(spec))
        return cls(
            statistics=tuple(key for key, _ in keys if key[0] not in _NO_STATISTIC),
            monitors=tuple(dict.fromkeys(_labels(key)[0] for key, _ in keys)),
            alerts=tuple(dict.fromkeys((key[2], severity) for key, severity in keys)),
        )


def _data_keys(spec: ModelSpec) -> Iterator[tuple[_Key, str]]:
    """Each (key, fired severity) a DataMonitor of this spec can alert on, as detectors/monitors/data_monitor.py decides them."""
    series = [(FEATURE_DRIFT, name, f.kind) for name, f in spec.features.items() if f.drift]
    if spec.prediction_drift:
        series.append((PREDICTION_DRIFT, "prediction", "categorical" if spec.task == "classification" else "numeric"))
    sequential = spec.drift.sequential
    for monitor, name, kind in series:
        if kind == "numeric":
            yield (monitor, name, "ks"), "warning"
            if sequential:
                yield (monitor, name, SEQUENTIAL_DETECTORS["scores"]), "warning"
        else:
            yield (monitor, name, "chi_squared"), "warning"
            yield (monitor, name, "unseen_rate"), "critical"
            if sequential:
                yield (monitor, name, SEQUENTIAL_DETECTORS["share"]), "warning"
                yield (monitor, name, SEQUENTIAL_DETECTORS["unseen"]), "critical"
    for name, feature in spec.features.items():
        if feature.outliers:
            yield (OUTLIERS, name, "robust_spike"), "warning"
        if feature.trend:
            yield (TREND, name, "gaussian_glr"), "warning"
    if spec.estimated_performance is not None:
        for metric in spec.estimated_performance.metrics:
            if spec.estimated_performance.threshold_of(metric) is not None:
                yield (ESTIMATED, metric, f"estimated_{metric}"), "warning"


def _labels(key: _Key) -> tuple[str, str, str]:
    """(monitor, feature, detector) labels of a DataMonitor key: the ``monitor``, ``feature`` and ``detector``
    fields of the alerts it raises, with an empty feature where the alert has none (predictions, confidence)."""
    monitor, series, detector = key
    feature = "" if monitor in (PREDICTION_DRIFT, ESTIMATED) else series
    return (NEW_CATEGORY if detector in _UNSEEN else monitor), feature, detector


def _current(candidate: DataMonitor, best: DataMonitor | None) -> DataMonitor:
    """The version a model's gauges follow: the one seen most recently; within one batch, the busier one."""
    if best is None or (candidate.last_seen, candidate.n_seen, candidate.version) > (
            best.last_seen, best.n_seen, best.version):
        return candidate
    return best


class WorkerMetrics:
    """Every metric the worker exports; labels are models, detectors, topics and kinds, never ids."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The *_created series double the output and no dashboard uses them.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_read = Counter("driftline_events_read", "Events read from a source topic.", ["source"], registry=r)
        self.events_processed = Counter(
            "driftline_events_processed", "Events joined into a labelled example.", ["source"], registry=r
        )
        self.events_dead_lettered = Counter(
            "driftline_events_dead_lettered", "Events sent to the dead-letter topic.", ["source", "reason"], registry=r
        )
        self.events_expired = Counter(
            "driftline_events_expired", "Events whose join partner never came within the TTL.", ["source"], registry=r
        )
        self.join_pending = Gauge("driftline_join_pending", "Events waiting for their join partner.", registry=r)
        # With these, read + restored = processed + dead-lettered + expired + pending + handed over + replayed.
        self.join_restored = Counter(
            "driftline_join_restored", "Waiting events taken over from the join's changelog (after a restart or a "
            "rebalance) rather than read from the source.", ["source"], registry=r,
        )
        self.join_handed_over = Counter(
            "driftline_join_handed_over", "Waiting events left to the worker that took their partition over.",
            ["source"], registry=r,
        )
        self.events_replayed = Counter(
            "driftline_events_replayed", "Events read again after a restart or a rebalance and skipped: the join's "
            "changelog shows they were handled before.", ["source"], registry=r,
        )
        # Apart from driftline_events_dead_lettered_total, so that in = processed + dead-lettered + expired still
        # holds per source: these were never source events (a foreign producer's garbage on our own topics).
        self.internal_dead_lettered = Counter(
            "driftline_internal_dead_lettered", "Messages on an internal topic (monitor-input) sent to the dead-letter "
            "topic: not written by Driftline.", ["topic", "reason"], registry=r,
        )
        self.state_rejected = Counter(
            "driftline_state_rejected", "Records of a changelog (the monitor state's, the join's) refused on restore "
            "and never loaded: unsigned, a signature that does not match, or undecodable. Their state starts cold.",
            ["state", "reason"], registry=r,
        )
        self.late = Counter(
            "driftline_events_late", "Examples and predictions that reached an ordering stage after its watermark "
            "had passed them, so were passed on out of event-time order (a partition stalled past the idle period).",
            ["stage"], registry=r,
        )
        self.join_held = Gauge(
            "driftline_join_held", "Joined examples held back until every partition has passed their event time.",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "driftline_batch_seconds", "Time to handle one micro-batch.", ["stage"], registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.batch_size = Histogram(
            "driftline_batch_size", "Events per micro-batch.", ["stage"], registry=r,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
        )
        self.monitor_input_batches = Counter(
            "driftline_monitor_input_batches", "Monitor-input messages read: items taken decoded from this process's "
            "ingest stage (handed), items decoded from their bytes (decoded), or a watermark (watermark).", ["how"],
            registry=r)
        self.examples = Counter("driftline_examples", "Labelled examples scored per model.", ["model"], registry=r)
        self.examples_unmonitored = Counter(
            "driftline_examples_unmonitored", "Labelled examples of models absent from the monitor config.", registry=r
        )
        self.examples_rejected = Counter(
            "driftline_examples_rejected", "Labelled examples a monitor could not score.", ["model"], registry=r
        )
        self.performance = Gauge(
            "driftline_model_performance", "Rolling performance metric per model.", ["model", "metric"], registry=r
        )
        self.performance_threshold = Gauge(
            "driftline_model_performance_threshold", "Alert threshold of the performance metric.",
            ["model", "metric"], registry=r,
        )
        self.alerts = Counter(
            "driftline_alerts", "Alerts published.", ["model", "detector", "status", "severity"], registry=r
        )
        self.alerts_open = Gauge("driftline_alerts_open", "Alerts fired and not yet resolved.", ["model"], registry=r)
        self.retrain_triggers = Counter(
            "driftline_retrain_triggers", "Retrain triggers published.", ["model", "reason"], registry=r
        )
        self.alert_latency = Histogram(
            "driftline_alert_latency_seconds",
            # Event times can be historical (replays, backtests), so this is the pipeline's delay, not event-time delay.
            "Wall time from the Kafka timestamp of the oldest monitor-input message whose items raised an alert "
            "to the alert being handed to the producer.",
            ["model"], registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
        )
        self.label_delay = Histogram(
            "driftline_label_delay_seconds",
            "Event time from a prediction to its outcome (how late ground truth arrives).",
            ["model"], registry=r,
            buckets=(0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0),
        )
        self.consumer_lag = Gauge(
            "driftline_consumer_lag_messages",
            # Updated per batch from the high-water marks the fetches return; a partition with no batch keeps its
            # last value, so a stall shows as a frozen non-zero lag with no reads (see the DriftlineConsumptionStalled rule).
            "Messages behind the partition's high-water mark after the last batch read from it.",
            ["source", "partition"], registry=r,
        )
        self.last_batch = Gauge(
            "driftline_last_batch_timestamp_seconds", "Unix time at which the last micro-batch was handled.",
            ["stage"], registry=r,
        )
        # Prediction-side (data) monitors.  The gauges follow each model's current version (the one seen most
        # recently) and its model-wide monitor; versions and segments never become labels.
        per_model = partial(Gauge, labelnames=["model"], registry=r)
        self.predictions = Counter(
            "driftline_predictions", "Predictions watched by the prediction-side monitors, per model.", ["model"],
            registry=r,
        )
        self.drift_statistic = Gauge(
            "driftline_drift_statistic",
            "Latest value of each prediction-side statistic of the model's current version: KS distance (ks) or "
            "chi-squared statistic (chi_squared) of the last block against the reference, share of unseen "
            "categories in it (unseen_rate); for the sequential tests (normal_score_glr, share_glr, unseen_glr) "
            "the GLR statistic after the last batch as a share of its alarm threshold (1 alarms). Labels are those "
            "of the alerts it drives; feature is empty for prediction drift. NaN until judged.",
            ["model", "monitor", "feature", "detector"], registry=r,
        )
        self.data_alerts_open = Gauge(
            "driftline_data_alerts_open",
            "Prediction-side alerts fired and not yet resolved, over every watched version and segment, by monitor "
            "(feature_drift, prediction_drift, new_category, outliers, trend, estimated_performance).",
            ["model", "monitor"], registry=r,
        )
        self.estimated_accuracy = per_model(
            "driftline_estimated_accuracy", "Label-free accuracy estimate of the model's current version: the mean "
            "calibrated chance of being right over the estimated-performance window (NaN before any confidence); "
            "the accuracy series of driftline_estimated_performance.")
        self.estimated_accuracy_threshold = per_model(
            "driftline_estimated_accuracy_threshold", "Alert threshold of the estimated accuracy.")
        per_metric = partial(Gauge, labelnames=["model", "metric"], registry=r)
        self.estimated_performance = per_metric(
            "driftline_estimated_performance", "Label-free estimate of the current version's accuracy (and, with a "
            "positive class, precision, recall, f1, roc_auc) over its last window of predictions, from calibrated "
            "scores (raw ones while driftline_estimate_calibrated is 0). NaN until defined.")
        self.realized_performance = per_metric(
            "driftline_realized_performance", "The label-based counterpart of each estimate: the same metric over "
            "the current version's last window of labelled examples. NaN until defined.")
        self.estimated_performance_threshold = per_metric(
            "driftline_estimated_performance_threshold", "Alert threshold of each estimate (absent if it has none).")
        self.estimate_calibrated = per_model(
            "driftline_estimate_calibrated", "1 once the current version's calibration is fitted on its labelled "
            "reference, 0 while its estimates are raw scores (they do not alert then unless alert_uncalibrated).")
        self.label_coverage = per_model(
            "driftline_label_coverage",
            "Labelled examples scored (driftline_examples_total) / predictions watched (driftline_predictions_total) "
            "by this worker since it started; NaN before any prediction. Cumulative, so it reacts slowly: the "
            "recording rule driftline:model_label_coverage:ratio_rate15m (ratio of 15m rates over every worker) "
            "is the better signal.")
        self.drift_reference_filled = per_model(
            "driftline_drift_reference_filled_ratio", "Share of the current version's reference window filled; "
            "drift tests judge nothing before 1 (a new version starts at 0).")
        self.health = HealthMetrics(r)
        self._data_series: dict[str, _DataSeries] = {}
        self._n_watched: Tally[str] = Tally()
        # Examples counted per model, as driftline_examples counts them: read per batch for the label coverage,
        # where collecting the counter made a sample object per model each time.
        self._n_examples: Tally[str] = Tally()

    def declare(self, models: Mapping[str, tuple[str, Sequence[str]]], reject_kinds: Iterable[str]) -> None:
        """Create every bounded label set at zero, before the first event.

        A counter series born at its first increment is already non-zero at its
        first scrape, so ``rate()`` and ``increase()`` miss that first burst
        (the first alert ever, say).  ``models`` maps each model to its metric
        name and the names of its detectors.
        """
        for stage in ("ingest", "monitor"):
            self.late.labels(stage)
        for state, reasons in STATE_REJECTIONS.items():
            for reason in reasons:
                self.state_rejected.labels(state, reason)
        for source in SIDES:
            self.events_read.labels(source)
            self.events_processed.labels(source)
            self.events_expired.labels(source)
            self.join_restored.labels(source)
            self.join_handed_over.labels(source)
            self.events_replayed.labels(source)
            for kind in reject_kinds:
                self.events_dead_lettered.labels(source, kind)
        for kind in reject_kinds:
            self.internal_dead_lettered.labels("monitor-input", kind)
        for model, (metric, detectors) in models.items():
            self.examples.labels(model)
            self.examples_rejected.labels(model)
            self.performance.labels(model, metric)
            self.alerts_open.labels(model)
            self.retrain_triggers.labels(model, "performance_decay")
            self.alert_latency.labels(model)
            self.label_delay.labels(model)
            for detector in detectors:
                # Threshold alerts (of the main metric, "threshold", or a further one, "threshold_recall") are critical.
                fired_severity = "critical" if detector.startswith("threshold") else "warning"
                self.alerts.labels(model, detector, "fired", fired_severity)
                self.alerts.labels(model, detector, "resolved", "info")

    def declare_predictions(self, config: MonitorConfig) -> None:
        """Create the prediction-side series of every model whose monitors read predictions, before the first one.

        Counters start at zero for the reason :meth:`declare` gives; so do the data monitors'
        series of ``driftline_alerts_total`` and the drift retrain triggers.  Gauges of open
        alerts start at zero; statistics, estimates and coverage at NaN (unknown, not zero).
        """
        for model, spec in config.models.items():
            if not spec.watches_predictions:
                continue
            series = self._series_of(model, spec)
            self.predictions.labels(model)
            for key in series.statistics:
                self.drift_statistic.labels(model, *_labels(key)).set(math.nan)
            for monitor in series.monitors:
                self.data_alerts_open.labels(model, monitor).set(0)
            for detector, severity in series.alerts:
                self.alerts.labels(model, detector, "fired", severity)
                self.alerts.labels(model, detector, "resolved", "info")
            if spec.retrain.enabled and spec.retrain.on_drift:
                self.retrain_triggers.labels(model, "drift")
            estimate = spec.estimated_performance
            if estimate is not None:
                self.estimated_accuracy.labels(model).set(math.nan)
                self.estimated_accuracy_threshold.labels(model).set(estimate.threshold)
                self.estimate_calibrated.labels(model).set(0)
                for metric in estimate.metrics:
                    self.estimated_performance.labels(model, metric).set(math.nan)
                    self.realized_performance.labels(model, metric).set(math.nan)
                    threshold = estimate.threshold_of(metric)
                    if threshold is not None:
                        self.estimated_performance_threshold.labels(model, metric).set(threshold)
            self.label_coverage.labels(model).set(math.nan)
            self.drift_reference_filled.labels(model).set(0)

    def _series_of(self, model: str, spec: ModelSpec) -> _DataSeries:
        series = self._data_series.get(model)
        if series is None:
            series = self._data_series[model] = _DataSeries.of(spec)
        return series

    def observe_predictions(self, monitors: MonitorSet, predictions: Sequence[PredictionEvent]) -> None:
        """Count a batch's watched predictions and refresh the gauges of the models in it from ``monitors``.

        Call after ``monitors.observe_predictions(predictions)``.  Models absent from the batch keep
        their gauges (their monitors did not change), so beyond counting the batch by model this is
        one pass over the data monitors plus O(models in the batch x statistics).
        """
        config = monitors.config.models
        watched = {model: n for model, n in Tally(p.model for p in predictions).items()
                   if model in config and config[model].watches_predictions}
        if not watched:
            return
        current: dict[str, DataMonitor] = {}
        n_open: dict[str, Tally[str]] = {model: Tally() for model in watched}
        for (model, _, segment), data_monitor in monitors.data_monitors.items():
            if model not in watched:
                continue
            n_open[model].update(_labels(key)[0] for key in data_monitor.open_alerts)
            if segment is None:
                current[model] = _current(data_monitor, current.get(model))
        for (model, _), estimate_monitor in monitors.estimate_monitors.items():
            if model in watched:
                n_open[model][ESTIMATED] += len(estimate_monitor.open_alerts)
        # Examples scored since this process started, as the predictions are: a restored monitor's n_seen
        # also counts the examples before the restart.
        n_examples = self._n_examples
        for model, n in watched.items():
            spec = config[model]
            series = self._series_of(model, spec)
            self.predictions.labels(model).inc(n)
            self._n_watched[model] += n
            self.label_coverage.labels(model).set(n_examples.get(model, 0.0) / self._n_watched[model])
            for monitor in series.monitors:
                self.data_alerts_open.labels(model, monitor).set(n_open[model][monitor])
            latest = current.get(model)
            if latest is None:
                continue
            statistics = latest.statistics
            # A new version has no statistics until its reference is complete: NaN, not the old version's.
            for key in dict.fromkeys([*series.statistics, *statistics]):
                self.drift_statistic.labels(model, *_labels(key)).set(statistics.get(key, math.nan))
            estimate = monitors.estimate_monitors.get((model, latest.version))
            if estimate is not None:
                self.estimated_accuracy.labels(model).set(estimate.estimates["accuracy"])
                self.estimate_calibrated.labels(model).set(float(estimate.calibrated))
                for metric, value in estimate.estimates.items():
                    self.estimated_performance.labels(model, metric).set(value)
            filled = 1.0 if latest.reference_complete else latest.n_seen / spec.drift.reference_size
            self.drift_reference_filled.labels(model).set(filled)

    def count_examples(self, counts: Mapping[str, int]) -> None:
        """Labelled examples scored, per model (``driftline_examples``)."""
        for model, n in counts.items():
            self.examples.labels(model).inc(n)
            self._n_examples[model] += n

    def observe_realized(self, monitors: MonitorSet, models: Iterable[str]) -> None:
        """Refresh the realized counterparts of the estimates of ``models`` (those a batch labelled examples of).

        They follow the version the other gauges follow: the one seen most recently.
        """
        for model in models:
            estimates = monitors.estimate_monitors_of(model)
            if not estimates:  # (asked first: most models have none, and the data monitors are many more)
                continue
            versions = monitors.data_monitors_of(model)
            if not versions:
                continue
            latest = None
            for (version, segment), data_monitor in versions.items():
                if segment is None and version in estimates:
                    latest = _current(data_monitor, latest)
            if latest is None:
                continue
            estimate = estimates[latest.version]
            self.estimate_calibrated.labels(model).set(float(estimate.calibrated))
            for metric, value in estimate.realized.items():
                self.realized_performance.labels(model, metric).set(value)

    def observe_batch(
        self, stage: str, events: Sequence[Any], source_of: Callable[[str], str | None],
        highwater: Callable[[Any], int | None],
    ) -> None:
        """Consumer lag of each partition a faust batch came from, and the batch's wall time.

        ``events`` are Faust events (``event.message.tp``, ``.offset``); ``highwater`` is
        ``app.consumer.highwater``, which reads the mark cached from the last fetch, so this costs no request.
        """
        last_offset: dict[Any, int] = {}
        for event in events:
            last_offset[event.message.tp] = event.message.offset
        lags = {}
        for tp, offset in last_offset.items():
            source = source_of(tp.topic)
            try:
                mark = highwater(tp)
            # aiokafka asserts the partition is assigned; during a rebalance it may not be, and a metric
            # must never stop the stream.
            except (AssertionError, KeyError, RuntimeError):
                continue
            if source is not None and mark is not None:
                lags[(source, tp.partition)] = max(mark - offset - 1, 0)
        self.observe_lag(stage, lags)

    def observe_lag(self, stage: str, lags: Mapping[tuple[str, int], int]) -> None:
        """A batch of ``stage`` was handled now, leaving ``lags`` unread messages per (source, partition)."""
        self.last_batch.labels(stage).set(time.time())
        for (source, partition), lag in lags.items():
            self.consumer_lag.labels(source, str(partition)).set(lag)

    def observe_label_delay(self, examples: Iterable[Any], models: Container[str]) -> None:
        """Prediction-to-outcome event-time delay of labelled examples of configured models (bounded labels)."""
        by_model: dict[str, list[float]] = {}
        for example in examples:
            model = example.prediction.model
            if model in models:
                delay = (example.outcome.event_time - example.prediction.event_time).total_seconds()
                by_model.setdefault(model, []).append(max(delay, 0.0))
        for model, delays in by_model.items():
            observe_all(self.label_delay.labels(model), delays)

    def observe_alert_latency(self, alerts: Iterable[Any], stamps: Sequence[float]) -> None:
        """Pipeline delay of each alert: now minus the oldest of ``stamps``, the Kafka timestamps (s) of the
        messages whose items raised it."""
        if not stamps:
            return
        latency = max(time.time() - min(stamps), 0.0)
        for alert in alerts:
            self.alert_latency.labels(alert.model).observe(latency)
