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
        Panel("Open alerts", (Target("sum(driftline_alerts_open)", instant=True),), kind="stat", width=4, height=4,
              thresholds=((None, "green"), (1, "red"))),
        Panel("Model health (open alerts per model)",
              (Target("max by (model) (driftline_alerts_open)", "{{model}}", instant=True),),
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
        Panel("Join pending", (Target("sum(driftline_join_pending)", "pending"),), width=8),
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
        Panel("Open alerts", (Target(f"sum(driftline_alerts_open{M})", instant=True),), kind="stat", width=8,
              height=9, extra=_health_mappings()),
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
