"""Every rolling metric equals a naive computation over its window, after every example; alerts work on each."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.monitors.monitor_set import MonitorSet
from detectors.performance import RollingMetric
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from schemas.events import LabelledExample, OutcomeEvent, PredictionEvent
from schemas.exceptions import ConfigError
from streams.metrics import WorkerMetrics

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def example(i: int, predicted: object, actual: object, probabilities: dict[str, float] | None = None) -> LabelledExample:
    t = T0 + timedelta(seconds=i)
    p = PredictionEvent(prediction_id=f"p{i}", model="m", model_version="1", event_time=t,
                        prediction=predicted, probabilities=probabilities)  # type: ignore[arg-type]
    return LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id=f"p{i}", event_time=t, actual=actual))  # type: ignore[arg-type]


def naive(metric: str, pairs: list[tuple[object, object, float]]) -> float:
    if metric == "accuracy":
        return sum(p == a for p, a, _ in pairs) / len(pairs)
    if metric in ("precision", "recall", "f1"):
        tp = sum(p == "fraud" and a == "fraud" for p, a, _ in pairs)
        fp = sum(p == "fraud" and a != "fraud" for p, a, _ in pairs)
        fn = sum(p != "fraud" and a == "fraud" for p, a, _ in pairs)
        den = {"precision": tp + fp, "recall": tp + fn, "f1": 2 * tp + fp + fn}[metric]
        return math.nan if den == 0 else (2 * tp if metric == "f1" else tp) / den
    if metric == "log_loss":
        return sum(-math.log(max(q, 1e-15)) for _, _, q in pairs) / len(pairs)
    errors = [float(p) - float(a) for p, a, _ in pairs]  # type: ignore[arg-type]
    if metric == "mae":
        return sum(abs(e) for e in errors) / len(errors)
    if metric == "rmse":
        return math.sqrt(sum(e * e for e in errors) / len(errors))
    return abs(sum(errors) / len(errors))


CLASSIFICATION = ["accuracy", "precision", "recall", "f1", "log_loss"]
REGRESSION = ["mae", "rmse", "bias"]


@settings(max_examples=60, deadline=None)
@given(
    metric=st.sampled_from(CLASSIFICATION + REGRESSION),
    window=st.integers(10, 40),
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 30), min_size=1, max_size=8),
)
def test_rolling_metric_equals_a_naive_window(metric: str, window: int, seed: int, cuts: list[int]) -> None:
    rng = np.random.default_rng(seed)
    task = "classification" if metric in CLASSIFICATION else "regression"
    extra = "positive_class: fraud, " if metric in ("precision", "recall", "f1") else ""
    hysteresis = "hysteresis: 0.01, " if metric not in ("accuracy", "precision", "recall", "f1") else ""
    config = parse_monitor_config(
        f"models: {{m: {{task: {task}, performance: {{metric: {metric}, {extra}{hysteresis}window: {window}, "
        f"threshold: 0.5}}, detector: null}}}}"
    )
    monitors = MonitorSet(config, build_detector)
    monitor = monitors.monitors["m"]
    pairs: list[tuple[object, object, float]] = []
    i = 0
    for cut in cuts:
        batch = []
        for _ in range(cut):
            if task == "classification":
                predicted = ["fraud", "ok"][int(rng.integers(2))]
                actual = ["fraud", "ok"][int(rng.integers(2))]
                q = float(rng.uniform(0.01, 0.99))
                probs = {"fraud": q, "ok": 1 - q}
                pairs.append((predicted, actual, probs[actual]))
                batch.append(example(i, predicted, actual, probs))
            else:
                predicted_value, actual_value = float(rng.normal(10, 3)), float(rng.normal(10, 3))
                pairs.append((predicted_value, actual_value, 0.0))
                batch.append(example(i, predicted_value, actual_value))
            i += 1
        monitors.observe(batch)
        expected = naive(metric, pairs[-window:])
        got = monitor.metric_value
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_a_fall_in_recall_alerts_on_recall() -> None:
    """Fraud: the model starts missing fraud while accuracy barely moves (fraud is 5% of traffic)."""
    rng = np.random.default_rng(4)
    config = parse_monitor_config(
        "models: {m: {task: classification, performance: {metric: recall, positive_class: fraud, window: 2000, "
        "threshold: 0.7}}}"
    )
    monitors, examples = MonitorSet(config, build_detector), []
    for i in range(12_000):
        fraud = rng.random() < 0.05
        caught = rng.random() < (0.9 if i < 6000 else 0.5)
        predicted = "fraud" if (fraud and caught) else "ok"
        examples.append(example(i, predicted, "fraud" if fraud else "ok"))
    result = monitors.observe(examples)
    fired = [a for a in result.alerts if a.status == "fired" and a.detector == "threshold"]
    assert fired and fired[0].event_time >= T0 + timedelta(seconds=6000)
    assert "recall" in fired[0].message and fired[0].statistic < 0.7


def test_log_loss_without_probabilities_is_unscorable() -> None:
    config = parse_monitor_config(
        "models: {m: {task: classification, performance: {metric: log_loss, threshold: 0.7}, detector: null}}"
    )
    result = MonitorSet(config, build_detector).observe([example(0, "a", "a")])
    assert [reason for _, reason in result.rejected] == ["log_loss needs the prediction's class probabilities"]


@pytest.mark.parametrize(
    ("performance", "message"),
    [
        ("{metric: f1, threshold: 0.5}", "needs performance.positive_class"),
        ("{metric: rmse, threshold: 0.5}", "does not fit task"),
    ],
)
def test_metric_rules_are_checked_at_start_up(performance: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config(f"models: {{m: {{task: classification, performance: {performance}}}}}")
    assert info.value.problems[0][0] == "models.m" and message in info.value.problems[0][1]


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(0, 30), min_size=1, max_size=120),
    window=st.integers(1, 40),
    window_seconds=st.floats(1, 200),
    cut=st.integers(1, 50),
)
def test_time_window_matches_a_direct_count_and_any_batching(gaps, window, window_seconds, cut) -> None:  # type: ignore[no-untyped-def]
    times = np.cumsum(gaps)
    correct = (np.arange(len(times)) % 3 != 0).astype(float)[:, None]
    rm = RollingMetric("accuracy", window, window_seconds)
    values = np.concatenate([rm.update_many(correct[i:i + cut], times[i:i + cut]) for i in range(0, len(times), cut)])
    for i, t in enumerate(times):
        inside = [j for j in range(max(0, i - window + 1), i + 1) if times[j] > t - window_seconds]
        assert values[i] == pytest.approx(correct[inside, 0].mean())
    assert rm.n_in_window == len(inside) and rm.value == pytest.approx(correct[inside, 0].mean())


def test_a_time_window_needs_min_samples_and_judges_a_quiet_model() -> None:
    with pytest.raises(ConfigError, match="models.m: .*window_seconds needs performance.min_samples"):
        parse_monitor_config("models: {m: {task: classification, performance: {threshold: 0.8, window_seconds: 3600}}}")
    # Ten labelled examples an hour: a 500-example window would take two days to fill; a one-hour window with
    # min_samples 8 judges the last hour.
    cfg = parse_monitor_config("models: {m: {task: classification, performance: "
                               "{threshold: 0.8, window_seconds: 3600, min_samples: 8}, detector: null}}")
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    examples = []
    for i in range(200):
        t = t0 + timedelta(minutes=6 * i)
        right = i < 100 or i % 2 == 0  # accuracy 1.0, then 0.5 from the hundredth example (hour 10)
        p = PredictionEvent(prediction_id=f"p{i}", model="m", model_version="1", event_time=t, prediction="a")
        examples.append(LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id=f"p{i}", event_time=t,
                                                                           actual="a" if right else "b")))
    monitors = MonitorSet(cfg, build_detector)
    alerts = monitors.observe(examples).alerts
    fired = [a for a in alerts if a.status == "fired"]
    assert len(fired) == 1 and 100 <= int((fired[0].event_time - t0).total_seconds() // 360) < 110
    assert monitors.monitors["m"]._rolling.n_in_window == 10


def test_further_metrics_alert_on_their_own_thresholds_and_travel_in_checkpoints() -> None:
    """Fraud watched on recall and precision: false positives triple after the change, recall holds."""
    from detectors.monitors.checkpoint import Checkpointer, decode_checkpoint, encode_checkpoint
    from detectors.monitors.signed_state import StateRejection, StateSigner

    rng = np.random.default_rng(5)
    config = parse_monitor_config(
        "models: {m: {task: classification, detector: null, retrain: {cooldown_seconds: 1}, "
        "performance: {metric: recall, positive_class: fraud, window: 2000, threshold: 0.7}, "
        "metrics: [{metric: precision, positive_class: fraud, window: 2000, threshold: 0.6}]}}"
    )
    examples = []
    for i in range(12_000):
        fraud = rng.random() < 0.05
        flagged = rng.random() < 0.9 if fraud else rng.random() < (0.01 if i < 6000 else 0.06)
        examples.append(example(i, "fraud" if flagged else "ok", "fraud" if fraud else "ok"))
    monitors = MonitorSet(config, build_detector)
    result = monitors.observe(examples[:8000])
    fired = [a for a in result.alerts if a.status == "fired"]
    assert [(a.monitor, a.detector, a.severity) for a in fired] == [("performance", "threshold_precision", "critical")]
    assert "precision" in fired[0].message and fired[0].event_time >= T0 + timedelta(seconds=6000)
    assert [t.reason for t in result.triggers] == ["performance_decay"]
    assert monitors.metric_monitors[("m", "precision")].metric_value < 0.6 < monitors.monitors["m"].metric_value

    # The further metric's state is checkpointed with the model and restored with it.
    cp = Checkpointer(10, 10)
    cp.arrive("m", 0, 0, 0)
    [snap] = cp.snapshot(monitors, now=0.0)
    signer = StateSigner(b"a test key of 32 bytes, no more.")
    back = decode_checkpoint(encode_checkpoint(snap, signer), signer, b"m")
    assert not isinstance(back, StateRejection) and list(back.metrics) == ["precision"]
    fresh = MonitorSet(config, build_detector)
    fresh.install("m", back.monitor, back.segments, back.data, back.metrics)
    rest = fresh.observe(examples[8000:]).alerts
    straight = MonitorSet(config, build_detector)
    assert [a.alert_id for a in rest] == [a.alert_id for a in straight.observe(examples).alerts[len(result.alerts):]]
    assert fresh.metric_monitors[("m", "precision")].gate is fresh.monitors["m"].gate


def test_further_metrics_are_checked_at_start_up() -> None:
    base = "models: {m: {task: classification, performance: {metric: recall, positive_class: x, threshold: 0.5}, "
    for metrics, message in [
        ("[{threshold: 0.5}]", "metrics.0 needs a metric"),
        ("[{metric: recall, positive_class: x, threshold: 0.5}]", "metrics.0: metric 'recall' is already watched"),
        ("[{metric: mae, threshold: 0.5}]", "metrics.0.metric 'mae' does not fit task"),
        ("[{metric: precision, threshold: 0.5}]", "needs metrics.0.positive_class"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_monitor_config(base + f"metrics: {metrics}}}}}")


def test_label_delay_is_observed_per_configured_model_and_clipped_at_zero() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def example(model: str, i: int, delay_seconds: float) -> LabelledExample:
        prediction = PredictionEvent(prediction_id=f"{model}-{i}", model=model, model_version="1", event_time=t0,
                                     prediction="a")
        outcome = OutcomeEvent(prediction_id=f"{model}-{i}", event_time=t0 + timedelta(seconds=delay_seconds),
                               actual="a")
        return LabelledExample(prediction=prediction, outcome=outcome)

    metrics = WorkerMetrics()
    examples = [example("asr", 0, 2.0), example("other", 1, 9.0), example("asr", 2, 0.5), example("asr", 3, -4.0)]
    metrics.observe_label_delay(examples, {"asr"})

    def sample(name: str, model: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(f"driftline_label_delay_seconds_{name}", {"model": model, **labels})

    assert sample("count", "asr") == 3 and sample("sum", "asr") == 2.5  # the outcome before its prediction counts 0
    assert sample("bucket", "asr", le="1.0") == 2  # 0 and 0.5
    assert sample("count", "other") is None  # not a configured model: no series
