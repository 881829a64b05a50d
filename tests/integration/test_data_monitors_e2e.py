"""The prediction-side monitors through a real worker on the real broker give exactly the backtest's alerts."""

from __future__ import annotations

import heapq
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from detectors.monitors.backtest import run_backtest
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from schemas.events import Alert, OutcomeEvent, PredictionEvent
from streams.client import PredictionLogger
from streams.scenarios import RobotScenario, StockScenario
from streams.processes import metric_value
from tests.integration.harness import AlertFacts, alert_facts, read_to_end_when, running_worker

pytestmark = pytest.mark.integration

ALERTS = TypeAdapter(Alert)


def _arrival_time(event: PredictionEvent | OutcomeEvent) -> float:
    return event.event_time.timestamp()


def test_stock_and_robot_scenarios_alert_in_the_worker_as_in_the_backtest(kafka_bootstrap: str, tmp_path: Path) -> None:
    scenarios = [StockScenario(n_events=8000, change_at=4000), RobotScenario(n_events=8000, change_at=4000)]
    models = {}
    for scenario in scenarios:
        models.update(yaml.safe_load(scenario.MONITORS)["models"])
    config_yaml = yaml.safe_dump({"models": models})
    # Both models' traffic at once, in arrival order, as two live apps would send it.
    events = list(heapq.merge(*(s.stream() for s in scenarios), key=_arrival_time))
    lines = [e.model_dump_json() for e in events]
    expected = run_backtest(lines, parse_monitor_config(config_yaml), build_detector).alerts
    kinds = Counter((a.model, a.monitor) for a in expected if a.status == "fired")
    assert kinds[(StockScenario.MODEL, "outliers")] and kinds[(StockScenario.MODEL, "trend")], kinds
    assert kinds[(RobotScenario.MODEL, "new_category")], kinds

    with running_worker(kafka_bootstrap, tmp_path, config_yaml) as worker:
        logger = PredictionLogger(worker.settings.confluent_config(), worker.topics)
        for event in events:
            if isinstance(event, PredictionEvent):
                logger.log_prediction(event)
            else:
                logger.log_outcome(event)
        assert logger.flush(30) == 0
        watched = {m for m, spec in parse_monitor_config(config_yaml).models.items() if spec.watches_predictions}
        n_predictions = sum(isinstance(e, PredictionEvent) and e.model in watched for e in events)
        n_outcomes = sum(isinstance(e, OutcomeEvent) for e in events)
        # Alerts are counted in the step that scores their examples or predictions: once both counts are
        # complete, so is the alert count, and the topic is read to its end once that many are there.
        samples = worker.wait_for(lambda m: metric_value(m, "driftline_examples_total") >= n_outcomes
                                  and metric_value(m, "driftline_predictions_total") >= n_predictions, 120,
                                  "every example and every prediction scored")
        alerts = [ALERTS.validate_json(m.value()) for m in read_to_end_when(
            kafka_bootstrap, worker.topics.alerts, lambda ms: len(ms) >= metric_value(samples, "driftline_alerts_total"))]

    def by_model(items: list[Alert]) -> dict[tuple[str, bool], list[AlertFacts]]:
        # Performance monitors read labelled examples, data monitors read predictions: each family's alerts
        # come in a fixed order, but how the two interleave depends on how the worker's batches fell.
        return {(m, family): alert_facts([a for a in items if a.model == m and (a.monitor == "performance") == family])
                for m in models for family in (True, False)}

    def described(items: list[Alert]) -> str:
        return "\n".join(f"  {a.model} {a.monitor} {a.detector} {a.status} {a.event_time:%H:%M:%S} {a.statistic:.4g}"
                         for a in items)

    # Per model and family, the same alerts in the same order.
    assert by_model(alerts) == by_model(expected), (
        f"worker:\n{described(alerts)}\nbacktest:\n{described(expected)}")
    assert all(a.model_version == "1" for a in alerts)
    assert {stage: metric_value(samples, "driftline_events_late_total", stage=stage) for stage in ("ingest", "monitor")} \
        == {"ingest": 0, "monitor": 0}
