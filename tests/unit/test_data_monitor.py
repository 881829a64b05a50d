"""The prediction-side monitors: feature and prediction drift, new categories, spikes, trends, estimates."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from detectors.monitors.monitor_set import MonitorSet
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from schemas.events import Alert, PredictionEvent

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

Row = Callable[[int, np.random.Generator], dict[str, Any]]


def _predictions(n: int, row: Row, seed: int = 0, model: str = "m", version: str | Callable[[int], str] = "1",
                 segment: Callable[[int], str | None] = lambda i: None) -> list[PredictionEvent]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        fields = row(i, rng)
        out.append(PredictionEvent(
            prediction_id=f"{model}-{i}", model=model,
            model_version=version(i) if callable(version) else version,
            event_time=T0 + timedelta(seconds=i), segment=segment(i), **fields,
        ))
    return out


def _run(config: str, predictions: Sequence[PredictionEvent], batch: int = 500) -> tuple[MonitorSet, list[Alert], list]:
    monitors = MonitorSet(parse_monitor_config(config), build_detector)
    alerts: list[Alert] = []
    triggers: list = []
    for start in range(0, len(predictions), batch):
        result = monitors.observe_predictions(predictions[start:start + batch])
        alerts += result.alerts
        triggers += result.triggers
    return monitors, alerts, triggers


def _fired(alerts: Sequence[Alert], **where: Any) -> list[Alert]:
    return [a for a in alerts if a.status == "fired" and all(getattr(a, k) == v for k, v in where.items())]


def _index(alert: Alert) -> int:
    return int((alert.event_time - T0).total_seconds())


STOCK = """
models:
  m:
    task: regression
    performance: {threshold: 2.0}
    features:
      ret: {kind: numeric, outliers: true, trend: true}
      ticker: {kind: categorical}
    prediction_drift: true
"""


def _stock(change: int = 8000, spikes: tuple[int, ...] = (3000, 11000)) -> Row:
    def row(i: int, rng: np.random.Generator) -> dict[str, Any]:
        ret = rng.normal(0.001 if i < change else -0.003, 0.01) + (0.25 if i in spikes else 0.0)
        return {"features": {"ret": float(ret), "ticker": "ABC"[int(rng.integers(3))]}, "prediction": float(rng.normal())}
    return row


def test_spikes_are_flagged_on_the_event_they_happen_and_the_reversal_after_the_change() -> None:
    _, alerts, triggers = _run(STOCK, _predictions(16_000, _stock()))
    spikes = _fired(alerts, kind="outlier", feature="ret")
    assert [_index(a) for a in spikes] == [3000, 11000]
    assert all(a.statistic > 6 and "spike" in a.message for a in spikes)
    trend = _fired(alerts, monitor="trend")
    assert len(trend) == 1 and 8000 < _index(trend[0]) < 8600, [_index(a) for a in trend]
    ks = _fired(alerts, monitor="feature_drift", feature="ret", detector="ks")
    assert len(ks) == 1 and 8000 < _index(ks[0]) <= 9500
    # The sequential test on its normal scores sees the -0.4 sd shift before the block test does.
    scores = _fired(alerts, monitor="feature_drift", feature="ret", detector="normal_score_glr")
    assert len(scores) == 1 and 8000 < _index(scores[0]) < _index(ks[0]), [_index(a) for a in scores]
    # Nothing drifted before the change, but the spike, which is a point anomaly.
    assert all(_index(a) >= 8000 for a in _fired(alerts) if a.kind != "outlier")
    # The ticker mix and the predictions never changed.
    assert not _fired(alerts, feature="ticker") and not _fired(alerts, monitor="prediction_drift")
    # Spike and trend alerts resolve after a quiet window.
    resolved = {a.episode_id for a in alerts if a.status == "resolved"}
    assert {a.episode_id for a in spikes + trend} <= resolved
    assert {t.reason for t in triggers} == {"drift"} and all(t.data_from <= t.event_time for t in triggers)


def test_new_category_names_itself_and_resolves_when_it_is_gone() -> None:
    def row(i: int, rng: np.random.Generator) -> dict[str, Any]:
        shapes = ["box", "tube", "bag"] + (["cone"] if 5000 <= i < 8000 else [])
        return {"features": {"shape": shapes[int(rng.integers(len(shapes)))]}, "prediction": "ok"}

    config = STOCK.replace("task: regression", "task: classification").replace("threshold: 2.0", "threshold: 0.5")
    config = config.split("    features:")[0] + "    features: {shape: {kind: categorical}}\n"
    _, alerts, _ = _run(config, _predictions(11_000, row))
    new = _fired(alerts, monitor="new_category")
    # The sequential test within a few dozen events (a quarter of them are cones), the block rule at its end.
    assert [a.detector for a in new] == ["unseen_glr", "unseen_rate"]
    assert all(a.severity == "critical" and "cone" in a.message for a in new)
    assert 5000 <= _index(new[0]) < 5050 and 5050 <= _index(new[1]) < 5500
    for alert in new:
        assert any(a.status == "resolved" and a.episode_id == alert.episode_id and _index(a) >= 8000 for a in alerts)


def test_predicted_class_mix_shift_and_new_class() -> None:
    def row(i: int, rng: np.random.Generator) -> dict[str, Any]:
        p = [0.6, 0.3, 0.1, 0.0] if i < 6000 else [0.4, 0.3, 0.2, 0.1]
        return {"prediction": ["box", "tube", "bag", "cone"][int(rng.choice(4, p=p))]}

    config = "models: {m: {task: classification, performance: {threshold: 0.5}, prediction_drift: true}}"
    _, alerts, _ = _run(config, _predictions(9000, row))
    drift = _fired(alerts, monitor="prediction_drift")
    new = _fired(alerts, monitor="new_category")
    assert [a.detector for a in drift] == ["share_glr", "chi_squared"] and all(a.feature is None for a in drift)
    assert [a.detector for a in new] == ["unseen_glr", "unseen_rate"]
    assert all(6000 <= _index(a) < 7000 for a in drift + new)
    # The sequential tests well before the block ends (the mix moves by 20 points, a tenth are new).
    assert all(_index(a) < 6250 for a in drift + new if a.detector.endswith("_glr")), [_index(a) for a in drift + new]


def test_stationary_false_alarms_stay_within_the_model_budget_however_many_features() -> None:
    """Twenty-one stationary series share one budget: about N / horizon false alarms, not twenty-one times that.

    The rate holds on average over references; one reference can be unlucky
    (measured: 5 to 22 false alarms in 58k predictions, against 14.5 expected),
    so the bound is on the total over four seeded streams.
    """
    def row(i: int, rng: np.random.Generator) -> dict[str, Any]:
        xs = rng.normal(size=16)
        features: dict[str, Any] = {f"x{j}": float(x) for j, x in enumerate(xs)}
        features.update({f"c{j}": "abcd"[int(rng.integers(4))] for j in range(4)})
        return {"features": features, "prediction": float(rng.normal())}

    features = ", ".join([f"x{j}: {{kind: numeric}}" for j in range(16)] + [f"c{j}: {{kind: categorical}}" for j in range(4)])
    horizon, n, seeds = 4000, 30_000, 4
    config = (f"models: {{m: {{task: regression, performance: {{threshold: 9}}, prediction_drift: true, "
              f"drift: {{false_alarm_horizon: {horizon}}}, features: {{{features}}}}}}}")
    n_false = 0
    for seed in range(seeds):
        monitors, alerts, _ = _run(config, _predictions(n, row, seed=seed))
        n_false += len(_fired(alerts))
    # 21 block tests, 17 sequential ones on the numbers and two on each of the 4 categorical features.
    assert monitors.data_monitors[("m", "1", None)].n_budgeted == 21 + 17 + 2 * 4
    tested = seeds * (n - 2000)  # the default reference is not tested
    # Expected tested / horizon = 28; twenty-one unsplit budgets would give about 590.
    assert 0 < n_false <= 1.5 * tested / horizon, n_false


def test_a_budgeted_test_still_has_power_with_many_features() -> None:
    def row(i: int, rng: np.random.Generator) -> dict[str, Any]:
        features = {f"x{j}": float(rng.normal()) for j in range(20)}
        features["x7"] += 0.3 if i >= 5000 else 0.0
        return {"features": features, "prediction": 0.0}

    features = ", ".join(f"x{j}: {{kind: numeric}}" for j in range(20))
    config = f"models: {{m: {{task: regression, performance: {{threshold: 9}}, features: {{{features}}}}}}}"
    _, alerts, _ = _run(config, _predictions(8000, row))
    # One episode each, the sequential test's first: a small persisting shift does not flap.
    assert [(a.feature, a.detector, _index(a) >= 5000) for a in _fired(alerts)] == [
        ("x7", "normal_score_glr", True), ("x7", "ks", True)]


def test_a_new_version_starts_a_fresh_reference_and_old_versions_are_retired() -> None:
    def row(i: int, rng: np.random.Generator) -> dict[str, Any]:
        shift = 0.0 if i < 3000 else 2.0  # version 2 sees other data from its first prediction: its own reference
        return {"features": {"x": float(rng.normal(shift))}, "prediction": 0.0}

    config = ("models: {m: {task: regression, performance: {threshold: 9}, features: {x: {kind: numeric}}, "
              "drift: {max_versions: 1}}}")
    monitors, alerts, _ = _run(config, _predictions(6000, row, version=lambda i: "1" if i < 3000 else "2"))
    assert not _fired(alerts)
    assert list(monitors.data_monitors) == [("m", "2", None)]

    # A drift alert open on version 1 is resolved when version 1 is retired.
    def drifting(i: int, rng: np.random.Generator) -> dict[str, Any]:
        return {"features": {"x": float(rng.normal(0.0 if i < 2000 else 1.0))}, "prediction": 0.0}

    _, alerts, _ = _run(config, _predictions(4000, drifting, version=lambda i: "1" if i < 3000 else "2"))
    fired = _fired(alerts, model_version="1")
    assert sorted(a.detector for a in fired) == ["ks", "normal_score_glr"]  # the sequential test and the block's
    for alert in fired:
        retired = [a for a in alerts if a.status == "resolved" and a.episode_id == alert.episode_id]
        assert len(retired) == 1 and "no longer watched" in retired[0].message and _index(retired[0]) == 3000


def test_alerts_do_not_depend_on_batch_size_and_survive_pickling() -> None:
    predictions = _predictions(12_000, _stock())
    _, reference, ref_triggers = _run(STOCK, predictions, batch=500)
    for batch in (1, 37, 4096):
        if batch == 1:
            predictions_cut = predictions[:3000]  # one at a time is slow; compare a prefix
            _, alerts, _ = _run(STOCK, predictions_cut, batch=1)
            assert [a.alert_id for a in alerts] == [a.alert_id for a in reference if _index(a) < 3000]
            continue
        _, alerts, triggers = _run(STOCK, predictions, batch=batch)
        assert [a.alert_id for a in alerts] == [a.alert_id for a in reference]
        assert [t.trigger_id for t in triggers] == [t.trigger_id for t in ref_triggers]
    # Pickled half-way (as a checkpoint is) and restored: the second half alerts exactly the same.
    monitors = MonitorSet(parse_monitor_config(STOCK), build_detector)
    first = monitors.observe_predictions(predictions[:6000]).alerts
    restored: MonitorSet = pickle.loads(pickle.dumps(monitors))
    second = restored.observe_predictions(predictions[6000:]).alerts
    assert [a.alert_id for a in first + second] == [a.alert_id for a in reference]


def test_segments_get_their_own_data_monitors_and_do_not_trigger_retrains() -> None:
    def row(i: int, rng: np.random.Generator) -> dict[str, Any]:
        snr = rng.normal(20, 3) - (8 if i >= 4000 and i % 2 else 0)  # only the odd (en-IN) segment degrades
        return {"features": {"snr": float(snr)}, "prediction": "yes"}

    config = ("models: {m: {task: classification, performance: {threshold: 0.5}, segments: {max_segments: 5}, "
              "retrain: {cooldown_seconds: 1}, features: {snr: {kind: numeric}}}}")
    monitors, alerts, triggers = _run(config, _predictions(8000, row, segment=lambda i: "en-IN" if i % 2 else "en-GB"))
    assert set(monitors.data_monitors) == {("m", "1", None), ("m", "1", "en-IN"), ("m", "1", "en-GB")}
    by_segment = {a.segment for a in _fired(alerts)}
    assert by_segment == {None, "en-IN"}
    # The model-wide alerts (sequential, then block, a cooldown apart) trigger; the segment's do not.
    model_wide = [a.alert_id for a in _fired(alerts, segment=None)]
    assert [t.alert_ids for t in triggers] == [[a] for a in model_wide] and len(model_wide) == 2


def test_missing_and_non_numeric_values_are_skipped_not_fatal() -> None:
    def row(i: int, rng: np.random.Generator) -> dict[str, Any]:
        value: Any = float(rng.normal()) if i % 3 else ("n/a" if i % 2 else None)
        return {"features": {"x": value} if i % 5 else {}, "prediction": 1.0}

    config = "models: {m: {task: regression, performance: {threshold: 9}, features: {x: {kind: numeric, outliers: true}}}}"
    monitors, alerts, _ = _run(config, _predictions(3000, row))
    assert not alerts and monitors.data_monitors[("m", "1", None)].n_seen == 3000


def test_models_without_prediction_monitors_cost_nothing() -> None:
    config = "models: {m: {task: classification, performance: {threshold: 0.5}}}"
    monitors, alerts, _ = _run(config, _predictions(100, lambda i, rng: {"prediction": "a"}))
    assert not monitors.data_monitors and not alerts and monitors.n_predictions["m"] == 0


def test_a_stored_reference_catches_a_version_that_is_drifted_from_its_first_prediction(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With the first predictions as reference a version born drifted looks normal; a stored one sees it."""
    def scored(shift: float) -> Row:
        return lambda i, rng: {"features": {"x": float(rng.normal(shift))}, "prediction": 0.0}

    (tmp_path / "validation.jsonl").write_text(
        "\n".join(p.model_dump_json() for p in _predictions(3000, scored(0.0), seed=1)) + "\n")
    live = _predictions(3000, scored(0.8), seed=2)
    config = ("models: {m: {task: regression, performance: {threshold: 9}, features: {x: {kind: numeric}}, "
              "drift: {reference_file: validation.jsonl}}}")
    monitors = MonitorSet(parse_monitor_config(config, base_dir=tmp_path), build_detector)
    alerts = monitors.observe_predictions(live).alerts
    fired = _fired(alerts, monitor="feature_drift", feature="x")
    assert [a.detector for a in fired] == ["normal_score_glr", "ks"]
    assert _index(fired[0]) < 100, "the sequential test, from the first live predictions"
    assert _index(fired[1]) == 499, "the block test, judged on the first live block"
    assert all("stored reference of 3000 predictions" in a.message for a in fired)
    _, without, _ = _run(config.replace(", drift: {reference_file: validation.jsonl}", ""), live)
    assert not _fired(without)


def test_a_bad_reference_file_fails_at_start_up_naming_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from schemas.exceptions import ConfigError

    config = "models: {m: {task: regression, performance: {threshold: 9}, drift: {reference_file: ref.jsonl}}}"
    with pytest.raises(ConfigError, match=r"models\.m\.drift\.reference_file: cannot read"):
        parse_monitor_config(config, base_dir=tmp_path)
    (tmp_path / "ref.jsonl").write_text('{"prediction_id": "a"}\n')
    with pytest.raises(ConfigError, match=r"models\.m\.drift\.reference_file: .*ref\.jsonl line 1"):
        parse_monitor_config(config, base_dir=tmp_path)
