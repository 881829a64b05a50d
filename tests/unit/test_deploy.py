"""The deployment files: generated dashboards are fresh and structurally valid, rules and compose parse with real tools."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules"


def _load_dashboards_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("driftline_deploy_dashboards", DEPLOY / "dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dashboards = _load_dashboards_module()
PANEL_TYPES = {"timeseries", "stat", "table", "gauge", "bargauge", "heatmap", "text", "row", "state-timeline"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: run scripts/ensure-tools.sh (make test does)")
    return path


def _provisioned_datasource_uid() -> str:
    doc = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


def test_checked_in_dashboards_equal_the_generator_output() -> None:
    assert dashboards.stale_files() == [], "run `python deploy/dashboards.py` and commit the JSON"
    on_disk = {p.name for p in (DEPLOY / "grafana/dashboards").glob("*.json")}
    assert on_disk == set(dashboards.dashboard_files()), "a dashboard file the generator does not make"


def test_staleness_check_notices_a_hand_edit(tmp_path: Path) -> None:
    for name, text in dashboards.dashboard_files().items():
        (tmp_path / name).write_text(text)
    assert dashboards.stale_files(tmp_path) == []
    first = sorted(dashboards.dashboard_files())[0]
    (tmp_path / first).write_text((tmp_path / first).read_text().replace('"refresh": "10s"', '"refresh": "5s"'))
    assert dashboards.stale_files(tmp_path) == [first]


@pytest.mark.parametrize("name", sorted(dashboards.dashboard_files()))
def test_dashboard_json_is_valid_for_its_schema_version(name: str) -> None:
    board = json.loads((DEPLOY / "grafana/dashboards" / name).read_text())
    uid = _provisioned_datasource_uid()
    # schemaVersion 39 (Grafana 10.4/11): panels at the top level with gridPos, targets with refId, templating.list.
    assert board["schemaVersion"] == 39
    assert board["uid"] and len(board["uid"]) <= 40 and board["title"]
    assert isinstance(board["templating"]["list"], list) and isinstance(board["annotations"]["list"], list)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    for var in variables.values():
        assert var["type"] == "query" and var["datasource"]["uid"] == uid
        assert var["query"]["query"].startswith("label_values(")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y"))
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == uid
            _check_variables(target["expr"], variables)
    for annotation in board["annotations"]["list"][1:]:
        assert annotation["datasource"]["uid"] == uid and annotation["expr"].strip()
        _check_variables(annotation["expr"], variables)


def _check_variables(expr: str, variables: dict) -> None:  # type: ignore[type-arg]
    for var in re.findall(r"\$(\w+)", expr):
        assert var.startswith("__") or var in variables, f"${var} in {expr!r} is no templating variable"


def test_per_model_dashboard_is_templated_by_model() -> None:
    board = json.loads((DEPLOY / "grafana/dashboards/driftline-model.json").read_text())
    assert [v["name"] for v in board["templating"]["list"]] == ["model"]
    assert all('model="$model"' in t["expr"] for p in board["panels"] for t in p["targets"])


def test_dashboard_promql_parses_with_promtool(tmp_path: Path) -> None:
    """Each dashboard expression, variables substituted, as a recording rule: promtool parses every one."""
    rules = [{"record": f"dashboard:expr_{i}", "expr": _substitute(expr)}
             for i, (_, expr) in enumerate(dashboards.all_expressions())]
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _substitute(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$model", "speech-asr")


def test_alert_and_recording_rules_pass_promtool() -> None:
    files = sorted(RULES.glob("*.yml"))
    assert files
    result = subprocess.run([_tool("promtool"), "check", "rules", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    names = {r.get("alert") for f in files for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]}
    assert {"DriftlineModelAlertOpen", "DriftlineDeadLetterSpike", "DriftlineConsumptionStalled",
            "DriftlineWorkerDown", "DriftlineWorkerAbsent", "DriftlineDataAlertOpen",
            "DriftlineLabelCoverageCollapsed", "DriftlineNoProgressWithLag"} <= names


def _rules() -> list[dict]:  # type: ignore[type-arg]
    return [r for f in sorted(RULES.glob("*.yml")) for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


# Metric names in PromQL: ours and `up` (the same pattern as tests/integration/test_observability.py).
_SELECTOR = re.compile(r'(?<![\w":-])(up|driftline[a-z0-9_:]*)(?![\w:-])')
PREDICTION_SIDE_METRICS = {
    "driftline_predictions_total", "driftline_drift_statistic", "driftline_estimated_accuracy",
    "driftline_estimated_accuracy_threshold", "driftline_label_coverage", "driftline_data_alerts_open",
    "driftline_drift_reference_filled_ratio", "driftline_estimated_performance", "driftline_realized_performance",
    "driftline_estimated_performance_threshold", "driftline_estimate_calibrated",
}


def _exported_names() -> set[str]:
    """Sample names the worker and the retrainer export (every series declared, so every name is there)."""
    from prometheus_client.metrics_core import Metric

    from schemas.config import parse_monitor_config
    from streams.metrics import WorkerMetrics
    from streams.retrainer_app import RetrainerMetrics

    worker = WorkerMetrics()
    worker.declare({"m": ("accuracy", ["threshold"])}, ["malformed"])
    worker.declare_predictions(parse_monitor_config(
        "models: {m: {task: classification, performance: {threshold: 0.8}, features: {x: {kind: numeric}},"
        " estimated_performance: {threshold: 0.7}}}"))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    families: list[Metric] = [*worker.registry.collect(), *RetrainerMetrics().registry.collect()]
    return {f.name + suffix for f in families for suffix in suffixes[f.type]}


def test_every_metric_the_dashboards_and_rules_name_is_exported_or_recorded() -> None:
    exported = _exported_names() | {"up"} | {r["record"] for r in _rules() if "record" in r}
    exprs = [(where, e) for where, e in dashboards.all_expressions()] + [
        (r.get("alert") or r["record"], r["expr"]) for r in _rules()]
    unknown = [(where, name) for where, e in exprs for name in _SELECTOR.findall(e) if name not in exported]
    assert not unknown, unknown
    assert PREDICTION_SIDE_METRICS <= exported


def test_compose_monitor_config_is_valid_and_feeds_the_prediction_side_panels() -> None:
    from schemas.config import load_monitor_config

    config = load_monitor_config(DEPLOY / "monitors.yaml")
    assert any(spec.watches_predictions and spec.estimated_performance for spec in config.models.values())


def test_the_model_dashboard_shows_every_prediction_side_metric() -> None:
    named = {name for where, e in dashboards.all_expressions() if where.startswith("driftline-model /")
             for name in _SELECTOR.findall(e)}
    assert PREDICTION_SIDE_METRICS <= named
    assert "driftline:model_label_coverage:ratio_rate15m" in named
    titles = {p.title for p in dashboards.PER_MODEL.panels}
    assert {"Estimated vs measured accuracy", "Label coverage", "Feature drift: KS distance to the reference",
            "Unseen-category rate", "Spikes and prediction-side alerts fired (1h)"} <= titles


PREDICTION_RULE_TESTS = """
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # fully labelled, on two workers; outcomes stop after a day
      - series: 'driftline_predictions_total{model="stops", instance="w1"}'
        values: '0+5x1600'
      - series: 'driftline_predictions_total{model="stops", instance="w2"}'
        values: '0+5x1600'
      - series: 'driftline_examples_total{model="stops", instance="w1"}'
        values: '0+10x1440 14400+0x160'
      # one prediction in ten is labelled, steadily: no alert
      - series: 'driftline_predictions_total{model="sampled", instance="w1"}'
        values: '0+10x1600'
      - series: 'driftline_examples_total{model="sampled", instance="w1"}'
        values: '0+1x1600'
      # idle for its first 10 hours (no ratio then, not NaN), then labelled, then the outcomes stop
      - series: 'driftline_predictions_total{model="idle", instance="w1"}'
        values: '0+0x600 0+10x1000'
      - series: 'driftline_examples_total{model="idle", instance="w1"}'
        values: '0+0x600 0+10x840 8400+0x160'
      # stops predicting and being labelled: silence, not an alert
      - series: 'driftline_predictions_total{model="quiet", instance="w1"}'
        values: '0+10x1440 14400+0x160'
      - series: 'driftline_examples_total{model="quiet", instance="w1"}'
        values: '0+10x1440 14400+0x160'
      - series: 'driftline_data_alerts_open{model="sampled", monitor="new_category", instance="w1"}'
        values: '0x10 1x10 0x10'  # open from minute 11 to 21
    promql_expr_test:
      - {expr: 'ALERTS{alertname="DriftlineDataAlertOpen"}', eval_time: 11m,
         exp_samples: [{labels: 'ALERTS{alertname="DriftlineDataAlertOpen", alertstate="pending", model="sampled", monitor="new_category", severity="warning"}', value: 1}]}
      - expr: driftline:model_label_coverage:ratio_rate15m
        eval_time: 1000m
        exp_samples:
          - {labels: 'driftline:model_label_coverage:ratio_rate15m{model="stops"}', value: 1}
          - {labels: 'driftline:model_label_coverage:ratio_rate15m{model="sampled"}', value: 0.1}
          - {labels: 'driftline:model_label_coverage:ratio_rate15m{model="idle"}', value: 1}
          - {labels: 'driftline:model_label_coverage:ratio_rate15m{model="quiet"}', value: 1}
    alert_rule_test:
      - {eval_time: 1440m, alertname: DriftlineLabelCoverageCollapsed, exp_alerts: []}
      - eval_time: 1500m
        alertname: DriftlineLabelCoverageCollapsed
        exp_alerts:
          - exp_labels: {severity: warning, model: stops}
          - exp_labels: {severity: warning, model: idle}
      - {eval_time: 11m, alertname: DriftlineDataAlertOpen, exp_alerts: []}  # pending: for 1m
      - eval_time: 15m
        alertname: DriftlineDataAlertOpen
        exp_alerts:
          - exp_labels: {severity: warning, model: sampled, monitor: new_category}
      - {eval_time: 25m, alertname: DriftlineDataAlertOpen, exp_alerts: []}
"""


def test_prediction_side_rules_behave_under_promtool_test_rules(tmp_path: Path) -> None:
    """Outcomes stopping fires the coverage alert; sampled labels, idle history and silent models do not."""
    _promtool_test_rules(tmp_path, PREDICTION_RULE_TESTS)


NO_PROGRESS_RULE_TESTS = """
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # stuck: messages wait, nothing is committed
      - series: 'driftline_unread_messages{instance="w1", stage="monitor"}'
        values: '250x40'
      - series: 'driftline_committed_messages_total{instance="w1", stage="monitor"}'
        values: '0x40'
      # busy but moving: lag, and commits every minute
      - series: 'driftline_unread_messages{instance="w2", stage="ingest"}'
        values: '900x40'
      - series: 'driftline_committed_messages_total{instance="w2", stage="ingest"}'
        values: '0+500x40'
      # idle: nothing to read
      - series: 'driftline_unread_messages{instance="w3", stage="ingest"}'
        values: '0x40'
      - series: 'driftline_committed_messages_total{instance="w3", stage="ingest"}'
        values: '0x40'
      # crash-looping: restarted every 4 minutes (a gap, the counter back at 0), never commits
      - series: 'driftline_unread_messages{instance="w4", stage="retrainer"}'
        values: '40 40 40 _ 40 40 40 _ 40 40 40 _ 40 40 40 _ 40 40 40 _ 40 40 40 _ 40 40 40 _ 40 40 40 _ 40 40 40 _ 40 40 40'
      - series: 'driftline_committed_messages_total{instance="w4", stage="retrainer"}'
        values: '0 0 0 _ 0 0 0 _ 0 0 0 _ 0 0 0 _ 0 0 0 _ 0 0 0 _ 0 0 0 _ 0 0 0 _ 0 0 0 _ 0 0 0'
      # recovers at minute 20: commits again
      - series: 'driftline_unread_messages{instance="w5", stage="monitor"}'
        values: '300x40'
      - series: 'driftline_committed_messages_total{instance="w5", stage="monitor"}'
        values: '0x20 0+100x20'
    promql_expr_test:
      - expr: 'ALERTS{alertname="DriftlineNoProgressWithLag"}'
        eval_time: 4m
        exp_samples:
          - {labels: 'ALERTS{alertname="DriftlineNoProgressWithLag", alertstate="pending", instance="w1", stage="monitor", severity="critical"}', value: 1}
          - {labels: 'ALERTS{alertname="DriftlineNoProgressWithLag", alertstate="pending", instance="w4", stage="retrainer", severity="critical"}', value: 1}
          - {labels: 'ALERTS{alertname="DriftlineNoProgressWithLag", alertstate="pending", instance="w5", stage="monitor", severity="critical"}', value: 1}
    alert_rule_test:
      - {eval_time: 4m, alertname: DriftlineNoProgressWithLag, exp_alerts: []}  # pending: for 5m
      - eval_time: 15m
        alertname: DriftlineNoProgressWithLag
        exp_alerts:
          - exp_labels: {severity: critical, instance: w1, stage: monitor}
          - exp_labels: {severity: critical, instance: w4, stage: retrainer}
          - exp_labels: {severity: critical, instance: w5, stage: monitor}
      - eval_time: 25m
        alertname: DriftlineNoProgressWithLag
        exp_alerts:
          - exp_labels: {severity: critical, instance: w1, stage: monitor}
          - exp_labels: {severity: critical, instance: w4, stage: retrainer}
"""


def test_no_progress_rule_fires_on_a_stuck_or_crash_looping_stage_only(tmp_path: Path) -> None:
    """Lag with no commit for minutes fires (across restarts too); a busy, an idle or a recovered stage does not."""
    _promtool_test_rules(tmp_path, NO_PROGRESS_RULE_TESTS)


# Every alert rule, made to fire and to resolve.  For a rule with `for:`, ALERTS shows it pending first: the
# expression is true while no alert is sent yet, so the wait is what is tested, not only the expression.
EVERY_RULE_TESTS = """
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # an open drift/decay alert from minute 5 to 15
      - series: 'driftline_alerts_open{model="asr", instance="w1"}'
        values: '0x4 1x10 0x10'
      # one retrain trigger at minute 11, handled a minute later
      - series: 'driftline_retrain_triggers_total{model="asr", reason="decay", instance="w1"}'
        values: '0x10 1x40'
      - series: 'driftline_retrain_triggers_handled_total{model="asr", instance="r1"}'
        values: '0x11 1x40'
      # a trigger a minute from minute 11 to 61: never handled ("lost"), handled at once ("ok"), handled from 51
      - series: 'driftline_retrain_triggers_total{model="lost", reason="drift", instance="w1"}'
        values: '0x10 1+1x50 51x60'
      - series: 'driftline_retrain_triggers_handled_total{model="lost", instance="r1"}'
        values: '0x122'
      - series: 'driftline_retrain_triggers_total{model="ok", reason="drift", instance="w1"}'
        values: '0x10 1+1x50 51x60'
      - series: 'driftline_retrain_triggers_handled_total{model="ok", instance="r1"}'
        values: '0x10 1+1x50 51x60'
      - series: 'driftline_retrain_triggers_total{model="late", reason="drift", instance="w1"}'
        values: '0x10 1+1x50 51x60'
      - series: 'driftline_retrain_triggers_handled_total{model="late", instance="r1"}'
        values: '0x50 1+1x71'
      # challengers of asr rejected at minutes 11, 31 and 51; those of "good" accepted every minute
      - series: 'driftline_challengers_total{model="asr", outcome="rejected", instance="r1"}'
        values: '0x10 1x20 2x20 3x400'
      - series: 'driftline_challengers_total{model="good", outcome="accepted", instance="r1"}'
        values: '0+1x450'
      # 5% of predictions dead-lettered from minute 11 to 31; 0.5% of outcomes throughout
      - series: 'driftline_events_read_total{source="prediction", instance="w1"}'
        values: '0+100x60'
      - series: 'driftline_events_dead_lettered_total{source="prediction", instance="w1"}'
        values: '0x10 0+5x20 100x30'
      - series: 'driftline_events_read_total{source="outcome", instance="w1"}'
        values: '0+100x60'
      - series: 'driftline_events_dead_lettered_total{source="outcome", instance="w1"}'
        values: '0+0.5x60'
      # w1: lag, and no batch from 600 s (minute 10) until 2400 s (minute 40); w2: idle, no lag, no batch
      - series: 'driftline_consumer_lag_messages{instance="w1", source="prediction"}'
        values: '50x60'
      - series: 'driftline_last_batch_timestamp_seconds{instance="w1"}'
        values: '0+60x10 600x29 2400+60x20'
      - series: 'driftline_consumer_lag_messages{instance="w2", source="prediction"}'
        values: '0x60'
      - series: 'driftline_last_batch_timestamp_seconds{instance="w2"}'
        values: '0x60'
      # a worker that cannot be scraped from minute 11 to 15
      - series: 'up{job="driftline-worker", instance="worker:6066"}'
        values: '1x10 0x5 1x20'
    promql_expr_test:
      - {expr: 'ALERTS{alertname="DriftlineModelAlertOpen"}', eval_time: 5m,
         exp_samples: [{labels: 'ALERTS{alertname="DriftlineModelAlertOpen", alertstate="pending", model="asr", severity="warning"}', value: 1}]}
      - {expr: 'ALERTS{alertname="DriftlineRetrainTriggerUnhandled"}', eval_time: 35m,
         exp_samples: [{labels: 'ALERTS{alertname="DriftlineRetrainTriggerUnhandled", alertstate="pending", model="lost", severity="warning"}', value: 1},
                       {labels: 'ALERTS{alertname="DriftlineRetrainTriggerUnhandled", alertstate="pending", model="late", severity="warning"}', value: 1}]}
      - {expr: 'ALERTS{alertname="DriftlineDeadLetterSpike"}', eval_time: 14m,
         exp_samples: [{labels: 'ALERTS{alertname="DriftlineDeadLetterSpike", alertstate="pending", source="prediction", severity="warning"}', value: 1}]}
      - {expr: 'ALERTS{alertname="DriftlineConsumptionStalled"}', eval_time: 18m,
         exp_samples: [{labels: 'ALERTS{alertname="DriftlineConsumptionStalled", alertstate="pending", instance="w1", source="prediction", severity="critical"}', value: 1}]}
      - {expr: 'ALERTS{alertname="DriftlineWorkerDown"}', eval_time: 11m,
         exp_samples: [{labels: 'ALERTS{alertname="DriftlineWorkerDown", alertstate="pending", instance="worker:6066", job="driftline-worker", severity="critical"}', value: 1}]}
    alert_rule_test:
      - {eval_time: 5m, alertname: DriftlineModelAlertOpen, exp_alerts: []}
      - {eval_time: 7m, alertname: DriftlineModelAlertOpen, exp_alerts: [{exp_labels: {severity: warning, model: asr}}]}
      - {eval_time: 16m, alertname: DriftlineModelAlertOpen, exp_alerts: []}

      - {eval_time: 10m, alertname: DriftlineRetrainTriggered, exp_alerts: []}
      - eval_time: 12m
        alertname: DriftlineRetrainTriggered
        exp_alerts:
          - exp_labels: {severity: info, model: asr, reason: decay}
          - exp_labels: {severity: info, model: lost, reason: drift}
          - exp_labels: {severity: info, model: ok, reason: drift}
          - exp_labels: {severity: info, model: late, reason: drift}
      - {eval_time: 30m, alertname: DriftlineRetrainTriggered, exp_alerts: [
          {exp_labels: {severity: info, model: lost, reason: drift}}, {exp_labels: {severity: info, model: ok, reason: drift}},
          {exp_labels: {severity: info, model: late, reason: drift}}]}
      - {eval_time: 100m, alertname: DriftlineRetrainTriggered, exp_alerts: []}

      - {eval_time: 35m, alertname: DriftlineRetrainTriggerUnhandled, exp_alerts: []}
      - eval_time: 45m
        alertname: DriftlineRetrainTriggerUnhandled
        exp_alerts:
          - exp_labels: {severity: warning, model: lost}
          - exp_labels: {severity: warning, model: late}
      - {eval_time: 60m, alertname: DriftlineRetrainTriggerUnhandled, exp_alerts: [{exp_labels: {severity: warning, model: lost}}]}
      - {eval_time: 120m, alertname: DriftlineRetrainTriggerUnhandled, exp_alerts: []}

      - {eval_time: 40m, alertname: DriftlineChallengersKeepLosing, exp_alerts: []}  # two rejections only
      - {eval_time: 60m, alertname: DriftlineChallengersKeepLosing, exp_alerts: [{exp_labels: {severity: warning, model: asr}}]}
      - {eval_time: 400m, alertname: DriftlineChallengersKeepLosing, exp_alerts: []}  # the first left the 6h window

      - {eval_time: 14m, alertname: DriftlineDeadLetterSpike, exp_alerts: []}
      - {eval_time: 20m, alertname: DriftlineDeadLetterSpike, exp_alerts: [{exp_labels: {severity: warning, source: prediction}}]}
      - {eval_time: 45m, alertname: DriftlineDeadLetterSpike, exp_alerts: []}

      - {eval_time: 18m, alertname: DriftlineConsumptionStalled, exp_alerts: []}
      - {eval_time: 25m, alertname: DriftlineConsumptionStalled,
         exp_alerts: [{exp_labels: {severity: critical, instance: w1, source: prediction}}]}
      - {eval_time: 50m, alertname: DriftlineConsumptionStalled, exp_alerts: []}

      - {eval_time: 11m, alertname: DriftlineWorkerDown, exp_alerts: []}
      - {eval_time: 13m, alertname: DriftlineWorkerDown,
         exp_alerts: [{exp_labels: {severity: critical, job: driftline-worker, instance: "worker:6066"}}]}
      - {eval_time: 20m, alertname: DriftlineWorkerDown, exp_alerts: []}

  # Alone, because any `up` series of the job, in any other test, keeps this rule silent.
  - interval: 1m
    input_series:
      # scraped until minute 10, unknown to Prometheus from minute 11 to 30 (gone after the 5m lookback)
      - series: 'up{job="driftline-worker", instance="worker:6066"}'
        values: '1x10 _x20 1x10'
    promql_expr_test:
      - {expr: 'ALERTS{alertname="DriftlineWorkerAbsent"}', eval_time: 18m,
         exp_samples: [{labels: 'ALERTS{alertname="DriftlineWorkerAbsent", alertstate="pending", job="driftline-worker", severity="critical"}', value: 1}]}
    alert_rule_test:
      - {eval_time: 18m, alertname: DriftlineWorkerAbsent, exp_alerts: []}
      - {eval_time: 25m, alertname: DriftlineWorkerAbsent, exp_alerts: [{exp_labels: {severity: critical, job: driftline-worker}}]}
      - {eval_time: 35m, alertname: DriftlineWorkerAbsent, exp_alerts: []}

  # Outcomes stop at minute 1440 and come back at minute 1542.
  - interval: 1m
    input_series:
      - series: 'driftline_predictions_total{model="returns", instance="w1"}'
        values: '0+10x1700'
      - series: 'driftline_examples_total{model="returns", instance="w1"}'
        values: '0+10x1440 14400x100 14410+10x158'
    promql_expr_test:
      - {expr: 'ALERTS{alertname="DriftlineLabelCoverageCollapsed"}', eval_time: 1455m,
         exp_samples: [{labels: 'ALERTS{alertname="DriftlineLabelCoverageCollapsed", alertstate="pending", model="returns", severity="warning"}', value: 1}]}
    alert_rule_test:
      - {eval_time: 1455m, alertname: DriftlineLabelCoverageCollapsed, exp_alerts: []}
      - {eval_time: 1500m, alertname: DriftlineLabelCoverageCollapsed, exp_alerts: [{exp_labels: {severity: warning, model: returns}}]}
      - {eval_time: 1600m, alertname: DriftlineLabelCoverageCollapsed, exp_alerts: []}
"""


def test_every_alert_rule_fires_and_resolves_under_promtool_test_rules(tmp_path: Path) -> None:
    _promtool_test_rules(tmp_path, EVERY_RULE_TESTS)


def test_the_rule_tests_cover_every_alert_firing_after_its_wait_and_resolving() -> None:
    """The cases above and the prediction-side and no-progress ones, read together: no alert rule is left out.

    For each rule some alert (one label set) is checked absent, then firing, then absent again, and a rule with
    `for:` is checked pending.
    """
    firing_at: dict[str, list[tuple[int, set[frozenset[tuple[str, str]]]]]] = {}
    pending: set[str] = set()
    for doc in (EVERY_RULE_TESTS, PREDICTION_RULE_TESTS, NO_PROGRESS_RULE_TESTS):
        for case in yaml.safe_load(doc)["tests"]:
            for check in case.get("alert_rule_test", []):
                minutes = int(str(check["eval_time"]).removesuffix("m"))
                alerts = {frozenset(a["exp_labels"].items()) for a in check["exp_alerts"]}
                firing_at.setdefault(check["alertname"], []).append((minutes, alerts))
            for check in case.get("promql_expr_test", []):
                if 'alertstate="pending"' in str(check["exp_samples"]):
                    pending.add(re.search(r'alertname="(\w+)"', check["expr"]).group(1))  # type: ignore[union-attr]
    for rule in (r for r in _rules() if "alert" in r):
        name, evaluations = rule["alert"], sorted(firing_at.get(rule["alert"], []), key=lambda e: e[0])
        shown_to_cycle = [
            alert for t, alerts in evaluations for alert in alerts
            if any(before < t and alert not in earlier for before, earlier in evaluations)
            and any(after > t and alert not in later for after, later in evaluations)]
        assert shown_to_cycle, f"{name} is never shown silent, then firing, then resolved"
        if "for" in rule:
            assert name in pending, f"{name} is never shown pending through its for: {rule['for']}"


def _promtool_test_rules(tmp_path: Path, tests_yaml: str) -> None:
    groups = [yaml.safe_load(f.read_text()) for f in sorted(RULES.glob("*.yml"))]
    for doc in groups:  # promtool compares rendered annotations too; the expressions are what is tested here
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    rule_files = []
    for i, doc in enumerate(groups):
        rule_files.append(str(tmp_path / f"rules_{i}.yml"))
        Path(rule_files[-1]).write_text(yaml.safe_dump(doc))
    tests = yaml.safe_load(tests_yaml)
    tests["rule_files"] = rule_files
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([_tool("promtool"), "test", "rules", str(tmp_path / "tests.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool_and_scrapes_the_jobs_the_rules_name() -> None:
    config = DEPLOY / "prometheus/prometheus.yml"
    result = subprocess.run([_tool("promtool"), "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {j["job_name"] for j in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs == {dashboards.WORKER_JOB, dashboards.RETRAINER_JOB}


def test_compose_file_parses_with_docker_compose_and_has_the_stack() -> None:
    run = [_tool("docker-compose"), "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]
    demo = subprocess.run([*run, "--profile", "demo", "config"], capture_output=True, text=True, cwd=ROOT)
    assert demo.returncode == 0, demo.stderr
    services = yaml.safe_load(demo.stdout)["services"]
    # docker-compose 1.29's `config` lists profiled services too; what `up` starts is what has no profile.
    assert {n for n, s in services.items() if not s.get("profiles")} == {
        "kafka", "topics", "worker", "retrainer", "prometheus", "grafana"}
    assert services["demo"]["profiles"] == ["demo"]

    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    listeners = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert listeners["PLAINTEXT_HOST"] == "localhost:9092" and listeners["PLAINTEXT"].startswith("kafka:")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith("1@kafka:")
    assert len(env["CLUSTER_ID"]) == 22  # 16 bytes, URL-safe base64 without padding

    assert services["topics"]["command"] == ["topics", "create"]
    assert services["worker"]["command"] == ["worker"] and services["retrainer"]["command"] == ["retrainer"]
    for name in ("worker", "retrainer", "demo"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["DRIFTLINE_KAFKA_BOOTSTRAP"] == "kafka:19092"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, port_variable in (("worker", "DRIFTLINE_WEB_PORT"), ("retrainer", "DRIFTLINE_RETRAINER_WEB_PORT")):
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{services[name]['environment'][port_variable]}/ready" in check, check

    targets = {t for j in yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())["scrape_configs"]
               for c in j["static_configs"] for t in c["targets"]}
    assert targets == {f"worker:{services['worker']['environment']['DRIFTLINE_WEB_PORT']}",
                       f"retrainer:{services['retrainer']['environment']['DRIFTLINE_RETRAINER_WEB_PORT']}"}
    volumes = [_volume(v) for name in ("grafana", "prometheus") for v in services[name]["volumes"]]
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards", "/etc/prometheus/rules"} <= {t for _, t in volumes}
    for source, target in volumes:
        assert (ROOT / source).exists(), (source, target)


def test_the_mlflow_profile_adds_a_tracking_server_and_points_the_retrainer_at_it() -> None:
    run = [_tool("docker-compose"), "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]
    plain = subprocess.run([*run, "config"], capture_output=True, text=True, cwd=ROOT,
                           env={k: v for k, v in os.environ.items() if k != "DRIFTLINE_REGISTRY"})
    assert plain.returncode == 0, plain.stderr
    assert yaml.safe_load(plain.stdout)["services"]["retrainer"]["environment"]["DRIFTLINE_REGISTRY"] == "file"
    chosen = subprocess.run([*run, "--profile", "mlflow", "config"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "DRIFTLINE_REGISTRY": "mlflow"})
    assert chosen.returncode == 0, chosen.stderr
    config = yaml.safe_load(chosen.stdout)
    mlflow, retrainer = config["services"]["mlflow"], config["services"]["retrainer"]
    assert mlflow["profiles"] == ["mlflow"] and mlflow["command"][:2] == ["mlflow", "server"]
    args = dict(a.removeprefix("--").split("=", 1) for a in mlflow["command"][2:])
    assert args["backend-store-uri"].startswith("sqlite:////mlflow/")
    assert args["artifacts-destination"].startswith("/mlflow/")
    assert ("mlflow-data", "/mlflow") in [_volume(v) for v in mlflow["volumes"]] and "mlflow-data" in config["volumes"]
    assert retrainer["environment"]["DRIFTLINE_REGISTRY"] == "mlflow"
    assert retrainer["environment"]["DRIFTLINE_MLFLOW_TRACKING_URI"] == f"http://mlflow:{args['port']}"
    assert "mlflow" in args["allowed-hosts"].split(",")


def _volume(volume: str | dict) -> tuple[str, str]:  # type: ignore[type-arg]
    """(source, target) of a short ("src:dst:ro") or long-syntax volume, as docker-compose versions print them."""
    if isinstance(volume, dict):
        return str(volume["source"]), str(volume["target"])
    source, target = volume.split(":")[:2]
    return source, target
