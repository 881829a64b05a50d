"""Prometheus metrics of the prediction-side monitors, read from a real MonitorSet driven by real predictions."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from prometheus_client import generate_latest

from detectors.monitors.monitor_set import MonitorSet
from detectors.registry import build_detector
from schemas.config import MonitorConfig, parse_monitor_config
from schemas.events import Alert, LabelledExample, OutcomeEvent, PredictionEvent
from streams.processes import metric_value, registry_samples
from streams.metrics import WorkerMetrics

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CONFIG = """
models:
  robot:
    task: classification
    performance: {threshold: 0.8, window: 50}
    features:
      size: {kind: numeric, outliers: true}
      shape: {kind: categorical}
      weight: {kind: numeric, drift: false, trend: true}
    prediction_drift: true
    estimated_performance: {threshold: 0.7, window: 50, calibration: none}  # no labels here to calibrate on
    drift: {reference_size: 100, window: 50, false_alarm_horizon: 1000}
  prices:
    task: regression
    performance: {threshold: 2.0}
    prediction_drift: true
    drift: {reference_size: 100, window: 50}
  labels-only:
    task: classification
    performance: {threshold: 0.8}
"""
CHANGE_AT, SPIKE_AT = 300, 420
DATA_DETECTORS = {"ks", "chi_squared", "unseen_rate", "normal_score_glr", "share_glr", "unseen_glr", "robust_spike",
                  "gaussian_glr", "estimated_accuracy"}
UNSEEN = ("unseen_rate", "unseen_glr")


def _predictions(n: int, model: str = "robot", version: str = "7", start: int = 0, seed: int = 0) -> list[PredictionEvent]:
    """Boxes and bags; from CHANGE_AT on, bigger, heavier, a new shape (tube) and less confident; one spike."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        changed = i >= CHANGE_AT
        shape = str(rng.choice(["box", "bag", "tube"] if changed else ["box", "bag"]))
        size = 1000.0 if i == SPIKE_AT else float(rng.normal(13.0 if changed else 10.0, 1.0))
        out.append(PredictionEvent(
            prediction_id=f"{model}-{version}-{i}", model=model, model_version=version,
            event_time=T0 + timedelta(seconds=i), prediction=shape, confidence=0.6 if changed else 0.9,
            features={"size": size, "shape": shape, "weight": float(rng.normal(8.0 if changed else 5.0, 0.1))},
        ))
    return out


def _value(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _statistic(metrics: WorkerMetrics, model: str, monitor: str, feature: str, detector: str) -> float | None:
    return _value(metrics, "driftline_drift_statistic", model=model, monitor=monitor, feature=feature, detector=detector)


def _labelsets(metrics: WorkerMetrics, name: str) -> set[tuple[tuple[str, str], ...]]:
    return {tuple(sorted(s.labels.items())) for family in metrics.registry.collect() for s in family.samples
            if s.name == name}


class Worker:
    """What MonitorService does with a batch: monitors first, then the metrics (examples counted as it counts them)."""

    def __init__(self, config: MonitorConfig) -> None:
        self.monitors = MonitorSet(config, build_detector)
        self.metrics = WorkerMetrics()
        self.metrics.declare({m: (mon.metric_name, mon.detector_names) for m, mon in self.monitors.monitors.items()},
                             ["malformed"])
        self.metrics.declare_predictions(config)
        self.alerts: list[Alert] = []

    def predictions(self, batch: Sequence[PredictionEvent]) -> None:
        self.alerts += self.monitors.observe_predictions(batch).alerts
        self.metrics.observe_predictions(self.monitors, batch)

    def examples(self, batch: Sequence[PredictionEvent]) -> None:
        examples = [LabelledExample(prediction=p, outcome=OutcomeEvent(
            prediction_id=p.prediction_id, event_time=p.event_time, actual=p.prediction)) for p in batch]
        self.monitors.observe(examples)
        self.metrics.count_examples(Counter(e.prediction.model for e in examples))


@pytest.fixture
def worker() -> Worker:
    return Worker(parse_monitor_config(CONFIG))


def test_declare_creates_each_models_bounded_series_before_the_first_prediction(worker: Worker) -> None:
    m = worker.metrics
    assert _value(m, "driftline_predictions_total", model="robot") == 0
    assert _value(m, "driftline_predictions_total", model="prices") == 0
    assert _value(m, "driftline_predictions_total", model="labels-only") is None  # it watches no predictions
    statistics = {tuple(v for _, v in sorted(labels)) for labels in _labelsets(m, "driftline_drift_statistic")}
    # Sorted label values: detector, feature, model, monitor.  weight has no windowed test (drift: false).
    assert statistics == {
        ("ks", "size", "robot", "feature_drift"),
        ("normal_score_glr", "size", "robot", "feature_drift"),
        ("chi_squared", "shape", "robot", "feature_drift"),
        ("share_glr", "shape", "robot", "feature_drift"),
        ("unseen_rate", "shape", "robot", "new_category"),
        ("unseen_glr", "shape", "robot", "new_category"),
        ("chi_squared", "", "robot", "prediction_drift"),
        ("share_glr", "", "robot", "prediction_drift"),
        ("unseen_rate", "", "robot", "new_category"),
        ("unseen_glr", "", "robot", "new_category"),
        ("ks", "", "prices", "prediction_drift"),
        ("normal_score_glr", "", "prices", "prediction_drift"),
    }
    assert all(math.isnan(s.value) for f in m.registry.collect() for s in f.samples
               if s.name in ("driftline_drift_statistic", "driftline_estimated_accuracy", "driftline_label_coverage"))
    assert {dict(labels)["monitor"] for labels in _labelsets(m, "driftline_data_alerts_open")
            if dict(labels)["model"] == "robot"} == {
        "feature_drift", "new_category", "prediction_drift", "outliers", "trend", "estimated_performance"}
    assert _value(m, "driftline_data_alerts_open", model="robot", monitor="outliers") == 0
    assert _value(m, "driftline_alerts_total", model="robot", detector="unseen_rate", status="fired",
                  severity="critical") == 0
    assert _value(m, "driftline_retrain_triggers_total", model="robot", reason="drift") == 0
    assert _value(m, "driftline_estimated_accuracy_threshold", model="robot") == 0.7
    assert _value(m, "driftline_estimated_accuracy", model="prices") is None  # a regressor has no estimate
    assert _value(m, "driftline_drift_reference_filled_ratio", model="robot") == 0


def test_every_alert_the_monitors_raise_was_declared_and_has_its_gauges(worker: Worker) -> None:
    declared = {labels: 0.0 for labels in _labelsets(worker.metrics, "driftline_alerts_total")}
    statistic_sets = _labelsets(worker.metrics, "driftline_drift_statistic")
    open_sets = _labelsets(worker.metrics, "driftline_data_alerts_open")
    events = _predictions(600)
    for start in range(0, len(events), 100):
        worker.predictions(events[start:start + 100])
    fired = [a for a in worker.alerts if a.status == "fired"]
    # The scenario raises every kind of prediction-side alert but the share test's: a reference of 100 affords
    # box and bag (50 each) only its widest rows, and their shares move from a half to a third.
    assert {a.detector for a in fired} == DATA_DETECTORS - {"share_glr"}
    for alert in worker.alerts:
        labels = {"model": alert.model, "detector": alert.detector, "status": alert.status, "severity": alert.severity}
        assert tuple(sorted(labels.items())) in declared, alert
        assert tuple(sorted({"model": alert.model, "monitor": alert.monitor}.items())) in open_sets, alert
        if alert.detector not in ("robust_spike", "gaussian_glr", "estimated_accuracy"):
            stat = {"model": alert.model, "monitor": alert.monitor, "feature": alert.feature or "",
                    "detector": alert.detector}
            assert tuple(sorted(stat.items())) in statistic_sets, alert
    # No series was born after declare: rate() sees the first alert.
    assert _labelsets(worker.metrics, "driftline_drift_statistic") == statistic_sets
    assert _labelsets(worker.metrics, "driftline_data_alerts_open") == open_sets


def test_observe_sets_counters_and_gauges_from_the_monitors(worker: Worker) -> None:
    m = worker.metrics
    events = _predictions(600)
    for start in range(0, len(events), 100):
        worker.predictions(events[start:start + 100])
        (monitor,) = [d for (model, _, segment), d in worker.monitors.data_monitors.items()
                      if model == "robot" and segment is None]
        assert _value(m, "driftline_predictions_total", model="robot") == worker.monitors.n_predictions["robot"]
        assert _value(m, "driftline_drift_reference_filled_ratio", model="robot") == min((start + 100) / 100, 1.0)
        estimate = worker.monitors.estimate_monitors[("robot", "7")]
        assert _value(m, "driftline_estimated_accuracy", model="robot") == pytest.approx(estimate.estimates["accuracy"])
        assert _value(m, "driftline_estimated_performance", model="robot", metric="accuracy") == pytest.approx(
            estimate.estimates["accuracy"])
        for (name, series, detector), value in monitor.statistics.items():
            monitor_label = "new_category" if detector in UNSEEN else name
            feature = series if name == "feature_drift" else ""
            assert _statistic(m, "robot", monitor_label, feature, detector) == pytest.approx(value)
        open_by_monitor = Counter("new_category" if k[2] in UNSEEN else k[0] for k in monitor.open_alerts)
        open_by_monitor["estimated_performance"] = len(estimate.open_alerts)
        for kind in ("feature_drift", "new_category", "prediction_drift", "outliers", "trend", "estimated_performance"):
            assert _value(m, "driftline_data_alerts_open", model="robot", monitor=kind) == open_by_monitor[kind]
    # After the change: the size drifted, tubes are new, the estimate fell, alerts are open.
    assert _statistic(m, "robot", "feature_drift", "size", "ks") == pytest.approx(1.0, abs=0.2)
    assert (_statistic(m, "robot", "new_category", "shape", "unseen_rate") or 0) > 0.2
    assert _value(m, "driftline_estimated_accuracy", model="robot") == pytest.approx(0.6)
    assert metric_value(registry_samples(m.registry), "driftline_data_alerts_open", model="robot",
                        monitor="new_category") >= 1
    # Models absent from the batch keep their series untouched.
    assert _value(m, "driftline_predictions_total", model="prices") == 0
    assert math.isnan(_statistic(m, "prices", "prediction_drift", "", "ks") or 0.0)


def test_label_coverage_is_examples_scored_over_predictions_watched_since_start(worker: Worker) -> None:
    events = _predictions(200)
    worker.predictions(events[:100])
    assert _value(worker.metrics, "driftline_label_coverage", model="robot") == 0  # no outcome yet
    worker.examples(events[:40])
    worker.predictions(events[100:])
    assert _value(worker.metrics, "driftline_label_coverage", model="robot") == pytest.approx(40 / 200)
    worker.examples(events[40:150])
    worker.predictions(_predictions(50, start=200))
    assert _value(worker.metrics, "driftline_label_coverage", model="robot") == pytest.approx(150 / 250)


def test_a_new_version_shows_its_own_statistics_nan_until_its_reference_is_complete(worker: Worker) -> None:
    m = worker.metrics
    worker.predictions(_predictions(250, version="7"))
    old = _statistic(m, "robot", "feature_drift", "size", "ks")
    assert old is not None and math.isfinite(old)
    worker.predictions(_predictions(60, version="8", seed=1))
    assert math.isnan(_statistic(m, "robot", "feature_drift", "size", "ks") or 0.0)
    assert _value(m, "driftline_drift_reference_filled_ratio", model="robot") == pytest.approx(0.6)
    assert _value(m, "driftline_estimated_accuracy", model="robot") == pytest.approx(0.9)
    # Both versions in one batch: the gauges follow the one that has carried more predictions.
    mixed = _predictions(50, version="7", start=250, seed=2) + _predictions(50, version="8", start=60, seed=3)
    worker.predictions(mixed)
    assert math.isfinite(_statistic(m, "robot", "feature_drift", "size", "ks") or math.nan)
    assert _value(m, "driftline_drift_reference_filled_ratio", model="robot") == 1.0
    worker.predictions(_predictions(60, version="8", start=110, seed=4))
    assert _value(m, "driftline_drift_reference_filled_ratio", model="robot") == 1.0  # 170 seen by version 8
    assert _value(m, "driftline_predictions_total", model="robot") == 250 + 60 + 100 + 60


def test_unwatched_models_are_not_counted_and_no_label_names_a_version_or_an_id(worker: Worker) -> None:
    batch = (_predictions(30, version="v-secret-42") + _predictions(30, model="labels-only")
             + _predictions(30, model="unconfigured"))
    worker.predictions(batch)
    m = worker.metrics
    assert _value(m, "driftline_predictions_total", model="robot") == 30
    assert _value(m, "driftline_predictions_total", model="labels-only") is None
    assert _value(m, "driftline_predictions_total", model="unconfigured") is None
    text = generate_latest(m.registry).decode()
    assert "v-secret-42" not in text and "robot-v-secret" not in text and "version=" not in text
    assert "segment=" not in text


def test_open_alerts_count_every_segment_and_statistics_follow_the_model_wide_monitor() -> None:
    config = CONFIG.replace("    prediction_drift: true\n    estimated_performance",
                            "    prediction_drift: true\n    segments: {max_segments: 2}\n    estimated_performance", 1)
    worker = Worker(parse_monitor_config(config))
    events = [p.model_copy(update={"segment": ("north", "south")[i % 2]}) for i, p in enumerate(_predictions(600))]
    for start in range(0, len(events), 100):
        worker.predictions(events[start:start + 100])
    mine = {segment: d for (model, _, segment), d in worker.monitors.data_monitors.items() if model == "robot"}
    assert set(mine) == {None, "north", "south"}
    n_open = Counter("new_category" if k[2] in UNSEEN else k[0] for d in mine.values() for k in d.open_alerts)
    assert sum(n_open.values()) > len(mine[None].open_alerts)  # the segments' alerts count too
    for kind, n in n_open.items():
        assert _value(worker.metrics, "driftline_data_alerts_open", model="robot", monitor=kind) == n
    size = mine[None].statistics[("feature_drift", "size", "ks")]
    assert _statistic(worker.metrics, "robot", "feature_drift", "size", "ks") == pytest.approx(size)
