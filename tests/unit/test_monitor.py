"""ModelMonitor and MonitorSet: alerts, hysteresis, cooldown, batch-size invariance, rejections."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.monitors.episodes import MonitorResult
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.performance_monitor import UnscorableExample, loss_of
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from schemas.events import Alert, LabelledExample, OutcomeEvent, PredictionEvent, RetrainTrigger, deterministic_id
from schemas.exceptions import ConfigError
from streams.scenarios import SpeechScenario

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def classification(correct: list[bool] | np.ndarray, model: str = "m", start: int = 0) -> list[LabelledExample]:
    out = []
    for i, ok in enumerate(correct, start=start):
        t = T0 + timedelta(seconds=i)
        p = PredictionEvent(prediction_id=f"{model}-{i}", model=model, model_version="1", event_time=t, prediction="a")
        o = OutcomeEvent(prediction_id=f"{model}-{i}", event_time=t, actual="a" if ok else "b")
        out.append(LabelledExample(prediction=p, outcome=o))
    return out


def regression(errors: list[float], model: str = "r") -> list[LabelledExample]:
    out = []
    for i, err in enumerate(errors):
        t = T0 + timedelta(seconds=i)
        p = PredictionEvent(prediction_id=f"{model}-{i}", model=model, model_version="1", event_time=t, prediction=10.0)
        o = OutcomeEvent(prediction_id=f"{model}-{i}", event_time=t, actual=10.0 + err)
        out.append(LabelledExample(prediction=p, outcome=o))
    return out


def monitors(yaml_text: str) -> MonitorSet:
    return MonitorSet(parse_monitor_config(yaml_text), build_detector)


def run(ms: MonitorSet, examples: list[LabelledExample], batch: int | None = None) -> MonitorResult:
    total = MonitorResult()
    step = batch or max(1, len(examples))
    for i in range(0, len(examples), step):
        total.extend(ms.observe(examples[i : i + step]))
    return total


def index_of(alert: Alert | RetrainTrigger) -> int:
    return int((alert.event_time - T0).total_seconds())


SPEECH = SpeechScenario(n_events=8000, change_at=4000, accuracy_before=0.92, accuracy_after=0.80, seed=7)
SPEECH_CONFIG = """
models:
  speech-asr:
    task: classification
    performance: {{window: 500, threshold: 0.86}}
    retrain: {{cooldown_seconds: {cooldown}}}
"""


@pytest.fixture(scope="module")
def speech() -> list[LabelledExample]:
    return [LabelledExample(prediction=p, outcome=o) for p, o in SPEECH.events()]


def test_speech_decay_fires_only_after_the_change_and_triggers_a_retrain(speech: list[LabelledExample]) -> None:
    result = run(monitors(SPEECH_CONFIG.format(cooldown=3600)), speech)
    change_time = SPEECH.start + timedelta(seconds=SPEECH.change_at)
    fired = [a for a in result.alerts if a.status == "fired"]
    assert fired, "the decay went unnoticed"
    assert all(a.event_time >= change_time for a in fired)
    # ...and not absurdly late: within four windows of the change.
    assert min(a.event_time for a in fired) <= change_time + timedelta(seconds=2000)
    assert {a.detector for a in fired} == {"threshold", "bernoulli_glr"}
    assert not [a for a in result.alerts if a.status == "resolved"]  # accuracy stays at 0.80
    threshold_alert = next(a for a in fired if a.detector == "threshold")
    assert threshold_alert.statistic < 0.86 and threshold_alert.severity == "critical"
    assert threshold_alert.kind == "performance_decay" and threshold_alert.model == "speech-asr"
    assert len(result.triggers) >= 1
    trigger = result.triggers[0]
    assert trigger.model == "speech-asr" and trigger.reason == "performance_decay"
    assert trigger.alert_ids == [fired[0].alert_id]
    assert trigger.data_from <= trigger.event_time == fired[0].event_time
    assert trigger.trigger_id == deterministic_id(fired[0].alert_id, "retrain")


def test_stationary_speech_stream_is_quiet() -> None:
    calm = SpeechScenario(n_events=6000, change_at=6000, seed=7)
    examples = [LabelledExample(prediction=p, outcome=o) for p, o in calm.events()]
    result = run(monitors(SPEECH_CONFIG.format(cooldown=3600)), examples)
    assert result.alerts == [] and result.triggers == []


@pytest.mark.parametrize("batch", [1, 7, 1000, None])
def test_alerts_do_not_depend_on_batch_size(speech: list[LabelledExample], batch: int | None) -> None:
    # Decay, then recovery, so that fired and resolved alerts both appear.
    rng = np.random.default_rng(3)
    tail = classification(rng.random(3000) < 0.97, model="speech-asr", start=len(speech))
    stream = speech + tail
    config = SPEECH_CONFIG.format(cooldown=0)
    reference = run(monitors(config), stream)
    assert {a.status for a in reference.alerts} == {"fired", "resolved"}
    got = run(monitors(config), stream, batch)
    assert [a.model_dump() for a in got.alerts] == [a.model_dump() for a in reference.alerts]
    assert [t.model_dump() for t in got.triggers] == [t.model_dump() for t in reference.triggers]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
    st.integers(0, 2**32 - 1),
    st.data(),
)
def test_random_cuts_give_identical_alerts(rates: list[float], seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    flags = np.concatenate([rng.random(80) >= r for r in rates])
    examples = classification(flags)
    config = """
models:
  m:
    task: classification
    performance: {window: 20, threshold: 0.7, hysteresis: 0.05, min_samples: 10}
    detector: {name: bernoulli_cusum, params: {false_alarm_horizon: 50, warmup: 20}}
    retrain: {cooldown_seconds: 30}
"""
    reference = run(monitors(config), examples)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(examples) - 1), max_size=12)))) if len(examples) > 1 else []
    ms = monitors(config)
    got = MonitorResult()
    for a, b in zip([0, *cuts], [*cuts, len(examples)]):
        got.extend(ms.observe(examples[a:b]))
    assert got.alerts == reference.alerts
    assert got.triggers == reference.triggers
    # Episodes alternate fired/resolved per detector and share their episode id.
    for detector in {a.detector for a in reference.alerts}:
        statuses = [a.status for a in reference.alerts if a.detector == detector]
        assert statuses == ["fired", "resolved"] * (len(statuses) // 2) + ["fired"] * (len(statuses) % 2)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(0.0, 2.0), min_size=1, max_size=5), st.integers(0, 2**32 - 1), st.data())
def test_lower_is_better_alerts_fire_and_resolve_alike_in_small_and_whole_batches(
    levels: list[float], seed: int, data: st.DataObject,
) -> None:
    """MAE above and back below its threshold, cut into batches of up to 6 (small ones compare in Python).

    Errors on a grid of 1/8 keep every window sum exact: RollingMean's sums of arbitrary floats depend in
    their last bits on where the batches are cut (its blocks start at the tail), which this test is not about.
    """
    rng = np.random.default_rng(seed)
    examples = regression((np.round(np.concatenate([rng.exponential(level, 60) for level in levels]) * 8) / 8).tolist())
    config = ("models: {r: {task: regression, detector: null, "
              "performance: {metric: mae, window: 20, threshold: 0.8, hysteresis: 0.1, min_samples: 10}}}")
    reference = run(monitors(config), examples)
    ms, got, i = monitors(config), MonitorResult(), 0
    while i < len(examples):
        size = data.draw(st.integers(1, 6))
        got.extend(ms.observe(examples[i:i + size]))
        i += size
    assert got.alerts == reference.alerts and got.triggers == reference.triggers


def _hover() -> list[bool]:
    # Period 11 with three errors: every full window of 10 holds 2 or 3 errors,
    # so rolling accuracy keeps stepping between 0.8 and 0.7 around the 0.8 threshold.
    return [True] * 10 + ([True] * 8 + [False] * 3) * 20


@pytest.mark.parametrize("hysteresis", [0.0, 0.05])
def test_hysteresis_prevents_flapping(hysteresis: float) -> None:
    config = f"""
models:
  m: {{task: classification, performance: {{window: 10, threshold: 0.8, hysteresis: {hysteresis}}}, detector: null}}
"""
    result = run(monitors(config), classification(_hover() + [True] * 20))
    statuses = [a.status for a in result.alerts]
    if hysteresis == 0.0:
        # Without a margin the alert flaps: the test shows the stream really hovers.
        assert statuses.count("fired") > 3
    else:
        assert statuses == ["fired", "resolved"]
        fired, resolved = result.alerts
        assert resolved.statistic >= 0.85
        assert index_of(resolved) >= len(_hover())


def test_resolves_after_recovery_with_the_same_episode() -> None:
    config = """
models:
  m: {task: classification, performance: {window: 100, threshold: 0.85, hysteresis: 0.05}, detector: null}
"""
    rng = np.random.default_rng(11)
    flags = np.concatenate([rng.random(600) < 0.97, rng.random(300) < 0.6, np.ones(300, dtype=bool)])
    ms = monitors(config)
    result = run(ms, classification(flags), batch=50)
    assert [a.status for a in result.alerts] == ["fired", "resolved"]
    fired, resolved = result.alerts
    assert 600 <= index_of(fired) < 900
    assert index_of(resolved) >= index_of(fired) + 100
    assert index_of(resolved) >= 900
    assert fired.episode_id == resolved.episode_id
    assert fired.alert_id == deterministic_id(fired.episode_id, "fired")
    assert resolved.alert_id == deterministic_id(fired.episode_id, "resolved")
    assert resolved.severity == "info" and resolved.statistic >= 0.9
    assert ms.monitors["m"].open_alerts == []
    assert len(result.triggers) == 1


def test_cooldown_suppresses_a_second_trigger(speech: list[LabelledExample]) -> None:
    no_cooldown = run(monitors(SPEECH_CONFIG.format(cooldown=0)), speech)
    with_cooldown = run(monitors(SPEECH_CONFIG.format(cooldown=3600)), speech)
    # The same two alerts fire either way (threshold and detector, seconds apart)...
    assert no_cooldown.alerts == with_cooldown.alerts
    assert len([a for a in no_cooldown.alerts if a.status == "fired"]) == 2
    # ...but within the cooldown only the first asks for a retrain.
    assert len(no_cooldown.triggers) == 2
    assert len(with_cooldown.triggers) == 1
    assert with_cooldown.triggers[0] == no_cooldown.triggers[0]


def test_cooldown_expires_in_event_time() -> None:
    config = """
models:
  m: {task: classification, performance: {window: 10, threshold: 0.8, hysteresis: 0.0}, detector: null,
      retrain: {cooldown_seconds: 100}}
"""
    bad, good = [False] * 10, [True] * 20
    # Episodes fire at event seconds 9, 32 (23 s after the trigger: suppressed) and 122
    # (113 s after the last trigger, though only 90 s after the last alert: triggers).
    stream = bad + good + bad + good + [True] * 60 + bad
    result = run(monitors(config), classification(stream))
    fired = [a for a in result.alerts if a.status == "fired"]
    assert [index_of(a) for a in fired] == [9, 32, 122]
    assert [index_of(t) for t in result.triggers] == [9, 122]


def test_retrain_disabled_gives_alerts_but_no_triggers() -> None:
    config = """
models:
  m: {task: classification, performance: {window: 10, threshold: 0.8}, detector: null, retrain: {enabled: false}}
"""
    result = run(monitors(config), classification([False] * 30))
    assert len(result.alerts) == 1 and result.triggers == []


def test_min_samples_controls_when_the_threshold_is_first_judged() -> None:
    base = "models: {{m: {{task: classification, performance: {{window: 100, threshold: 0.8{extra}}}, detector: null}}}}"
    early = run(monitors(base.format(extra=", min_samples: 10")), classification([False] * 200))
    default = run(monitors(base.format(extra="")), classification([False] * 200))
    assert [index_of(a) for a in early.alerts] == [9]
    assert [index_of(a) for a in default.alerts] == [99]


def test_min_samples_above_window_is_refused() -> None:
    # The window never holds more than `window` examples, so such a monitor would never judge: refused at load.
    text = "models: {m: {task: classification, performance: {window: 10, threshold: 0.8, min_samples: 20}, detector: null}}"
    with pytest.raises(ConfigError, match=r"models\.m\.performance\.min_samples.*must not exceed the window \(10\)"):
        monitors(text)


def test_regression_mae_fires_and_resolves() -> None:
    config = """
models:
  eta: {task: regression, performance: {window: 50, threshold: 1.0, hysteresis: 0.2}, detector: null}
"""
    errors = [0.5] * 100 + [3.0] * 100 + [0.5] * 100
    ms = monitors(config)
    result = run(ms, regression(errors, model="eta"), batch=33)
    assert [a.status for a in result.alerts] == ["fired", "resolved"]
    fired, resolved = result.alerts
    assert fired.detector == "threshold" and fired.statistic > 1.0 and fired.threshold == 1.0
    assert "mae" in fired.message and "rose above" in fired.message
    # The MAE passes 1.0 once more than a fifth of the window is 3.0: the 11th bad example.
    assert index_of(fired) == 110
    assert resolved.statistic <= 0.8
    assert ms.monitors["eta"].metric_name == "mae"
    assert ms.monitors["eta"].metric_value == pytest.approx(0.5)


def test_regression_with_gaussian_detector_on_absolute_error() -> None:
    config = """
models:
  eta:
    task: regression
    performance: {window: 50, threshold: 100.0}
    detector: {name: gaussian_glr, params: {false_alarm_horizon: 100000, warmup: 200}}
"""
    rng = np.random.default_rng(5)
    errors = list(np.abs(rng.normal(0, 1, 600))) + list(np.abs(rng.normal(0, 4, 400)))
    result = run(monitors(config), regression(errors, model="eta"))
    fired = [a for a in result.alerts if a.status == "fired"]
    assert fired
    assert {a.detector for a in fired} == {"gaussian_glr"}  # the threshold of 100 is never reached
    assert min(index_of(a) for a in fired) >= 600
    assert all(a.severity == "warning" for a in fired)


def test_unscorable_regression_examples_are_rejected_not_raised() -> None:
    config = "models: {eta: {task: regression, performance: {window: 10, threshold: 1.0}, detector: null}}"
    good = regression([0.1] * 5, model="eta")
    t = T0 + timedelta(seconds=99)
    bad = LabelledExample(
        prediction=PredictionEvent(prediction_id="x", model="eta", model_version="1", event_time=t, prediction=3.0),
        outcome=OutcomeEvent(prediction_id="x", event_time=t, actual="late"),
    )
    ms = monitors(config)
    result = ms.observe([good[0], bad, *good[1:]])
    assert [ex for ex, _ in result.rejected] == [bad]
    assert "numeric" in result.rejected[0][1]
    assert ms.monitors["eta"].n_seen == 5
    with pytest.raises(UnscorableExample):
        loss_of(bad, "regression")
    # A batch of only unscorable examples changes nothing.
    assert ms.observe([bad]).rejected == [(bad, result.rejected[0][1])]
    assert ms.monitors["eta"].n_seen == 5


def test_classification_loss_compares_labels() -> None:
    ok, wrong = classification([True, False])
    assert (loss_of(ok, "classification"), loss_of(wrong, "classification")) == (0.0, 1.0)


def test_monitor_set_routes_by_model_and_counts_the_rest() -> None:
    config = """
models:
  a: {task: classification, performance: {window: 10, threshold: 0.8}, detector: null}
  b: {task: classification, performance: {window: 10, threshold: 0.8}, detector: null}
"""
    ms = monitors(config)
    mixed = classification([False] * 10, model="a") + classification([True] * 10, model="b") + classification([True] * 3, model="zzz")
    result = ms.observe(mixed)
    assert result.n_unmonitored == 3
    assert [a.model for a in result.alerts] == ["a"]
    assert (ms.monitors["a"].n_seen, ms.monitors["b"].n_seen) == (10, 10)
    assert ms.monitors["a"].metric_value == 0.0 and ms.monitors["b"].metric_value == 1.0
    assert ms.monitors["a"].open_alerts == ["threshold"]


def test_cooldown_is_per_model() -> None:
    config = """
models:
  a: {task: classification, performance: {window: 10, threshold: 0.8}, detector: null}
  b: {task: classification, performance: {window: 10, threshold: 0.8}, detector: null}
"""
    result = monitors(config).observe(classification([False] * 10, model="a") + classification([False] * 10, model="b"))
    assert sorted(t.model for t in result.triggers) == ["a", "b"]


@pytest.mark.parametrize(
    ("detector", "field"),
    [
        ("{name: bernoulli_cusum, params: {delta: 2}}", "models.m.detector.params.delta"),
        ("{name: bernoulli_cusum, params: {warmup: 0}}", "models.m.detector.params.warmup"),
        ("{name: bernoulli_cusum, params: {speed: 3}}", "models.m.detector.params.speed"),
        ("{name: adwin, params: {delta: 2}}", "models.m.detector.params.delta"),
    ],
)
def test_invalid_detector_param_names_its_field(detector: str, field: str) -> None:
    text = f"models: {{m: {{task: classification, performance: {{threshold: 0.8}}, detector: {detector}}}}}"
    with pytest.raises(ConfigError) as info:
        monitors(text)
    assert [f for f, _ in info.value.problems] == [field]


def test_unknown_detector_name_names_the_name_field() -> None:
    text = "models: {m: {task: classification, performance: {threshold: 0.8}, detector: {name: cusum}}}"
    with pytest.raises(ConfigError) as info:
        monitors(text)
    assert [f for f, _ in info.value.problems] == ["models.m.detector.name"]


def test_wrongly_typed_param_is_named() -> None:
    text = (
        "models: {m: {task: classification, performance: {threshold: 0.8}, "
        "detector: {name: bernoulli_cusum, params: {warmup: 10, delta: fast}}}}"
    )
    with pytest.raises(ConfigError) as info:
        monitors(text)
    assert [f for f, _ in info.value.problems] == ["models.m.detector.params.delta"]


def test_mae_alerts_do_not_depend_on_batch_size_after_a_huge_error() -> None:
    config = "models: {eta: {task: regression, performance: {window: 10, threshold: 0.5}, detector: null}}"
    examples = regression([1e16] + [1.0] * 50, model="eta")
    whole = run(monitors(config), examples)
    one_by_one = run(monitors(config), examples, batch=1)
    assert [a.status for a in one_by_one.alerts] == ["fired"]  # true MAE stays at 1.0 > 0.5
    assert whole.alerts == one_by_one.alerts


def test_speech_scenario_is_seeded_and_has_the_stated_accuracies(speech: list[LabelledExample]) -> None:
    again = [LabelledExample(prediction=p, outcome=o) for p, o in SPEECH.events()]
    assert again == speech
    other = next(iter(SpeechScenario(n_events=8000, change_at=4000, seed=8).events()))
    assert other[0].prediction_id != speech[0].prediction.prediction_id
    correct = np.array([e.prediction.prediction == e.outcome.actual for e in speech])
    assert correct[: SPEECH.change_at].mean() == pytest.approx(0.92, abs=0.015)
    assert correct[SPEECH.change_at :].mean() == pytest.approx(0.80, abs=0.015)
    assert all(e.outcome.event_time > e.prediction.event_time for e in speech[:100])
    assert len({e.prediction.prediction_id for e in speech}) == len(speech)
