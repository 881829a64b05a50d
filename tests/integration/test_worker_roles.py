"""One worker of the ingest role and one of the monitor role, as two processes: the alerts of the backtest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from detectors.monitors.backtest import run_backtest
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.events import Alert
from streams.client import PredictionLogger
from streams.processes import metric_sum, metric_value
from streams.scenarios import SpeechScenario
from tests.integration.harness import alert_facts, read_to_end_when, running_workers
from tests.speech_monitors import SPEECH_MONITORS

pytestmark = pytest.mark.integration

ALERTS = TypeAdapter(Alert)


def test_an_ingest_process_and_a_monitor_process_give_the_backtest_alerts(kafka_bootstrap: str,
                                                                            tmp_path: Path) -> None:
    scenario = SpeechScenario(n_events=8000, change_at=4000, seed=11)
    events = list(scenario.events())
    config = MonitorConfig.model_validate(yaml.safe_load(SPEECH_MONITORS))
    reference = run_backtest([e.model_dump_json() for pair in events for e in pair], config, build_detector).alerts
    assert reference, "the scenario must alert, or the comparison proves nothing"
    with running_workers(kafka_bootstrap, tmp_path, SPEECH_MONITORS, 2, roles=("ingest", "monitor"),
                         partitions="2") as (ingest, monitor):
        logger = PredictionLogger(ingest.settings.confluent_config(), ingest.topics)
        for prediction, outcome in events:
            logger.log_prediction(prediction)
            logger.log_outcome(outcome)
        assert logger.flush(30) == 0
        done = monitor.wait_for(lambda m: metric_sum(m, "driftline_examples_total") >= len(events), 120,
                                "every example scored by the monitor process")
        read = ingest.metrics()
        alerts = [ALERTS.validate_json(m.value()) for m in read_to_end_when(
            kafka_bootstrap, ingest.topics.alerts, lambda ms: len(ms) >= metric_value(done, "driftline_alerts_total"))]
    assert alert_facts(alerts) == alert_facts(reference)
    assert [metric_value(s, "driftline_events_late_total", stage=stage) for s, stage in ((read, "ingest"), (done, "monitor"))] \
        == [0, 0], "no event reached an ordering stage after its watermark"
    # Each process did its own stage only.
    assert metric_sum(read, "driftline_events_read_total") == 2 * len(events)
    assert metric_sum(read, "driftline_examples_total") == 0
    assert metric_sum(done, "driftline_events_read_total") == 0
    assert metric_sum(done, "driftline_examples_total") == len(events)
