"""Prometheus metrics of the worker: names, units and bounded labels in one place."""

from __future__ import annotations

import time
from collections.abc import Mapping, Callable, Container, Iterable, Sequence
from typing import Any

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
            "Wall time from the Kafka timestamp of the oldest labelled example in the batch that raised an alert "
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

    def declare(self, models: Mapping[str, tuple[str, Sequence[str]]], reject_kinds: Iterable[str]) -> None:
        """Create every bounded label set at zero, before the first event.

        A counter series born at its first increment is already non-zero at its
        first scrape, so ``rate()`` and ``increase()`` miss that first burst
        (the first alert ever, say).  ``models`` maps each model to its metric
        name and the names of its detectors.
        """
        for source in ("prediction", "outcome"):
            self.events_read.labels(source)
            self.events_processed.labels(source)
            self.events_expired.labels(source)
            for kind in reject_kinds:
                self.events_dead_lettered.labels(source, kind)
        for model, (metric, detectors) in models.items():
            self.examples.labels(model)
            self.examples_rejected.labels(model)
            self.performance.labels(model, metric)
            self.alerts_open.labels(model)
            self.retrain_triggers.labels(model, "performance_decay")
            self.alert_latency.labels(model)
            self.label_delay.labels(model)
            for detector in detectors:
                fired_severity = "critical" if detector == "threshold" else "warning"
                self.alerts.labels(model, detector, "fired", fired_severity)
                self.alerts.labels(model, detector, "resolved", "info")

    def observe_batch(
        self, stage: str, events: Sequence[Any], source_of: Callable[[str], str | None],
        highwater: Callable[[Any], int | None],
    ) -> None:
        """Consumer lag of each partition the batch came from, and the batch's wall time.

        ``events`` are Faust events (``event.message.tp``, ``.offset``); ``highwater`` is
        ``app.consumer.highwater``, which reads the mark cached from the last fetch, so this costs no request.
        """
        self.last_batch.labels(stage).set(time.time())
        last_offset: dict[Any, int] = {}
        for event in events:
            last_offset[event.message.tp] = event.message.offset
        for tp, offset in last_offset.items():
            source = source_of(tp.topic)
            try:
                mark = highwater(tp)
            # aiokafka asserts the partition is assigned; during a rebalance it may not be, and a metric
            # must never stop the stream.
            except (AssertionError, KeyError, RuntimeError):
                continue
            if source is None or mark is None:
                continue
            self.consumer_lag.labels(source, str(tp.partition)).set(max(mark - offset - 1, 0))

    def observe_label_delay(self, examples: Iterable[Any], models: Container[str]) -> None:
        """Prediction-to-outcome event-time delay of labelled examples of configured models (bounded labels)."""
        for example in examples:
            model = example.prediction.model
            if model in models:
                delay = (example.outcome.event_time - example.prediction.event_time).total_seconds()
                self.label_delay.labels(model).observe(max(delay, 0.0))

    def observe_alert_latency(self, alerts: Iterable[Any], events: Sequence[Any]) -> None:
        """Pipeline delay of each alert: now minus the oldest Kafka timestamp of the batch that raised it."""
        stamps = [e.message.timestamp for e in events if e.message.timestamp]
        if not stamps:
            return
        latency = max(time.time() - min(stamps), 0.0)
        for alert in alerts:
            self.alert_latency.labels(alert.model).observe(latency)
