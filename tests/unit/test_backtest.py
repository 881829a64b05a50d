"""The offline backtest: same decisions as the worker's code, bad lines reported by number, a usable CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detectors.monitors.backtest import run_backtest
from detectors.monitors.monitor_set import MonitorSet
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from schemas.events import LabelledExample
from streams.cli import app
from streams.scenarios import SpeechScenario

CONFIG = """
models:
  speech-asr:
    task: classification
    performance: {window: 500, threshold: 0.85}
"""
SCENARIO = SpeechScenario(n_events=6000, change_at=3000, seed=3)


@pytest.fixture(scope="module")
def lines() -> list[str]:
    out = []
    for prediction, outcome in SCENARIO.events():
        out += [prediction.model_dump_json(), outcome.model_dump_json()]
    return out


def test_backtest_publishes_what_the_monitors_decide_on_the_joined_stream(lines: list[str]) -> None:
    config = parse_monitor_config(CONFIG)
    result = run_backtest(lines, config, build_detector)
    direct = MonitorSet(config, build_detector).observe(
        [LabelledExample(prediction=p, outcome=o) for p, o in SCENARIO.events()]
    )
    assert result.alerts, "the decay must alert"
    assert [a.alert_id for a in result.alerts] == [a.alert_id for a in direct.alerts]
    assert [t.trigger_id for t in result.triggers] == [t.trigger_id for t in direct.triggers]
    assert result.n_examples == SCENARIO.n_events and result.bad_lines == [] and result.n_expired == 0


@pytest.mark.parametrize("batch_size", [1, 37, 5000])
def test_backtest_does_not_depend_on_its_batch_size(lines: list[str], batch_size: int) -> None:
    config = parse_monitor_config(CONFIG)
    reference = [a.alert_id for a in run_backtest(lines, config, build_detector).alerts]
    assert [a.alert_id for a in run_backtest(lines, config, build_detector, batch_size=batch_size).alerts] == reference


def test_bad_lines_are_reported_with_their_numbers_and_skipped(lines: list[str]) -> None:
    first = json.loads(lines[0])
    bad = [
        "{not json",
        json.dumps({"hello": 1}),
        json.dumps({**first, "prediction_id": "nan", "confidence": float("nan")}),
        json.dumps({**first, "prediction_id": "naive", "event_time": "2026-11-01T00:00:00"}),
        "",  # blank lines are not events and not errors
    ]
    mixed = [bad[0], lines[0], bad[1], lines[1], bad[2], bad[3], bad[4], *lines[2:]]
    result = run_backtest(mixed, parse_monitor_config(CONFIG), build_detector)
    assert [(b.line_number, b.reason.split(":")[0]) for b in result.bad_lines] == [
        (1, "not_json"), (3, "schema"), (5, "non_finite"), (6, "schema"),
    ]
    clean = run_backtest(lines, parse_monitor_config(CONFIG), build_detector)
    assert [a.alert_id for a in result.alerts] == [a.alert_id for a in clean.alerts]


def test_cli_writes_alerts_and_a_png_report(lines: list[str], tmp_path: Path) -> None:
    events, config = tmp_path / "events.jsonl", tmp_path / "monitors.yaml"
    events.write_text("\n".join(["garbage", *lines]) + "\n")
    config.write_text(CONFIG)
    alerts, plot = tmp_path / "alerts.jsonl", tmp_path / "report.png"
    run = CliRunner().invoke(app, ["backtest", "--config", str(config), "--input", str(events),
                                   "--output", str(alerts), "--plot", str(plot)], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    assert "skipped line 1" in run.output and "Backtest summary" in run.output
    # Each fired alert is listed, with the monitor that raised it.
    assert "Fired alerts" in run.output and run.output.count("bernoulli_glr") >= 2
    written = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert {a["detector"] for a in written if a["status"] == "fired"} == {"threshold", "bernoulli_glr"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_cli_names_the_bad_config_field(tmp_path: Path) -> None:
    config = tmp_path / "monitors.yaml"
    config.write_text("models: {m: {task: classification, performance: {window: 3, threshold: 0.8}}}")
    events = tmp_path / "e.jsonl"
    events.write_text("")
    run = CliRunner().invoke(app, ["backtest", "--config", str(config), "--input", str(events)])
    assert run.exit_code != 0
    assert "models.m.performance.window" in str(run.exception) + run.output
