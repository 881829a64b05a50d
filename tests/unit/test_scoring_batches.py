"""The monitor stage's scoring batches: nothing lost or reordered, nobody held past the wait, same alerts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.exceptions import InvalidParameter
from detectors.ingest.merge import Held
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.scoring_batches import ScoringBatches
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from schemas.events import LabelledExample, OutcomeEvent, PredictionEvent

MODELS = ["a", "b", "c"]

# Per step: released predictions and labelled examples as (model index, labelled?), and the wall seconds since
# the last step.
steps = st.lists(st.tuples(st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=12),
                           st.floats(0, 2, allow_nan=False)), max_size=25)


@given(steps, st.integers(1, 10), st.floats(0, 3, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_every_item_leaves_once_in_its_models_order_and_none_waits_past_its_due(
        script: list[tuple[list[tuple[int, bool]], float]], min_items: int, max_wait: float) -> None:
    batches: ScoringBatches[int] = ScoringBatches(min_items, max_wait)
    added: dict[tuple[str, bool], list[int]] = {}
    taken: dict[tuple[str, bool], list[int]] = {}
    first_added: dict[str, float] = {}  # wall time of each model's oldest item still held
    wall, serial = 0.0, 0
    for released, elapsed in script:
        wall += elapsed
        held = {False: [], True: []}  # type: dict[bool, list[Held[int]]]
        for model_index, labelled in released:
            model = MODELS[model_index]
            held[labelled].append(Held(serial, model, serial))
            added.setdefault((model, labelled), []).append(serial)
            first_added.setdefault(model, wall)
            serial += 1
        batches.add(held[False], held[True], wall_time=wall)
        predictions, labelled_items = batches.due(wall)
        left = {h.model for h in [*predictions, *labelled_items]}
        for side, items in ((False, predictions), (True, labelled_items)):
            for item in items:
                taken.setdefault((item.model, side), []).append(item.ref)
        for model in MODELS:
            n_held = sum(len(added.get((model, s), [])) - len(taken.get((model, s), [])) for s in (False, True))
            if model in left:
                assert n_held == 0, "a model due leaves whole"
                first_added.pop(model, None)
            elif n_held:
                assert n_held < min_items and first_added[model] > wall - max_wait, "held past its due"
    assert batches.n_held == serial - sum(len(v) for v in taken.values())
    for side, items in zip((False, True), batches.take_all(), strict=True):
        for item in items:
            taken.setdefault((item.model, side), []).append(item.ref)
    assert batches.n_held == 0
    assert {k: sorted(v) for k, v in taken.items()} == {k: v for k, v in added.items()}
    for key, refs in taken.items():
        assert refs == added[key], f"{key}: out of order"


def test_drop_forgets_only_the_named_models() -> None:
    batches: ScoringBatches[str] = ScoringBatches(min_items=100, max_wait_seconds=60)
    batches.add([Held("m1", "a", 1), Held("m1", "b", 2)], [Held("m1", "a", 3)], wall_time=0.0)
    assert batches.drop(lambda model: model == "a") == 2
    assert batches.n_held == 1
    assert [h.item for h in batches.take_all()[0]] == [2]


@pytest.mark.parametrize(("min_items", "max_wait"), [(0, 1.0), (1, -1.0), (1, float("nan"))])
def test_bad_parameters_are_refused_by_name(min_items: int, max_wait: float) -> None:
    with pytest.raises(InvalidParameter):
        ScoringBatches(min_items, max_wait)


def _stream(n_per_model: int, seed: int) -> list[tuple[PredictionEvent, LabelledExample]]:
    """Three models' interleaved traffic; model b drifts and loses accuracy half way."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    out = []
    for i in range(n_per_model):
        for model in MODELS:
            shifted = model == "b" and i >= n_per_model // 2
            x = float(rng.normal(2.0 if shifted else 0.0))
            wrong = rng.random() < (0.5 if shifted else 0.1)
            at = t0 + timedelta(seconds=i)
            p = PredictionEvent(prediction_id=f"{model}-{i}", model=model, model_version="1", event_time=at,
                                features={"x": x}, prediction=1)
            o = OutcomeEvent(prediction_id=p.prediction_id, event_time=at, actual=0 if wrong else 1)
            out.append((p, LabelledExample(prediction=p, outcome=o)))
    return out


def test_gathered_scoring_publishes_the_alerts_of_scoring_as_released() -> None:
    config = parse_monitor_config(
        "models: {" + ", ".join(
            f"{m}: {{task: classification, performance: {{threshold: 0.8, window: 100}},"
            f" drift: {{reference_size: 200, window: 100}}, features: {{x: {{kind: numeric}}}}}}" for m in MODELS)
        + "}")
    stream = _stream(1200, seed=5)
    direct, gathered = MonitorSet(config, build_detector), MonitorSet(config, build_detector)
    batches: ScoringBatches[int] = ScoringBatches(min_items=40, max_wait_seconds=1e9)
    alerts_direct, alerts_gathered = [], []
    for start in range(0, len(stream), 9):  # a release of 3 items per model
        chunk = stream[start:start + 9]
        predictions, labelled = [p for p, _ in chunk], [e for _, e in chunk]
        result = direct.observe_predictions(predictions)
        result.extend(direct.observe(labelled))
        alerts_direct += result.alerts
        batches.add([Held(0, p.model, p) for p in predictions], [Held(0, e.prediction.model, e) for e in labelled],
                    wall_time=0.0)
        for due in (batches.due(0.0), batches.take_all() if start + 9 >= len(stream) else ([], [])):
            result = gathered.observe_predictions([h.item for h in due[0]])
            result.extend(gathered.observe([h.item for h in due[1]]))
            alerts_gathered += result.alerts
    assert {a.model for a in alerts_direct} >= {"b"}, "the drifting model alerts: the comparison means something"
    assert sorted(a.alert_id for a in alerts_gathered) == sorted(a.alert_id for a in alerts_direct)
    assert sorted((a.alert_id, a.event_time) for a in alerts_gathered) == sorted(
        (a.alert_id, a.event_time) for a in alerts_direct)


def test_a_model_whose_input_is_drained_leaves_at_once_the_others_keep_gathering() -> None:
    batches: ScoringBatches[int] = ScoringBatches(min_items=64, max_wait_seconds=60)
    batches.add([Held(0, "a", 1), Held(0, "b", 2)], [Held(0, "a", 3)], wall_time=0.0)
    predictions, labelled = batches.due(wall_time=0.1, drained=lambda model: model == "a")
    assert ([h.item for h in predictions], [h.item for h in labelled]) == ([1], [3])
    assert batches.n_held == 1 and batches.due(wall_time=0.1) == ([], [])
