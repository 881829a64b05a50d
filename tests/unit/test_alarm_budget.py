"""One false-alarm budget per model: how it is split, that the detectors get their share, and one field for it."""

from __future__ import annotations

import pytest

from detectors.monitors.budget import AlarmBudget
from detectors.monitors.monitor_set import MonitorSet
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from schemas.exceptions import ConfigError


def _spec(body: str):  # type: ignore[no-untyped-def]
    return parse_monitor_config(f"models: {{m: {{task: classification, performance: {{threshold: 0.8}}, {body}}}}}")


@pytest.mark.parametrize(("body", "groups", "budget"), [
    ("", ("performance",), 100_000.0),
    ("detector: null", (), 100_000.0),
    ("detector: {name: adwin}", (), 100_000.0),  # river's detectors take no horizon: outside the budget
    ("segments: {}, detector: {params: {false_alarm_horizon: 50000}}", ("performance", "segment_performance"),
     50_000.0),
    ("prediction_drift: true, drift: {false_alarm_horizon: 30000}", ("performance", "data"), 30_000.0),
    ("segments: {}, features: {x: {kind: numeric, drift: false, trend: true}}, false_alarm_horizon: 200000",
     ("performance", "segment_performance", "data", "segment_data"), 200_000.0),
])
def test_the_budget_is_split_in_equal_shares_between_the_groups_that_page(body: str, groups: tuple, budget: float) -> None:
    spec = _spec(body).models["m"]
    split = AlarmBudget.of(spec)
    assert split.groups == groups and split.model_horizon == budget
    # Equal shares of the rate: the groups' false alarms per model event add up to the budget's.
    assert sum(1 / split.horizon(g) for g in groups) == pytest.approx(1 / budget if groups else 0)


def test_every_paging_detector_runs_at_its_share() -> None:
    config = _spec("segments: {max_segments: 3}, features: {x: {kind: numeric}}, false_alarm_horizon: 100000")
    monitors = MonitorSet(config, build_detector)
    assert monitors.monitors["m"].detector.false_alarm_horizon == 400_000  # type: ignore[union-attr]
    from datetime import datetime, timezone

    from schemas.events import LabelledExample, OutcomeEvent, PredictionEvent

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    p = PredictionEvent(prediction_id="a", model="m", model_version="1", event_time=t, prediction="x",
                        segment="north", features={"x": 1.0})
    monitors.observe_predictions([p])
    monitors.observe([LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id="a", event_time=t, actual="x"))])
    assert monitors.segment_monitors[("m", "north")].detector.false_alarm_horizon == 400_000  # type: ignore[union-attr]
    assert monitors.data_monitors[("m", "1", None)].false_alarm_horizon == 400_000
    assert monitors.data_monitors[("m", "1", "north")].false_alarm_horizon == 400_000


def test_two_different_budgets_for_one_model_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        _spec("detector: {params: {false_alarm_horizon: 50000}}, drift: {false_alarm_horizon: 100000}")
    assert "false_alarm_horizon: one budget per model" in str(info.value)
    # The same value in both places is one budget.
    assert _spec("detector: {params: {false_alarm_horizon: 50000}}, drift: {false_alarm_horizon: 50000}"
                 ).models["m"].alarm_budget == 50_000
