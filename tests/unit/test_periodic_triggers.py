"""Scheduled and volume-based retrain triggers (the fraud case): independent of drift, same whatever the batching."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from detectors.monitors.episodes import MonitorResult
from detectors.monitors.monitor_set import MonitorSet
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from schemas.events import LabelledExample, OutcomeEvent, PredictionEvent
from schemas.exceptions import ConfigError

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def stationary(n: int) -> list[LabelledExample]:
    out = []
    for i in range(n):
        t = T0 + timedelta(seconds=i)
        p = PredictionEvent(prediction_id=f"p{i}", model="fraud", model_version="1", event_time=t, prediction=0)
        out.append(LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id=f"p{i}", event_time=t, actual=0)))
    return out


def run(retrain: str, examples: list[LabelledExample], batch: int) -> MonitorResult:
    config = parse_monitor_config(
        "models: {fraud: {task: classification, performance: {window: 100, threshold: 0.5}, detector: null, "
        f"retrain: {retrain}}}}}"
    )
    monitors, total = MonitorSet(config, build_detector), MonitorResult()
    for i in range(0, len(examples), batch):
        total.extend(monitors.observe(examples[i : i + batch]))
    return total


@pytest.mark.parametrize("batch", [1, 7, 1000, 3500])
def test_volume_triggers_every_n_examples(batch: int) -> None:
    result = run("{every_examples: 1000}", stationary(3500), batch)
    assert result.alerts == []
    assert [(t.reason, t.event_time) for t in result.triggers] == [
        ("volume", T0 + timedelta(seconds=s)) for s in (999, 1999, 2999)
    ]
    # Each trains on the data since the previous one.
    assert [t.data_from for t in result.triggers] == [T0, T0 + timedelta(seconds=999), T0 + timedelta(seconds=1999)]
    reference = [t.trigger_id for t in run("{every_examples: 1000}", stationary(3500), 3500).triggers]
    assert [t.trigger_id for t in result.triggers] == reference and len(set(reference)) == 3


@pytest.mark.parametrize("batch", [1, 250, 3500])
def test_scheduled_triggers_every_n_event_seconds(batch: int) -> None:
    result = run("{every_seconds: 600}", stationary(3500), batch)
    assert [(t.reason, t.event_time) for t in result.triggers] == [
        ("schedule", T0 + timedelta(seconds=s)) for s in (600, 1200, 1800, 2400, 3000)
    ]


def test_disabled_retraining_sends_no_periodic_trigger() -> None:
    assert run("{enabled: false, every_examples: 10, every_seconds: 5}", stationary(100), 10).triggers == []


def test_a_bad_period_names_its_field() -> None:
    with pytest.raises(ConfigError) as info:
        run("{every_examples: 0}", stationary(1), 1)
    assert [f for f, _ in info.value.problems] == ["models.fraud.retrain.every_examples"]
