"""The calibrated label-free estimates: calibration, alerts, positive-class metrics, batching, references, config."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from detectors.monitors.estimate_monitor import EstimateMonitor
from detectors.monitors.monitor_set import MonitorSet
from detectors.registry import build_detector
from detectors.score_calibration import ScoreCalibration, expected_auc, realized_auc
from schemas.config import parse_monitor_config
from schemas.events import Alert, LabelledExample, OutcomeEvent, PredictionEvent
from schemas.exceptions import ConfigError

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _stream(n: int, confidence_mean: np.ndarray, offset: float, seed: int = 0, version: str = "1",
            ) -> tuple[list[PredictionEvent], list[LabelledExample]]:
    """A classifier whose accuracy at confidence c is c + offset (under-confident when offset > 0)."""
    rng = np.random.default_rng(seed)
    confidence = np.clip(rng.normal(confidence_mean, 0.04, n), 0.5, 0.999)
    right = rng.random(n) < np.clip(confidence + offset, 0, 1)
    predictions = [PredictionEvent(prediction_id=f"p{i}", model="m", model_version=version, prediction="yes",
                                   confidence=round(float(c), 5), event_time=T0 + timedelta(seconds=i))
                   for i, c in enumerate(confidence)]
    labelled = [LabelledExample(prediction=p, outcome=OutcomeEvent(
        prediction_id=p.prediction_id, event_time=p.event_time, actual="yes" if r else "no"))
        for p, r in zip(predictions, right, strict=True)]
    return predictions, labelled


def _replay(config: str, predictions: Sequence[PredictionEvent], labelled: Sequence[LabelledExample],
            batch: int = 500, delay: int = 1000) -> tuple[MonitorSet, list[Alert]]:
    """Predictions in batches; each prediction's label ``delay`` predictions later."""
    monitors = MonitorSet(parse_monitor_config(config), build_detector)
    alerts: list[Alert] = []
    for start in range(0, len(predictions), batch):
        alerts += monitors.observe_predictions(predictions[start:start + batch]).alerts
        due = labelled[max(0, start - delay):max(0, start + batch - delay)]
        alerts += monitors.observe(due).alerts
    return monitors, [a for a in alerts if a.monitor == "estimated_performance"]


def _index(alert: Alert) -> int:
    return int((alert.event_time - T0).total_seconds())


ESTIMATE = ("models: {m: {task: classification, performance: {threshold: 0.5}, detector: null,"
            " estimated_performance: {threshold: 0.93, window: 1000, calibration: %s}}}")


def test_raw_mean_confidence_alerts_on_falling_confidence_and_resolves() -> None:
    # calibration: none is the estimate before calibration existed: the mean confidence.
    mean = np.r_[np.full(3000, 0.97), np.full(3000, 0.80), np.full(2000, 0.97)]
    predictions, labelled = _stream(8000, mean, 0.0)
    monitors, alerts = _replay(ESTIMATE % "none", predictions, labelled)
    assert [(a.status, a.detector) for a in alerts] == [("fired", "estimated_accuracy"), ("resolved", "estimated_accuracy")]
    assert 3000 < _index(alerts[0]) < 3300 and 6000 < _index(alerts[1]) < 7000
    assert monitors.estimate_monitors[("m", "1")].calibrated


def test_an_under_confident_model_does_not_alert_once_calibrated_and_a_real_drop_does() -> None:
    # The model: confidences 1.5 points below its accuracy (about 0.929 against 0.944), then harder inputs
    # take the accuracy to about 0.915.
    mean = np.r_[np.full(12_000, 0.929), np.full(6000, 0.90)]
    predictions, labelled = _stream(18_000, mean, 0.015, seed=3)
    _, raw = _replay(ESTIMATE % "none", predictions, labelled)
    assert raw and _index(raw[0]) < 2000  # the raw mean confidence pages on stable traffic, and stays open
    monitors, calibrated = _replay(ESTIMATE % "isotonic", predictions, labelled)
    fired = [a for a in calibrated if a.status == "fired"]
    assert len(fired) == 1 and 12_000 < _index(fired[0]) < 14_000, [(a.status, _index(a)) for a in calibrated]
    estimate = monitors.estimate_monitors[("m", "1")]
    truth = np.clip(np.array([p.confidence for p in predictions[-1000:]]) + 0.015, 0, 1).mean()
    assert estimate.estimates["accuracy"] == pytest.approx(truth, abs=0.01)
    assert estimate.realized["accuracy"] == pytest.approx(truth, abs=0.03)


def test_uncalibrated_estimates_do_not_alert_until_the_calibration_is_fitted() -> None:
    mean = np.full(4000, 0.80)  # well below the threshold: an alert as soon as it may
    predictions, labelled = _stream(4000, mean, 0.0)
    monitors, alerts = _replay(ESTIMATE % "isotonic", predictions, labelled, delay=1000)
    # The 2,000th label of the version arrives with the prediction batch ending at 3,500.
    assert [a.status for a in alerts] == ["fired"] and _index(alerts[0]) >= 3000
    assert monitors.estimate_monitors[("m", "1")].calibrated


def test_the_same_alerts_however_the_predictions_are_batched() -> None:
    mean = np.r_[np.full(5000, 0.95), np.full(3000, 0.85)]
    predictions, labelled = _stream(8000, mean, 0.01, seed=4)
    config = ESTIMATE % "histogram"
    _, big = _replay(config, predictions, labelled, batch=500, delay=2500)
    _, small = _replay(config, predictions, labelled, batch=50, delay=2500)
    assert [(a.alert_id, a.statistic) for a in big] == [(a.alert_id, a.statistic) for a in small]
    assert big


def test_positive_class_estimates_follow_the_realized_metrics() -> None:
    rng = np.random.default_rng(9)
    n = 12_000
    score = rng.beta(0.6, 2.5, n)  # the model's probability of fraud
    fraud = rng.random(n) < np.clip(score * 0.8 + 0.02, 0, 1)  # miscalibrated: fraud is rarer than it thinks
    predictions = [PredictionEvent(prediction_id=f"p{i}", model="m", model_version="1", prediction=bool(s >= 0.5),
                                   probabilities={"True": round(float(s), 5), "False": round(1 - float(s), 5)},
                                   event_time=T0 + timedelta(seconds=i)) for i, s in enumerate(score)]
    labelled = [LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id=p.prediction_id,
                                                                  event_time=p.event_time, actual=bool(f)))
                for p, f in zip(predictions, fraud, strict=True)]
    spec = parse_monitor_config(
        "models: {m: {task: classification, performance: {threshold: 0.5}, estimated_performance: {threshold: 0.5,"
        " window: 6000, calibration_size: 6000, positive_class: true, thresholds: {recall: 0.1}}}}").models["m"]
    monitor = EstimateMonitor("m", "1", spec)
    monitor.observe_labelled(labelled[:6000])
    assert monitor.calibrated
    monitor.observe_predictions(predictions[6000:])
    monitor.observe_labelled(labelled[6000:])
    # What CBPE estimates is the expected confusion matrix under the true probabilities.  The calibration's error
    # is that of its ~600 fitting examples above the 0.5 cut (a standard error of 0.02 on the precision); the
    # realized metrics add the labels' own noise, as much again.
    p_true, predicted = np.clip(score[6000:] * 0.8 + 0.02, 0, 1), score[6000:] >= 0.5
    tp, fn = p_true[predicted].sum(), p_true[~predicted].sum()
    expected = {"accuracy": float(np.where(predicted, p_true, 1 - p_true).mean()),
                "precision": float(tp / predicted.sum()), "recall": float(tp / (tp + fn)),
                "f1": float(2 * tp / (predicted.sum() + tp + fn)), "roc_auc": expected_auc(score[6000:], p_true)}
    realized = monitor.realized
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert monitor.estimates[metric] == pytest.approx(expected[metric], abs=0.05), metric
        assert monitor.estimates[metric] == pytest.approx(realized[metric], abs=0.08), metric


def test_calibration_maps_and_auc() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, 5000)
    y = rng.random(5000) < x ** 2
    # A bin of 100 has a standard error of up to 0.05: histogram steps stray further than isotonic interpolation.
    for method, tolerance in (("isotonic", 0.08), ("histogram", 0.12)):
        fitted = ScoreCalibration(method, min_bin_count=100).fit(x, y)
        grid = np.linspace(0.05, 0.95, 10)
        assert np.abs(fitted.transform(grid) - grid ** 2).max() < tolerance, method
    isotonic = ScoreCalibration("isotonic", 100).fit(x, y)
    assert np.all(np.diff(isotonic.transform(np.linspace(0, 1, 200))) >= 0)
    assert realized_auc([0.2, 0.2], [0, 1]) == 0.5
    # The expected AUC of outcomes drawn with these probabilities is the mean AUC of such draws.
    p = rng.uniform(0, 1, 300)
    draws = [realized_auc(p, rng.random(300) < p) for _ in range(400)]
    assert expected_auc(p, p) == pytest.approx(float(np.mean(draws)), abs=0.01)


def test_a_reference_file_with_outcomes_calibrates_from_the_start(tmp_path: Path) -> None:
    predictions, labelled = _stream(3000, np.full(3000, 0.929), 0.015, seed=5)
    (tmp_path / "ref.jsonl").write_text("\n".join(e.model_dump_json() for e in labelled[:2000]) + "\n")
    config = parse_monitor_config(
        "models: {m: {task: classification, performance: {threshold: 0.5}, drift: {reference_file: ref.jsonl},"
        " estimated_performance: {threshold: 0.93, window: 500}}}", base_dir=tmp_path)
    assert config.warnings() == []
    assert len(config.labelled_reference_of("m")) == 2000 and len(config.reference_of("m")) == 2000
    monitors = MonitorSet(config, build_detector)
    assert not monitors.observe_predictions(predictions[2000:]).alerts
    estimate = monitors.estimate_monitors[("m", "1")]
    assert estimate.calibrated and estimate.estimates["accuracy"] > 0.935

    (tmp_path / "few.jsonl").write_text("\n".join(e.model_dump_json() for e in labelled[:60]) + "\n")
    few = parse_monitor_config(
        "models: {m: {task: classification, performance: {threshold: 0.5}, drift: {reference_file: few.jsonl},"
        " estimated_performance: {threshold: 0.93}}}", base_dir=tmp_path)
    ((field, message),) = few.warnings()
    assert field == "models.m.estimated_performance.calibration_size" and "60 labelled" in message


def test_estimate_state_survives_a_pickle_and_a_new_version_is_calibrated_afresh() -> None:
    predictions, labelled = _stream(3000, np.full(3000, 0.9), 0.02, seed=6)
    monitors, _ = _replay(ESTIMATE % "isotonic", predictions, labelled, delay=0)
    estimate = monitors.estimate_monitors[("m", "1")]
    back = pickle.loads(pickle.dumps(estimate))
    assert back.calibrated and back.estimates == estimate.estimates
    v2, _ = _stream(10, np.full(10, 0.9), 0.02, version="2")
    monitors.observe_predictions(v2)
    assert not monitors.estimate_monitors[("m", "2")].calibrated


@pytest.mark.parametrize(("estimate", "field"), [
    ("{threshold: 0.9, thresholds: {recall: 0.5}}", "thresholds need positive_class"),
    ("{threshold: 0.9, calibration_size: 100, min_bin_count: 60}", "at least twice min_bin_count"),
    ("{threshold: 0.9, calibration: platt}", "models.m.estimated_performance.calibration"),
    ("{threshold: 0.9, positive_class: true, thresholds: {auc: 0.5}}", "models.m.estimated_performance.thresholds.auc"),
])
def test_bad_estimate_config_names_the_field(estimate: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config("models: {m: {task: classification, performance: {threshold: 0.5},"
                             f" estimated_performance: {estimate}}}}}")
    assert field in str(info.value)



@pytest.mark.parametrize("keep_refitting", [True, False])
def test_after_the_largest_fit_the_map_follows_the_latest_labels_unless_told_not_to(keep_refitting: bool) -> None:
    # The accuracy at a confidence falls from c to c - 0.2 after 800 labels: refitting every 200 labels on the
    # latest 400 (the map the scores now need) catches it up; the map fitted on the first 400 stays where it was.
    spec = parse_monitor_config(
        "models: {m: {task: classification, performance: {threshold: 0.5}, detector: null, estimated_performance:"
        " {threshold: 0.5, window: 500, calibration_size: 200, max_calibration_size: 400,"
        f" keep_refitting: {str(keep_refitting).lower()}}}}}}}").models["m"]
    monitor = EstimateMonitor("m", "1", spec)
    _, before = _stream(800, np.full(800, 0.85), 0.0, seed=3)
    _, after = _stream(1200, np.full(1200, 0.85), -0.2, seed=4)
    monitor.observe_labelled(before + after)
    predictions, _ = _stream(500, np.full(500, 0.85), 0.0, seed=5)
    monitor.observe_predictions(predictions)
    assert len(monitor._fit_right) == (400 if keep_refitting else 0)  # only the latest pairs are kept
    if keep_refitting:
        assert monitor.estimates["accuracy"] == pytest.approx(0.65, abs=0.05)
    else:
        assert monitor.estimates["accuracy"] == pytest.approx(0.85, abs=0.05)


def test_a_checkpointed_monitor_from_before_keep_refitting_loads_and_refits_again() -> None:
    spec = parse_monitor_config(
        "models: {m: {task: classification, performance: {threshold: 0.5}, detector: null, estimated_performance:"
        " {threshold: 0.5, window: 500, calibration_size: 200, max_calibration_size: 400}}}").models["m"]
    monitor = EstimateMonitor("m", "1", spec)
    _, before = _stream(400, np.full(400, 0.85), 0.0, seed=3)
    monitor.observe_labelled(before)
    # What the code before kept at this point: no pairs (the largest fit was done), a count, a spec without the field.
    old = monitor.__dict__.copy()
    old.update(_fit_confidence=np.empty(0, np.float32), _fit_right=np.empty(0, bool), _fit_score=np.empty(0, np.float32),
               _fit_positive=np.empty(0, bool), _next_fit=400, _n_fit_predicted_positive=0)
    del old["_fit_predicted"]
    old_spec = monitor.spec.model_copy()
    del old_spec.__dict__["keep_refitting"]
    old["spec"] = old_spec
    restored = EstimateMonitor.__new__(EstimateMonitor)
    restored.__setstate__(pickle.loads(pickle.dumps(old)))
    assert restored.spec.keep_refitting
    _, after = _stream(400, np.full(400, 0.85), -0.2, seed=4)
    restored.observe_labelled(after)  # 400 more: the pairs are back to the largest fit, and it refits on them
    predictions, _ = _stream(500, np.full(500, 0.85), 0.0, seed=5)
    restored.observe_predictions(predictions)
    assert restored.estimates["accuracy"] == pytest.approx(0.65, abs=0.05)
