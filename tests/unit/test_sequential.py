"""The sequential drift tests: batch independence, pickling, calibration on discrete data, and their monitors."""

from __future__ import annotations

import pickle
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.cusum_bank import SCALE, normal_scores, randomized_normal_scores
from detectors.exceptions import InvalidParameter
from detectors.monitors.checkpoint import Checkpoint, decode_checkpoint, encode_checkpoint
from detectors.monitors.data_monitor import DataMonitor
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.signed_state import StateSigner
from detectors.registry import build_detector
from detectors.sequential import STEP_BATCH, CUSUMArray, SequentialTests, position_uniforms
from schemas.config import parse_monitor_config
from schemas.events import PredictionEvent
from schemas.exceptions import ConfigError

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _stream(seed: int, n: int = 6000) -> tuple[SequentialTests, np.ndarray, list[list[str]]]:
    """Two numeric series (normal, zero-inflated) and one categorical; all change at 3,000."""
    rng = np.random.default_rng(seed)
    ref_counts = Counter(rng.choice(["a", "b", "c"], 2000, p=[0.6, 0.3, 0.1]).tolist())
    tests = SequentialTests([("x", np.sort(rng.normal(size=2000))),
                             ("z", np.sort(np.where(rng.random(2000) < 0.6, 0.0, rng.poisson(3, 2000) + 1.0)))],
                            [("c", ref_counts)], horizon=100_000)
    x = rng.normal(size=n) + np.where(np.arange(n) >= 3000, 0.7, 0.0)
    z = np.where(rng.random(n) < 0.6, 0.0, rng.poisson(3, n) + 1.0)
    x[rng.random(n) < 0.05] = np.nan  # missing values skip the series
    late = np.arange(n) >= 3000
    c = np.where(late, rng.choice(["a", "b", "c", "new"], n, p=[0.4, 0.3, 0.2, 0.1]),
                 rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]))
    return tests, np.vstack([x, z]), [c.tolist()]


def _alarms(tests: SequentialTests, numeric: np.ndarray, categorical: list[list[str]], cuts: list[int],
            offset: int = 0) -> list[tuple[int, int, float]]:
    out = []
    edges = [0, *cuts, numeric.shape[1]]
    for lo, hi in zip(edges, edges[1:]):
        alarms = tests.update(numeric[:, lo:hi], [c[lo:hi] for c in categorical], offset + lo)
        out += [(a.test, offset + lo + a.index, a.statistic) for a in alarms]
    return out


def test_alarms_do_not_depend_on_how_the_stream_is_batched_and_survive_pickling() -> None:
    tests, numeric, categorical = _stream(1)
    whole = _alarms(tests, numeric, categorical, [])
    kinds = Counter(tests.tests[t][0] for t, _, _ in whole)
    assert set(kinds) == {"scores", "unseen", "share"}, kinds
    assert all(i >= 3000 for _, i, _ in whole), "nothing before the change"
    for cuts in ([1, 2, 3, 1000, 3001], list(range(37, 6000, 37)), [2999]):
        again, numeric_again, categorical_again = _stream(1)
        assert _alarms(again, numeric_again, categorical_again, cuts) == whole
    half, numeric_half, categorical_half = _stream(1)
    first = _alarms(half, numeric_half[:, :3500], [c[:3500] for c in categorical_half], [])
    resumed: SequentialTests = pickle.loads(pickle.dumps(half))
    second = _alarms(resumed, numeric_half[:, 3500:], [c[3500:] for c in categorical_half], [700], offset=3500)
    assert first + second == whole and len(second) > 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 2 * STEP_BATCH), min_size=1, max_size=400), st.integers(2600, 3100))
def test_small_batches_stepped_in_python_give_the_vectorised_alarms_and_state(sizes: list[int], start: int) -> None:
    """Batches of up to STEP_BATCH events go through CUSUMArray.step, longer ones through numpy: same bits."""
    stepped, numeric, categorical = _stream(1)
    vectorised, _, _ = _stream(1)
    for tests in (stepped, vectorised):
        tests.update(numeric[:, :start], [c[:start] for c in categorical], 0)
    edges = np.cumsum([start, *sizes]).tolist()
    got, expected = [], []
    for lo, hi in zip(edges, edges[1:]):
        batch = (numeric[:, lo:hi], [c[lo:hi] for c in categorical], lo)
        got += [(a.test, lo + a.index, a.statistic, a.threshold, a.change_start) for a in stepped.update(*batch)]
    whole = (numeric[:, start:edges[-1]], [c[start:edges[-1]] for c in categorical], start)
    expected = [(a.test, start + a.index, a.statistic, a.threshold, a.change_start)
                for a in vectorised._update_vectorised(*whole)]
    assert got == expected
    assert np.array_equal(stepped._array._s, vectorised._array._s)
    assert np.array_equal(stepped._array._since, vectorised._array._since)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 5990), st.integers(1, STEP_BATCH))
def test_python_increments_of_a_few_events_are_numpys(lo: int, n: int) -> None:
    """Each increment, not only the alarms: a rounding difference could hide in a quiet stretch."""
    tests, numeric, categorical = _stream(1)
    batch = (numeric[:, lo:lo + n], [c[lo:lo + n] for c in categorical])
    expected = tests._increments(*batch, lo)
    assert expected is not None
    assert np.array_equal(np.array(tests._increments_few(*batch, n, lo), dtype=np.int64).T, expected)


def test_stepped_batches_alarm_on_every_kind_of_test() -> None:
    """The stream of the property test above alarms on all three tests inside its batches (so it compares alarms)."""
    tests, numeric, categorical = _stream(1)
    tests.update(numeric[:, :3000], [c[:3000] for c in categorical], 0)
    kinds = Counter(tests.tests[a.test][0] for lo in range(3000, 4500, 3)
                    for a in tests.update(numeric[:, lo:lo + 3], [c[lo:lo + 3] for c in categorical], lo))
    assert set(kinds) == {"scores", "unseen", "share"}, kinds


def test_a_test_restarts_after_each_alarm_and_keeps_the_others_running() -> None:
    bank = CUSUMArray([4.0, 100.0], [2, 1])
    inc = np.array([[1.0] * 10, [-5.0] * 10, [3.0] * 10])
    alarms = bank.update_many(np.rint(inc * SCALE).astype(np.int64))
    assert [(a.test, a.index, a.change_start) for a in alarms] == [(0, 4, 5), (0, 9, 5)]
    assert bank.statistics.tolist() == [0.0, 30.0]
    with pytest.raises(InvalidParameter, match="rows_per_test"):
        CUSUMArray([1.0], [0])


def test_randomised_scores_are_standard_normal_on_tied_data_where_mid_ranks_are_not() -> None:
    rng = np.random.default_rng(4)
    draw = lambda n: np.where(rng.random(n) < 0.6, 0.0, rng.lognormal(size=n))  # noqa: E731  60% zeros
    ref = np.sort(draw(5000))
    values = draw(200_000)
    jittered = randomized_normal_scores(values, ref, rng.random(len(values)))
    assert abs(jittered.mean()) < 0.01 and abs(jittered.std() - 1) < 0.01
    mid = normal_scores(values, ref)
    assert mid.mean() > 0.05 and mid.std() < 0.85  # the bias a calibrated threshold cannot absorb


def test_position_uniforms_are_a_function_of_the_position_only() -> None:
    keys = np.array([7, 8], dtype=np.uint64)
    whole = position_uniforms(keys, np.arange(100))
    assert np.array_equal(whole[:, 40:60], position_uniforms(keys, np.arange(40, 60)))
    assert abs(whole.mean() - 0.5) < 0.1 and len(np.unique(whole)) == whole.size


@pytest.mark.parametrize("kind", ["poisson", "zero_inflated"])
def test_discrete_stationary_series_stay_within_the_horizon(kind: str) -> None:
    """Twenty series of 20,000 events at a horizon of 2,000: at most 200 false alarms (about 0.6 of it, measured)."""
    rng = np.random.default_rng(5)

    def draw(shape: int | tuple[int, int]) -> np.ndarray:
        if kind == "poisson":
            return rng.poisson(1.5, shape).astype(float)
        return np.where(rng.random(shape) < 0.7, 0.0, rng.gamma(2.0, size=shape))

    tests = SequentialTests([(f"s{j}", np.sort(draw(2000))) for j in range(20)], [], horizon=2000)
    n_alarms = sum(len(tests.update(draw((20, 5000)), [], first)) for first in range(0, 20_000, 5000))
    assert 0 < n_alarms <= 20 * 20_000 / 2000, n_alarms


def _predictions(n: int, shift_at: int, seed: int = 0) -> list[PredictionEvent]:
    rng = np.random.default_rng(seed)
    return [PredictionEvent(prediction_id=f"p{i}", model="m", model_version="1", event_time=T0 + timedelta(seconds=i),
                            prediction=str(rng.choice(["yes", "no"])),
                            features={"x": float(rng.normal() + (1.0 if i >= shift_at else 0.0)),
                                      "c": str(rng.choice(["a", "b"]))})
            for i in range(n)]


CONFIG = ("models: {m: {task: classification, performance: {threshold: 0.5}, prediction_drift: true, "
          "features: {x: {kind: numeric}, c: {kind: categorical}}, drift: {reference_size: 1000, window: 500%s}}}")


def test_turned_off_the_monitor_is_the_block_tests_alone_with_their_whole_budget() -> None:
    on = MonitorSet(parse_monitor_config(CONFIG % ""), build_detector)
    off = MonitorSet(parse_monitor_config(CONFIG % ", sequential: false"), build_detector)
    events = _predictions(3000, shift_at=2000)
    alerts_on, alerts_off = on.observe_predictions(events).alerts, off.observe_predictions(events).alerts
    assert [a.detector for a in alerts_off] == ["ks"] and alerts_off[0].event_time == events[2499].event_time
    glr = [a for a in alerts_on if a.detector == "normal_score_glr"]
    assert len(glr) == 1 and glr[0].event_time < events[2100].event_time
    monitor_on, monitor_off = on.data_monitors[("m", "1", None)], off.data_monitors[("m", "1", None)]
    assert (monitor_off.n_budgeted, monitor_on.n_budgeted) == (3, 3 + 1 + 2 * 2)
    assert monitor_on.block_alpha == pytest.approx(monitor_off.block_alpha * 3 / 8)


def test_a_bad_sequential_setting_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"models\.m\.drift\.sequential"):
        parse_monitor_config(CONFIG % ", sequential: sometimes")


def test_a_checkpoint_of_an_older_data_monitor_is_refused_and_its_model_starts_cold() -> None:
    signer = StateSigner(b"a test key of 32 bytes, no more.")
    monitors = MonitorSet(parse_monitor_config(CONFIG % ""), build_detector)
    monitors.observe_predictions(_predictions(1200, shift_at=10_000))
    data = monitors.data_monitors_of("m")
    checkpoint = Checkpoint("m", 0, 5, monitors.monitors["m"], data=data)
    back = decode_checkpoint(encode_checkpoint(checkpoint, signer), signer, b"m")
    assert isinstance(back, Checkpoint) and back.data[("1", None)].statistics == data[("1", None)].statistics
    old = data[("1", None)]
    del old.__dict__["_state_version"]  # as a DataMonitor pickled before the sequential tests existed
    refused = decode_checkpoint(encode_checkpoint(checkpoint, signer), signer, b"m")
    assert not isinstance(refused, Checkpoint)
    assert refused.kind == "undecodable" and "older Driftline" in refused.reason, refused
    assert isinstance(DataMonitor("m", "1", monitors.config.models["m"], build_detector), DataMonitor)
