"""Prometheus metrics of the worker: names, units and bounded labels in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

__all__ = ["WorkerMetrics"]


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
        self.batch_seconds = Histogram(
            "driftline_batch_seconds", "Time to handle one micro-batch.", ["stage"], registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.batch_size = Histogram(
            "driftline_batch_size", "Events per micro-batch.", ["stage"], registry=r,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
        )
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
