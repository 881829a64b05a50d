"""Monitor config: defaults, and errors that name the bad field by its dotted path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.config import load_monitor_config, parse_monitor_config
from schemas.exceptions import ConfigError, DriftlineError


def _fields(exc: ConfigError) -> list[str]:
    return [field for field, _ in exc.problems]


def test_defaults_per_task() -> None:
    cfg = parse_monitor_config(
        """
models:
  asr:
    task: classification
    performance: {threshold: 0.85}
  eta:
    task: regression
    performance: {threshold: 120, window: 50, min_samples: 20}
    detector: null
    retrain: {cooldown_seconds: 60}
"""
    )
    asr, eta = cfg.models["asr"], cfg.models["eta"]
    assert (asr.metric, asr.performance.window, asr.performance.min_samples) == ("accuracy", 500, None)
    assert asr.detector is not None and asr.detector_name == "bernoulli_glr"
    assert asr.retrain.enabled and asr.retrain.cooldown_seconds == 3600.0
    assert (eta.metric, eta.performance.window, eta.performance.min_samples) == ("mae", 50, 20)
    assert eta.detector is None
    assert eta.retrain.cooldown_seconds == 60


def test_empty_file_means_no_models() -> None:
    assert parse_monitor_config("").models == {}
    assert parse_monitor_config("models: {}").models == {}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("models: {asr: {task: classification, performance: {window: 9, threshold: 0.8}}}", "models.asr.performance.window"),
        ("models: {asr: {task: classification, performance: {windw: 100, threshold: 0.8}}}", "models.asr.performance.windw"),
        ("models: {asr: {task: classification, performance: {window: 100}}}", "models.asr.performance.threshold"),
        ("models: {asr: {task: classification, performance: {threshold: .nan}}}", "models.asr.performance.threshold"),
        ("models: {asr: {task: classification, performance: {threshold: 0.8, hysteresis: -1}}}", "models.asr.performance.hysteresis"),
        ("models: {asr: {task: classification, performance: {threshold: 0.8, min_samples: 0}}}", "models.asr.performance.min_samples"),
        ("models: {asr: {task: ranking, performance: {threshold: 0.8}}}", "models.asr.task"),
        ("models: {asr: {task: classification, performance: {threshold: 0.8}, retrain: {cooldown_seconds: -5}}}", "models.asr.retrain.cooldown_seconds"),
        ("models: {asr: {task: classification, performance: {threshold: 0.8}, detector: {name: adwin, parms: {}}}}", "models.asr.detector.parms"),
        ("models: {asr: {task: classification, performance: {threshold: 0.8}, colour: red}}", "models.asr.colour"),
        ("modles: {}", "modles"),
    ],
)
def test_error_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config(text, source="monitors.yaml")
    assert field in _fields(info.value)
    assert field in str(info.value)
    assert "monitors.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("task", "metric"),
    [("classification", "mae"), ("regression", "accuracy")],
)
def test_metric_must_fit_task(task: str, metric: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config(f"models: {{asr: {{task: {task}, performance: {{metric: {metric}, threshold: 0.5}}}}}}")
    assert _fields(info.value) == ["models.asr"]
    assert metric in str(info.value) and task in str(info.value)


def test_explicit_accuracy_threshold_above_one_is_refused_but_mae_is_not() -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config("models: {asr: {task: classification, performance: {metric: accuracy, threshold: 1.5}}}")
    assert _fields(info.value) == ["models.asr"]
    assert parse_monitor_config("models: {eta: {task: regression, performance: {threshold: 1.5}}}").models["eta"].metric == "mae"


def test_defaulted_accuracy_threshold_above_one_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config("models: {asr: {task: classification, performance: {threshold: 1.5}}}")
    assert _fields(info.value) == ["models.asr"]


def test_every_bad_field_is_reported_at_once() -> None:
    text = """
models:
  a: {task: classification, performance: {window: 1, threshold: 0.8}}
  b: {task: regression, performance: {threshold: -1}}
"""
    with pytest.raises(ConfigError) as info:
        parse_monitor_config(text)
    assert {"models.a.performance.window", "models.b.performance.threshold"} <= set(_fields(info.value))


def test_bad_model_name_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config("models: {'bad name': {task: classification, performance: {threshold: 0.8}}}")
    assert any(field.startswith("models.bad name") for field in _fields(info.value))


def test_yaml_syntax_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config("models: {asr: [unclosed", source="monitors.yaml")
    assert _fields(info.value) == ["<yaml>"]
    assert "\n  <yaml>:" in str(info.value)
    # One line per problem, so the start-up log stays readable.
    assert all("\n" not in msg for _, msg in info.value.problems)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string", "42"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config(text)
    assert _fields(info.value) == ["<root>"]


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_monitor_config(missing)
    assert _fields(info.value) == ["<file>"]
    assert str(missing) in str(info.value)
    assert isinstance(info.value, DriftlineError) and isinstance(info.value, ValueError)


def test_load_reports_the_path(tmp_path: Path) -> None:
    path = tmp_path / "monitors.yaml"
    path.write_text("models: {asr: {task: classification, performance: {window: 2, threshold: 0.8}}}\n")
    with pytest.raises(ConfigError) as info:
        load_monitor_config(path)
    assert info.value.source == str(path)
    assert _fields(info.value) == ["models.asr.performance.window"]
    path.write_text("models: {asr: {task: classification, performance: {window: 20, threshold: 0.8}}}\n")
    assert load_monitor_config(str(path)).models["asr"].performance.window == 20


def test_config_is_frozen() -> None:
    cfg = parse_monitor_config("models: {asr: {task: classification, performance: {threshold: 0.8}}}")
    with pytest.raises(ValidationError) as info:
        cfg.models["asr"].performance.window = 3  # type: ignore[misc]
    assert [(e["type"], e["loc"]) for e in info.value.errors()] == [("frozen_instance", ("window",))]


def test_unreachable_resolve_level_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config(
            "models: {asr: {task: classification, performance: {threshold: 0.99, hysteresis: 0.02}}}"
        )
    assert any("hysteresis" in f or f == "models.asr" for f in _fields(info.value))
