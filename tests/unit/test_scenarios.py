"""The use-case scenarios: deterministic, in a sane arrival order, the change visible in the data, and the
backtest of each raising the alerts its docstring promises after the change and none before it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from detectors.monitors.backtest import BacktestResult, run_backtest
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from schemas.events import Alert, OutcomeEvent, PredictionEvent
from streams.cli import app
from streams.exceptions import UnknownScenario
from streams.scenarios import (
    SCENARIOS,
    FraudScenario,
    RecommenderScenario,
    RobotScenario,
    SpeechAccentScenario,
    StockScenario,
    make_scenario,
)

SEED = 7


def split(events: list[PredictionEvent | OutcomeEvent]) -> tuple[list[PredictionEvent], list[OutcomeEvent]]:
    return ([e for e in events if isinstance(e, PredictionEvent)], [e for e in events if isinstance(e, OutcomeEvent)])


@cache
def small(name: str, seed: int = SEED) -> tuple[Any, list[PredictionEvent | OutcomeEvent]]:
    scenario = make_scenario(name, n_events=3000, seed=seed)
    return scenario, list(scenario.stream())


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_seed_same_events_other_seed_other_events(name: str) -> None:
    _, events = small(name)
    again = list(make_scenario(name, n_events=3000, seed=SEED).stream())
    assert [e.model_dump_json() for e in again] == [e.model_dump_json() for e in events]
    _, other = small(name, SEED + 1)
    assert [e.model_dump_json() for e in other] != [e.model_dump_json() for e in events]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_events_come_in_a_sane_arrival_order(name: str) -> None:
    scenario, events = small(name)
    seen: dict[str, PredictionEvent] = {}
    last_outcome = None
    for event in events:
        if isinstance(event, PredictionEvent):
            assert event.prediction_id not in seen
            assert not seen or event.event_time >= list(seen.values())[-1].event_time
            seen[event.prediction_id] = event
        else:
            # Every outcome follows its own prediction, and outcomes arrive in their event-time order.
            assert event.prediction_id in seen
            assert event.event_time >= seen[event.prediction_id].event_time
            assert last_outcome is None or event.event_time >= last_outcome
            last_outcome = event.event_time
    assert len(seen) == scenario.n_events
    assert {p.model for p in seen.values()} == {scenario.model if name == "speech" else scenario.MODEL}


def test_fraud_labels_arrive_late_or_never() -> None:
    scenario = FraudScenario(n_events=6000, change_at=3000)
    predictions, outcomes = split(list(scenario.stream()))
    at = {p.prediction_id: p.event_time for p in predictions}
    delays = np.array([(o.event_time - at[o.prediction_id]).total_seconds() for o in outcomes])
    assert 0.85 < len(outcomes) / len(predictions) < 0.95
    assert 600 < np.median(delays) < 1200 and delays.max() < 3600  # late, yet within the default join TTL
    # Late labels arrive after thousands of later predictions, not right behind their own.
    index = {e.prediction_id: i for i, e in enumerate(scenario.stream()) if isinstance(e, PredictionEvent)}
    first_outcome = next(i for i, e in enumerate(scenario.stream()) if isinstance(e, OutcomeEvent))
    assert first_outcome > 400 and min(index.values()) == 0


def test_speech_accent_decays_in_one_accent_only() -> None:
    scenario = SpeechAccentScenario(n_events=8000, change_at=4000)
    predictions, outcomes = split(list(scenario.stream()))
    truth = {o.prediction_id: o.actual for o in outcomes}

    def accuracy(accent: str, after: bool) -> float:
        mine = [p for i, p in enumerate(predictions) if p.segment == accent and (i >= scenario.change_at) == after]
        return float(np.mean([p.prediction == truth[p.prediction_id] for p in mine]))

    assert accuracy("en-IN", False) > 0.88 and accuracy("en-IN", True) < 0.66
    assert all(accuracy(a, True) > 0.88 for a in ("en-GB", "en-US", "en-AU"))
    snr_in = [float(p.features["snr_db"]) for p in predictions[scenario.change_at:] if p.segment == "en-IN"]
    assert np.mean(snr_in) < 14


def test_stock_trend_reverses_and_spikes_sit_where_announced() -> None:
    scenario = StockScenario()
    predictions, outcomes = split(list(scenario.stream()))
    r = np.array([float(p.features["return_1"]) for p in predictions])
    spikes = set(scenario.spike_at)
    calm = np.array([i not in spikes for i in range(len(r))])
    before, after = r[: scenario.change_at][calm[: scenario.change_at]], r[scenario.change_at:][calm[scenario.change_at:]]
    assert before.mean() > 0 > after.mean()
    assert sum(i < scenario.change_at for i in spikes) == 2
    for i in spikes:
        local = r[max(0, i - 500):i]
        scale = 1.4826 * np.median(np.abs(local - np.median(local)))
        assert abs(r[i] - np.median(local)) / scale > 15
    # The model keeps predicting the up-trend: its absolute error roughly doubles after the reversal.
    error = np.abs(np.array([float(p.prediction) for p in predictions]) - np.array([float(o.actual) for o in outcomes]))
    assert error[scenario.change_at:].mean() > 1.6 * error[: scenario.change_at].mean()


def test_robot_sees_a_new_shape_and_a_new_mix() -> None:
    scenario = RobotScenario()
    predictions, outcomes = split(list(scenario.stream()))
    change = scenario.change_at
    predicted = np.array([p.prediction for p in predictions])
    actual = {o.prediction_id: o.actual for o in outcomes}
    assert RobotScenario.UNKNOWN not in predicted[:change]
    assert 0.035 < np.mean(predicted[change:] == RobotScenario.UNKNOWN) < 0.065
    cones = [p for p in predictions if actual[p.prediction_id] == RobotScenario.NEW_SHAPE]
    assert cones and all(p.prediction == RobotScenario.UNKNOWN for p in cones)
    assert np.mean(predicted[:change] == "box") > np.mean(predicted[change:] == "box") + 0.1


def test_fraud_recall_and_confidence_fall_after_the_change() -> None:
    scenario = FraudScenario()
    predictions, outcomes = split(list(scenario.stream()))
    actual = {o.prediction_id: o.actual for o in outcomes}

    def recall(after: bool) -> float:
        frauds = [p for i, p in enumerate(predictions)
                  if actual.get(p.prediction_id) is True and (i >= scenario.change_at) == after]
        return float(np.mean([p.prediction is True for p in frauds]))

    confidence = np.array([p.confidence for p in predictions], dtype=float)
    assert recall(False) > 0.75 and recall(True) < 0.5
    assert confidence[: scenario.change_at].mean() > 0.95 and confidence[scenario.change_at:].mean() < 0.9
    assert 0.01 < np.mean([a is True for a in actual.values()]) < 0.03


def test_recommender_switches_version_then_its_scores_drift() -> None:
    scenario = RecommenderScenario()
    predictions, outcomes = split(list(scenario.stream()))
    versions = [p.model_version for p in predictions]
    assert set(versions[: scenario.version_at]) == {"1"} and set(versions[scenario.version_at:]) == {"2"}
    score = np.array([float(p.prediction) for p in predictions])
    clicks = np.array([o.actual for o in sorted(outcomes, key=lambda o: int(o.prediction_id.rsplit("-", 1)[1]))])
    assert ((0 <= score) & (score <= 1)).all() and set(clicks) == {0, 1}
    v2_before, v2_after = score[scenario.version_at:scenario.change_at], score[scenario.change_at:]
    assert v2_after.mean() - v2_before.mean() > 0.1
    # Calibrated before the change (mean score = click rate), over-scoring after it.
    assert abs(score[: scenario.change_at].mean() - clicks[: scenario.change_at].mean()) < 0.02
    assert score[scenario.change_at:].mean() - clicks[scenario.change_at:].mean() > 0.1


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_monitor_config_parses_and_names_its_model(name: str) -> None:
    cls = SCENARIOS[name]
    config = parse_monitor_config(cls.MONITORS)
    model = cls().model if name == "speech" else cls.MODEL
    assert list(config.models) == [model]
    assert cls.__doc__ and cls.EXPECTED_MONITORS


def test_make_scenario_scales_the_change_and_refuses_unknown_names() -> None:
    assert (make_scenario("speech", n_events=1001).change_at, make_scenario("fraud", n_events=1000).change_at) == (500, 500)
    recommender = make_scenario("recommender", n_events=1200)
    assert (recommender.version_at, recommender.change_at) == (400, 800)
    with pytest.raises(UnknownScenario) as info:
        make_scenario("weather")
    assert info.value.choices == list(SCENARIOS)
    with pytest.raises(ValueError, match="change_at"):
        StockScenario(n_events=100, change_at=100)


def test_cli_writes_a_scenario_and_its_monitors(tmp_path: Path) -> None:
    out, config = tmp_path / "robot.jsonl", tmp_path / "robot.yaml"
    done = CliRunner().invoke(app, ["scenario", "robot", "--output", str(out), "--events", "400", "--seed", "3",
                                    "--config-output", str(config)])
    assert done.exit_code == 0, done.output
    lines = out.read_text().splitlines()
    assert len(lines) == 800
    events = [json.loads(line) for line in lines]
    assert sum("prediction" in e for e in events) == 400 and sum("actual" in e for e in events) == 400
    for line in lines:
        (PredictionEvent if '"prediction":' in line else OutcomeEvent).model_validate_json(line)
    assert parse_monitor_config(config.read_text()).models.keys() == {"packaging-vision"}
    assert [e.model_dump_json() for e in make_scenario("robot", 400, seed=3).stream()] == lines


def test_cli_refuses_an_unknown_scenario_listing_the_choices(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["scenario", "weather", "--output", str(tmp_path / "x.jsonl")])
    assert done.exit_code == 2
    assert "speech-accent" in done.output and "recommender" in done.output
    done = CliRunner().invoke(app, ["demo", "--scenario", "weather"])
    assert done.exit_code == 2 and "recommender" in done.output


# ------------------------------------------------------------------------------------------------- backtests


@dataclass(frozen=True)
class Backtest:
    scenario: Any
    result: BacktestResult

    def index(self, alert: Alert) -> int:
        return int(self.scenario.index_at(alert.event_time))

    @property
    def fired(self) -> list[Alert]:
        return [a for a in self.result.alerts if a.status == "fired"]

    @property
    def before(self) -> list[Alert]:
        return [a for a in self.fired if self.index(a) < self.scenario.change_at]

    @property
    def after(self) -> list[Alert]:
        return [a for a in self.fired if self.index(a) >= self.scenario.change_at]

    def after_on(self, monitor: str, feature: str | None = None, **fields: Any) -> list[Alert]:
        return [a for a in self.after if a.monitor == monitor and a.feature == feature
                and all(getattr(a, k) == v for k, v in fields.items())]


@cache
def backtest(name: str, seed: int = SEED) -> Backtest:
    scenario = make_scenario(name, seed=seed)
    lines = [event.model_dump_json() for event in scenario.stream()]
    return Backtest(scenario, run_backtest(lines, parse_monitor_config(scenario.MONITORS), build_detector))


def alerts_text(alerts: list[Alert]) -> Iterator[str]:
    return (f"{a.kind}/{a.monitor}/{a.detector} feature={a.feature} segment={a.segment}: {a.message}" for a in alerts)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_backtest_fires_the_expected_monitors_after_the_change_and_nothing_unplanned_before(name: str) -> None:
    bt = backtest(name)
    unplanned = [a for a in bt.before if not bt.scenario.planned_before_change(a)]
    assert unplanned == [], "\n".join(alerts_text(unplanned))
    assert bt.result.bad_lines == []
    assert bt.scenario.EXPECTED_MONITORS <= {a.monitor for a in bt.after}, "\n".join(alerts_text(bt.after))


def test_backtest_speech_accent_pages_for_en_in_and_its_line_quality() -> None:
    bt = backtest("speech-accent")
    assert bt.after_on("performance", segment="en-IN")
    assert not [a for a in bt.fired if a.segment not in (None, "en-IN")]
    assert bt.after_on("feature_drift", "snr_db", segment=None)
    assert bt.after_on("feature_drift", "snr_db", segment="en-IN")
    assert {a.feature for a in bt.fired} <= {None, "snr_db"}


def test_backtest_stock_flags_each_spike_on_its_own_event_and_then_the_reversal() -> None:
    bt = backtest("stock")
    outliers = [a for a in bt.fired if a.kind == "outlier"]
    assert sorted(bt.index(a) for a in outliers) == list(bt.scenario.spike_at)
    assert {(a.monitor, a.feature) for a in outliers} == {("outliers", "return_1")}
    assert bt.after_on("trend", "return_1", kind="drift")
    assert bt.after_on("feature_drift", "return_1") and bt.after_on("feature_drift", "volume_z")
    assert bt.after_on("performance", kind="performance_decay")
    assert "ticker" not in {a.feature for a in bt.fired}


def test_backtest_robot_reports_the_unknown_shape_and_the_new_mix() -> None:
    bt = backtest("robot")
    (new_class,) = bt.after_on("new_category", detector="unseen_rate")
    assert "unknown" in new_class.message and new_class.severity == "critical"
    assert bt.after_on("prediction_drift", detector="chi_squared")
    assert bt.after_on("feature_drift", "weight_g")
    assert bt.after_on("performance")
    assert "conveyor" not in {a.feature for a in bt.fired}


def test_backtest_fraud_estimates_the_decay_before_labels_confirm_it_and_retrains_on_schedule() -> None:
    bt = backtest("fraud")
    estimated = bt.after_on("estimated_performance", kind="performance_decay")
    labelled = bt.after_on("performance", detector="threshold")
    assert estimated and labelled
    assert min(bt.index(a) for a in estimated) < min(bt.index(a) for a in labelled)
    assert bt.after_on("feature_drift", "channel")
    assert "amount_eur" not in {a.feature for a in bt.fired}
    reasons = [t.reason for t in bt.result.triggers]
    assert reasons.count("schedule") >= 4 and reasons.count("volume") >= 3 and "drift" not in reasons
    # The labels that never come expire, the rest join.
    assert 0.08 < bt.result.n_expired / bt.scenario.n_events < 0.12
    assert bt.result.n_examples + bt.result.n_expired == bt.scenario.n_events


def test_backtest_recommender_is_quiet_at_the_version_switch_then_sees_version_2_drift() -> None:
    bt = backtest("recommender")
    drift = bt.after_on("prediction_drift")
    assert drift and {a.model_version for a in drift} == {"2"}
    assert bt.after_on("performance", detector="threshold")
    assert not [a for a in bt.fired if a.feature is not None]
