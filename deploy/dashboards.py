"""Driftline's Grafana dashboards as code: ``python deploy/dashboards.py`` writes deploy/grafana/dashboards/*.json.

A small generator rather than grafana-foundation-sdk: the SDK would be a runtime dependency of
the project (pyproject.toml) for two dashboards, and its PyPI releases carry epoch versions that
track Grafana releases; the JSON model below is the documented dashboard model for the
``SCHEMA_VERSION`` declared, and tests/unit/test_deploy.py checks it structurally and checks
that the checked-in files equal this module's output (``--check`` does the same from the shell).
Every PromQL expression lives here, so tests/integration/test_observability.py can evaluate each
one against a real Prometheus scraping a real worker.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).parent / "grafana" / "dashboards"
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x dashboard JSON model
DATASOURCE = {"type": "prometheus", "uid": "driftline-prometheus"}
WORKER_JOB = "driftline-worker"
RETRAINER_JOB = "driftline-retrainer"
RATE = "$__rate_interval"
# deploy/prometheus/rules/driftline.yml records it.
COVERAGE_15M = "driftline:model_label_coverage:ratio_rate15m"
# Detectors of the prediction-side monitors (detectors/monitors/data_monitor.py).  gaussian_glr is also a regressor's
# default performance detector, so on a regression model its count mixes trend and decay alerts.
SEQUENTIAL_DETECTORS = "normal_score_glr|share_glr|unseen_glr"
DATA_DETECTORS = f"ks|chi_squared|unseen_rate|{SEQUENTIAL_DETECTORS}|robust_spike|gaussian_glr|confidence"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"  # timeseries | stat | table
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Annotation:
    name: str
    expr: str
    color: str
    text: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    model_variable: bool = False
    annotations: tuple[Annotation, ...] = ()
    tags: tuple[str, ...] = ("driftline",)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, t in enumerate(panel.targets):
        target: dict[str, Any] = {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": t.expr,
                                  "legendFormat": t.legend or "__auto", "range": not t.instant, "instant": t.instant}
        targets.append(target)
    steps = [{"color": c, "value": v} for v, c in panel.thresholds]
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {},
        "targets": targets,
    }
    if panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "background", "graphMode": "none", "textMode": "auto"}
    elif panel.kind == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "none"}}
    out.update(panel.extra)
    return out


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model, with panels laid out left to right on Grafana's 24-column grid."""
    panels, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    annotations = [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                    "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                    "type": "dashboard"}]
    for a in dashboard.annotations:
        annotations.append({"name": a.name, "datasource": DATASOURCE, "enable": True, "hide": False,
                            "iconColor": a.color, "expr": a.expr, "step": "1m", "titleFormat": a.name,
                            "textFormat": a.text, "useValueForTime": False})
    variables = []
    if dashboard.model_variable:
        variables.append({
            "name": "model", "label": "Model", "type": "query", "datasource": DATASOURCE,
            "query": {"query": "label_values(driftline_examples_total, model)", "refId": "model"},
            "definition": "label_values(driftline_examples_total, model)",
            "refresh": 2, "sort": 1, "multi": False, "includeAll": False, "current": {}, "options": [],
        })
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "refresh": "10s",
        "annotations": {"list": annotations},
        "templating": {"list": variables},
        "links": [],
        "panels": panels,
    }


def _data_open(selector: str) -> str:
    """Open prediction-side alerts, 0 where no model watches predictions (so a sum with it still has a value)."""
    return f"(sum(driftline_data_alerts_open{selector}) or vector(0))"


def _statistic(detector: str) -> str:
    """One model's drift statistics of one detector.  Every worker declares every model's series (NaN where it
    does not own the model), and max ignores NaN unless all are."""
    return f'max by (monitor, feature) (driftline_drift_statistic{{model="$model", detector="{detector}"}})'


def _health_mappings() -> dict[str, Any]:
    return {"fieldConfig": {"defaults": {"unit": "short", "mappings": [
        {"type": "value", "options": {"0": {"text": "healthy", "color": "green"}}},
        {"type": "range", "options": {"from": 1, "to": 1e9, "result": {"text": "ALERT", "color": "red"}}},
    ], "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]}},
        "overrides": []}}


OVERVIEW = Dashboard(
    uid="driftline-overview",
    title="Driftline / Overview",
    description="Every monitored model at a glance, and the health of the pipeline that watches them.",
    panels=(
        Panel("Workers up", (Target(f'sum(up{{job="{WORKER_JOB}"}})', instant=True),), kind="stat", width=4,
              height=4, thresholds=((None, "red"), (1, "green"))),
        Panel("Open alerts", (Target(f"sum(driftline_alerts_open) + {_data_open('')}", instant=True),), kind="stat",
              width=4, height=4, thresholds=((None, "green"), (1, "red")),
              description="Performance and prediction-side (drift, new category, outlier, trend, estimate) alerts."),
        Panel("Model health (open alerts per model)",
              (Target("max by (model) (driftline_alerts_open) + on (model) "
                      "(sum by (model) (driftline_data_alerts_open) or max by (model) (driftline_alerts_open) * 0)",
                      "{{model}}", instant=True),),
              kind="stat", width=16, height=4, extra=_health_mappings()),
        Panel("Performance vs threshold, all models",
              (Target("driftline_model_performance", "{{model}} {{metric}}"),
               Target("driftline_model_performance_threshold", "{{model}} threshold")),
              width=12, description="Rolling accuracy (higher is better) or MAE (lower is better) per model."),
        Panel("Alerts published", (Target(f"sum by (model, status) (increase(driftline_alerts_total[{RATE}]))",
                                          "{{model}} {{status}}"),), width=12),
        Panel("Throughput: events read and joined",
              (Target(f"sum by (source) (rate(driftline_events_read_total[{RATE}]))", "read {{source}}"),
               Target(f"sum by (source) (rate(driftline_events_processed_total[{RATE}]))", "joined {{source}}")),
              unit="ops", width=12),
        Panel("Labelled examples scored per model",
              (Target(f"sum by (model) (rate(driftline_examples_total[{RATE}]))", "{{model}}"),), unit="ops",
              width=12),
        Panel("Dead letters by reason",
              (Target(f"sum by (source, reason) (rate(driftline_events_dead_lettered_total[{RATE}]))",
                      "{{source}} {{reason}}"),), unit="ops", width=8),
        Panel("Expired (join partner never came)",
              (Target(f"sum by (source) (rate(driftline_events_expired_total[{RATE}]))", "{{source}}"),),
              unit="ops", width=8),
        Panel("Join pending",
              (Target("sum(driftline_join_pending)", "pending"),
               Target(f"sum(increase(driftline_join_restored_total[{RATE}]))", "restored from the changelog")),
              width=8, description="Events waiting for their join partner. Restored: waiting events a worker "
              "read back from the join's changelog when it took their partition over (after a restart or a "
              "rebalance)."),
        Panel("Batch latency p50 / p99",
              (Target(f"histogram_quantile(0.5, sum by (le, stage) (rate(driftline_batch_seconds_bucket[{RATE}])))",
                      "p50 {{stage}}"),
               Target(f"histogram_quantile(0.99, sum by (le, stage) (rate(driftline_batch_seconds_bucket[{RATE}])))",
                      "p99 {{stage}}")), unit="s", width=8),
        Panel("Consumer lag", (Target("sum by (source) (driftline_consumer_lag_messages)", "{{source}}"),),
              width=8, description="Updated per batch from the fetched high-water marks."),
        Panel("Label coverage (predictions joined / read, 5m)",
              (Target("driftline:label_coverage:ratio_rate5m", "coverage"),), unit="percentunit", width=8),
        Panel("Dead-letter ratio (5m)", (Target("driftline:dead_letter:ratio_rate5m", "{{source}}"),),
              unit="percentunit", width=8, thresholds=((None, "green"), (0.01, "red"))),
        Panel("Alert pipeline latency p95 (1h)",
              (Target("histogram_quantile(0.95, sum by (le, model) "
                      "(increase(driftline_alert_latency_seconds_bucket[1h])))", "{{model}}"),),
              unit="s", width=8, description="From the Kafka timestamp of the batch that raised it to its send."),
        Panel("Retrain triggers (1h)",
              (Target("sum by (model, reason) (increase(driftline_retrain_triggers_total[1h]))",
                      "{{model}} {{reason}}"),), width=8),
        Panel("Current model versions (retrainer)",
              (Target("max by (model, version) (driftline_model_version_info) == 1", "{{model}} v{{version}}",
                      instant=True),), kind="table", width=8),
        Panel("Challengers (retrainer, 1h)",
              (Target("sum by (model, outcome) (increase(driftline_challengers_total[1h]))",
                      "{{model}} {{outcome}}"),), width=8),
        Panel("Prediction-side alerts open",
              (Target("sum by (model, monitor) (driftline_data_alerts_open)", "{{model}} {{monitor}}", instant=True),),
              kind="table", width=6, description="Over every watched version and segment of each model."),
        Panel("Predictions watched per model",
              (Target(f"sum by (model) (rate(driftline_predictions_total[{RATE}]))", "{{model}}"),), unit="ops",
              width=6),
        Panel("Label coverage per model (15m)",
              (Target(COVERAGE_15M, "{{model}}"),), unit="percentunit", width=6,
              description="Labelled examples scored / predictions watched, over every worker; a collapse means "
                          "outcomes stopped arriving (DriftlineLabelCoverageCollapsed)."),
        Panel("Estimated accuracy per model",
              (Target("max by (model) (driftline_estimated_accuracy)", "{{model}}"),), unit="percentunit", width=6,
              description="The current model version's label-free accuracy estimate, from calibrated confidences."),
    ),
)

M = '{model="$model"}'
PER_MODEL = Dashboard(
    uid="driftline-model",
    title="Driftline / Model",
    description="One model: performance against its threshold, alerts, labels, retrains and versions.",
    model_variable=True,
    annotations=(
        Annotation("Alert fired", f'sum(increase(driftline_alerts_total{{model="$model", status="fired"}}[5m])) > 0',
                   "red", "a monitor fired"),
        Annotation("Challenger promoted",
                   f'sum(increase(driftline_challengers_total{{model="$model", outcome="promoted"}}[5m])) > 0',
                   "green", "a new version was promoted"),
    ),
    panels=(
        Panel("Performance vs threshold",
              (Target(f"driftline_model_performance{M}", "{{metric}}"),
               Target(f"driftline_model_performance_threshold{M}", "threshold")), width=16, height=9),
        Panel("Open alerts", (Target(f"sum(driftline_alerts_open{M}) + {_data_open(M)}", instant=True),),
              kind="stat", width=8, height=9, extra=_health_mappings(),
              description="Performance and prediction-side alerts fired and not yet resolved."),
        Panel("Alerts by detector and status",
              (Target(f"sum by (detector, status) (increase(driftline_alerts_total{M}[{RATE}]))",
                      "{{detector}} {{status}}"),), width=12),
        Panel("Labelled examples scored", (Target(f"sum(rate(driftline_examples_total{M}[{RATE}]))", "examples"),),
              unit="ops", width=12),
        Panel("Label delay p50 / p95 (event time)",
              (Target(f"histogram_quantile(0.5, sum by (le) (rate(driftline_label_delay_seconds_bucket{M}[{RATE}])))",
                      "p50"),
               Target(f"histogram_quantile(0.95, sum by (le) (rate(driftline_label_delay_seconds_bucket{M}[{RATE}])))",
                      "p95")), unit="s", width=8),
        Panel("Retrain triggers (1h)",
              (Target(f"sum by (reason) (increase(driftline_retrain_triggers_total{M}[1h]))", "{{reason}}"),),
              width=8),
        Panel("Alert pipeline latency p95 (1h)",
              (Target(f"histogram_quantile(0.95, sum by (le) (increase(driftline_alert_latency_seconds_bucket{M}[1h])))",
                      "p95"),), unit="s", width=8),
        Panel("Model version in use (retrainer)",
              (Target(f"max by (version) (driftline_model_version_info{M}) == 1", "v{{version}}", instant=True),),
              kind="table", width=8),
        Panel("Challengers promoted / rejected (retrainer)",
              (Target(f"sum by (outcome) (increase(driftline_challengers_total{M}[{RATE}]))", "{{outcome}}"),),
              width=8),
        Panel("Retrainer: examples learned and triggers handled",
              (Target(f"sum(rate(driftline_retrainer_examples_total{M}[{RATE}]))", "examples learned"),
               Target(f"sum(increase(driftline_retrain_triggers_handled_total{M}[1h]))", "triggers handled (1h)")),
              width=8),
        Panel("Estimated vs measured accuracy",
              (Target(f"max(driftline_estimated_accuracy{M})", "estimated (calibrated)"),
               Target('driftline_model_performance{model="$model", metric="accuracy"}', "measured (labelled)"),
               Target(f"max(driftline_estimated_accuracy_threshold{M})", "estimate threshold"),
               Target(f"max(driftline_estimate_calibrated{M})", "calibrated (1) or raw scores (0)")),
              unit="percentunit", width=10, height=9,
              description="The estimate answers while outcomes are late, from scores calibrated on the version's "
                          "labelled reference; a lasting gap once labels are there means the calibration no longer "
                          "holds (trust the measured one)."),
        Panel("Label-free estimates vs realized, by metric",
              (Target('max by (metric) (driftline_estimated_performance{model="$model"})', "estimated {{metric}}"),
               Target('max by (metric) (driftline_realized_performance{model="$model"})', "realized {{metric}}"),
               Target('max by (metric) (driftline_estimated_performance_threshold{model="$model"})',
                      "threshold {{metric}}")),
              unit="percentunit", width=10, height=9,
              description="Each estimate (accuracy; precision, recall, f1 and roc_auc of the positive class) over "
                          "the current version's last window of predictions, and the same metric over its last "
                          "window of labelled examples once they come: the estimate confirmed, or not."),
        Panel("Label coverage",
              (Target(f"{COVERAGE_15M}{M}", "15m, every worker"),
               Target(f"driftline_label_coverage{M}", "since start, {{instance}}")),
              unit="percentunit", width=10, height=9,
              description="Labelled examples scored / predictions watched.  The 15m rate ratio is the signal; the "
                          "cumulative one reacts slowly.  Near 0 with predictions flowing: outcomes stopped arriving."),
        Panel("Drift reference filled",
              (Target(f"max(driftline_drift_reference_filled_ratio{M})", instant=True),), kind="stat",
              unit="percentunit", width=4, height=9, thresholds=((None, "orange"), (1, "green")),
              description="Of the current version's reference window: a new version fills a fresh one before its "
                          "drift tests judge anything."),
        Panel("Feature drift: KS distance to the reference",
              (Target(_statistic("ks"), "{{monitor}} {{feature}}"),),
              width=8, description="Numeric features (and a regressor's predictions): 0 same distribution, 1 disjoint. "
                                   "Empty until the current version's reference window is full."),
        Panel("Feature drift: chi-squared statistic",
              (Target(_statistic("chi_squared"), "{{monitor}} {{feature}}"),),
              width=8, description="Categorical features (and a classifier's predicted classes), last block against "
                                   "the reference."),
        Panel("Unseen-category rate",
              (Target(_statistic("unseen_rate"), "{{feature}}"),),
              unit="percentunit", width=8,
              description="Share of the last block whose category (or predicted class, empty feature) the reference "
                          "never had: new shapes, new classes."),
        Panel("Sequential drift tests: evidence against the reference",
              (Target(f'max by (monitor, feature, detector) (driftline_drift_statistic{{model="$model", '
                      f'detector=~"{SEQUENTIAL_DETECTORS}"}})', "{{detector}} {{monitor}} {{feature}}"),),
              width=8, thresholds=((None, "green"), (1, "red")),
              description="Each sequential test's GLR statistic as a share of its alarm threshold, after the last "
                          "batch: 1 alarms.  normal_score_glr: a number's position in the reference; share_glr: "
                          "a category's (or class's) share; unseen_glr: categories the reference never had."),
        Panel("Prediction-side alerts open, by monitor",
              (Target(f"sum by (monitor) (driftline_data_alerts_open{M})", "{{monitor}}"),), width=8,
              description="Over every watched version and segment; the alerts topic names the version and feature."),
        Panel("Spikes and prediction-side alerts fired (1h)",
              (Target(f'sum by (detector) (increase(driftline_alerts_total{{model="$model", status="fired", '
                      f'detector=~"{DATA_DETECTORS}"}}[1h]))', "{{detector}}"),), width=8,
              description="robust_spike: outliers; gaussian_glr: trend changes (a regressor's decay detector too); "
                          "ks, chi_squared: drift (block tests); normal_score_glr, share_glr: drift (sequential "
                          "tests); unseen_rate, unseen_glr: new categories; confidence: estimated accuracy."),
        Panel("Predictions watched vs labelled examples scored",
              (Target(f"sum(rate(driftline_predictions_total{M}[{RATE}]))", "predictions watched"),
               Target(f"sum(rate(driftline_examples_total{M}[{RATE}]))", "labelled examples")), unit="ops", width=8),
    ),
)

DASHBOARDS = (OVERVIEW, PER_MODEL)


def dashboard_files() -> dict[str, str]:
    """File name to JSON text, exactly as checked in."""
    return {f"{d.uid}.json": json.dumps(render(d), indent=2, sort_keys=True) + "\n" for d in DASHBOARDS}


def all_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every target and annotation, template variables left in."""
    out = []
    for d in DASHBOARDS:
        for p in d.panels:
            out += [(f"{d.uid} / {p.title}", t.expr) for t in p.targets]
        out += [(f"{d.uid} / annotation {a.name}", a.expr) for a in d.annotations]
    return out


def stale_files(out_dir: Path = OUT_DIR) -> list[str]:
    """Checked-in dashboard files that differ from (or are missing from) this module's output."""
    return [name for name, text in dashboard_files().items()
            if not (out_dir / name).exists() or (out_dir / name).read_text() != text]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_files()
        if stale:
            print("stale dashboards: " + ", ".join(stale) + " (run `python deploy/dashboards.py`)", file=sys.stderr)
            return 1
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in dashboard_files().items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
