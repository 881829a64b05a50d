"""Conformance, golden and property tests of every change detector in the registry."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import BernoulliCUSUM, BernoulliGLR, GaussianGLR, RobustSpikeDetector, build_detector
from detectors.base import SMALL_BATCH, DriftDetector, alarms_with_state
from detectors.exceptions import InvalidParameter
from detectors.registry import DETECTORS

# Small horizons and warm-ups so that hypothesis' short streams reach alarms.
FAST: dict[str, dict[str, object]] = {
    "bernoulli_cusum": {"false_alarm_horizon": 50, "warmup": 20},
    "bernoulli_glr": {"false_alarm_horizon": 50, "warmup": 20},
    "gaussian_glr": {"false_alarm_horizon": 50, "warmup": 20},
    "spike": {"window": 30, "min_samples": 10, "refresh": 7, "threshold": 3.0},
}
NAMES = sorted(DETECTORS)


def make(name: str) -> DriftDetector:
    return build_detector(name, **FAST.get(name, {}))


def state(detector: DriftDetector) -> bytes:
    return pickle.dumps(detector.__dict__)


streams = st.one_of(
    st.lists(st.sampled_from([0.0, 1.0]), max_size=400),
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), max_size=400),
    st.lists(st.sampled_from([0.0, 0.0, 0.0, 1.0, 5.0, -3.0]), max_size=400),
)
chunkings = st.lists(st.integers(1, 97), min_size=1, max_size=20)
fast_settings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def loop_alarms(detector: DriftDetector, xs: np.ndarray) -> list[int]:
    alarms = []
    for i, x in enumerate(xs):
        detector.update(float(x))
        if detector.drift_detected:
            alarms.append(i)
    return alarms


def chunked_alarms(detector: DriftDetector, xs: np.ndarray, sizes: list[int]) -> list[int]:
    alarms: list[int] = []
    i, k = 0, 0
    while i < len(xs):
        size = sizes[k % len(sizes)]
        alarms.extend(int(a) + i for a in detector.update_many(xs[i:i + size]))
        i += size
        k += 1
    return alarms


# -- conformance -----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_immutable(name: str) -> None:
    for param in inspect.signature(DETECTORS[name].__init__).parameters.values():
        if param.default is not inspect.Parameter.empty:
            assert isinstance(param.default, (int, float, str, bool, tuple, type(None))), param.name


@pytest.mark.parametrize("name", NAMES)
def test_docstring_with_example(name: str) -> None:
    doc = DETECTORS[name].__doc__ or ""
    assert "Parameters" in doc and ">>>" in doc


@pytest.mark.parametrize("name", NAMES)
def test_clone_equals_fresh(name: str) -> None:
    detector = make(name)
    detector.update_many(np.random.default_rng(0).random(300) < 0.3)
    assert state(detector.clone()) == state(make(name))
    assert repr(detector.clone()) == repr(make(name))


@pytest.mark.parametrize("name", NAMES)
def test_reset_equals_fresh(name: str) -> None:
    detector = make(name)
    detector.update_many(np.random.default_rng(1).normal(size=300))
    detector.reset()
    assert state(detector) == state(make(name))


@pytest.mark.parametrize("name", NAMES)
def test_pickle_round_trip_continues_identically(name: str) -> None:
    xs = np.concatenate([np.random.default_rng(2).random(400) < 0.1, np.random.default_rng(3).random(400) < 0.6])
    detector = make(name)
    detector.update_many(xs[:250])
    copy = pickle.loads(pickle.dumps(detector))
    assert list(copy.update_many(xs[250:])) == list(detector.update_many(xs[250:]))
    assert state(copy) == state(detector)


@pytest.mark.parametrize("name", NAMES)
@fast_settings
@given(data=streams, sizes=chunkings)
def test_update_many_equals_loop(name: str, data: list[float], sizes: list[int]) -> None:
    xs = np.asarray(data, dtype=float)
    looped, batched = make(name), make(name)
    assert chunked_alarms(batched, xs, sizes) == loop_alarms(looped, xs)
    assert looped.drift_detected == batched.drift_detected
    assert looped.n_updates == batched.n_updates
    assert looped.change_start == batched.change_start
    assert getattr(looped, "statistic", None) == getattr(batched, "statistic", None)


@pytest.mark.parametrize("name", ["bernoulli_cusum", "bernoulli_glr", "gaussian_glr", "spike"])
def test_our_detectors_batched_state_is_bit_identical(name: str) -> None:
    xs = np.concatenate([np.random.default_rng(4).random(700) < 0.1, np.random.default_rng(5).random(700) < 0.5])
    looped, batched = make(name), make(name)
    assert list(batched.update_many(xs)) == loop_alarms(looped, xs)
    assert state(looped) == state(batched)


@pytest.mark.parametrize("name", ["bernoulli_glr", "gaussian_glr", "spike"])
def test_alarms_with_state_is_the_same_stepped_through_small_batches_or_replayed_from_a_copy(name: str) -> None:
    xs = np.concatenate([np.random.default_rng(4).random(900) < 0.1, np.random.default_rng(5).random(900) < 0.5,
                         np.random.default_rng(6).normal(8, 1, 200)]).astype(float)
    stepped, replayed = make(name), make(name)
    small, large = [], []
    for first in range(0, len(xs), SMALL_BATCH):  # every batch small enough to be stepped through
        small += [(first + i, *rest) for i, *rest in alarms_with_state(stepped, xs[first:first + SMALL_BATCH])]
    for first in range(0, len(xs), 250):  # every batch copied, run vectorised, replayed where it alarmed
        large += [(first + i, *rest) for i, *rest in alarms_with_state(replayed, xs[first:first + 250])]
    assert small == large and len(small) > 0
    assert state(stepped) == state(replayed)


# -- properties ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["bernoulli_cusum", "bernoulli_glr", "gaussian_glr", "spike", "adwin",
                                  "page_hinkley", "ddm", "hddm_a"])
@fast_settings
@given(value=st.one_of(st.sampled_from([0.0, 1.0]), st.floats(-1e6, 1e6, allow_nan=False)),
       length=st.integers(0, 3000))
def test_no_alarm_on_a_constant_stream(name: str, value: float, length: int) -> None:
    assert len(make(name).update_many(np.full(length, value))) == 0


@given(scale=st.floats(1e-6, 1e6), shift=st.floats(-1e3, 1e3))
@settings(max_examples=15, deadline=None)
def test_gaussian_glr_does_not_depend_on_the_data_scale(scale: float, shift: float) -> None:
    rng = np.random.default_rng(11)
    xs = np.concatenate([rng.normal(0, 1, 1200), rng.normal(0.7, 1, 300)])
    base = GaussianGLR(warmup=200).update_many(xs)
    moved = GaussianGLR(warmup=200).update_many(xs * scale + shift)
    assert len(base) == 1 and abs(int(moved[0]) - int(base[0])) <= 1


def test_a_persisting_change_is_reported_once() -> None:
    rng = np.random.default_rng(6)
    xs = np.concatenate([rng.random(5000) < 0.05, rng.random(6000) < 0.15])
    # A long horizon makes a false alarm before the change (which would move
    # the warm-up into the change) negligible.
    alarms = BernoulliGLR(false_alarm_horizon=10**7).update_many(xs)
    assert len(alarms) == 1 and 5000 < alarms[0] < 5600


# -- golden alarm positions on seeded streams -----------------------------------


def test_golden_bernoulli() -> None:
    rng = np.random.default_rng(2024)
    xs = np.concatenate([rng.random(5000) < 0.08, rng.random(3000) < 0.12])
    assert [int(a) for a in BernoulliGLR().update_many(xs)] == [5648]
    assert [int(a) for a in BernoulliCUSUM().update_many(xs)] == [5665]


def test_golden_gaussian_mean_and_variance() -> None:
    rng = np.random.default_rng(2024)
    mean_shift = np.concatenate([rng.normal(100, 5, 3000), rng.normal(102.5, 5, 1000)])
    spread = np.concatenate([rng.normal(100, 5, 3000), rng.normal(100, 7.5, 1000)])
    assert [int(a) for a in GaussianGLR().update_many(mean_shift)] == [3052]
    # Normal scores cap a value at its rank beyond the warm-up: a wider spread shows a little later (3069 with
    # scores="robust"), the price of keeping the false-alarm rate on non-normal series (below).
    assert [int(a) for a in GaussianGLR().update_many(spread)] == [3097]
    assert [int(a) for a in GaussianGLR(scores="robust").update_many(spread)] == [3069]


@pytest.mark.parametrize("draw", [
    lambda rng, n: np.abs(rng.normal(size=n)),  # absolute errors of a regressor: skewed
    lambda rng, n: rng.standard_t(5, size=n),  # returns: heavy tails
    lambda rng, n: rng.lognormal(0, 0.5, size=n),
], ids=["abs-normal", "student-t5", "lognormal"])
def test_gaussian_glr_keeps_its_false_alarm_rate_on_non_normal_series(draw) -> None:  # type: ignore[no-untyped-def]
    """10 stationary streams of 6,000 at a horizon of 100,000: about 0.5 false alarms expected.

    With scores="robust" the same streams gave 35, 13 and 38 (measured): the median/MAD standardisation is
    calibrated for normal data only.
    """
    rng = np.random.default_rng(5)
    alarms = sum(len(GaussianGLR().update_many(draw(rng, 6000))) for _ in range(10))
    assert alarms <= 3


def test_golden_spikes() -> None:
    rng = np.random.default_rng(2024)
    xs = rng.normal(0, 0.01, 3000)
    xs[[400, 1234, 2999]] += [0.09, -0.07, 0.2]
    assert [int(a) for a in RobustSpikeDetector().update_many(xs)] == [400, 1234, 2999]


# -- registry and validation -----------------------------------------------------


@pytest.mark.parametrize(("name", "params", "bad"), [
    ("nope", {}, "name"),
    ("bernoulli_glr", {"false_alarm_horizon": 1}, "false_alarm_horizon"),
    ("bernoulli_glr", {"ratios": [0.5]}, "ratios"),
    ("bernoulli_glr", {"p0": 1.5}, "p0"),
    ("gaussian_glr", {"shifts": [], "variance_ratios": []}, "shifts"),
    ("gaussian_glr", {"bogus": 1}, "bogus"),
    ("gaussian_glr", {"clip": -1}, "clip"),
    ("page_hinkley", {"mode": "sideways"}, "mode"),
    ("kswin", {"stat_size": 200}, "stat_size"),
    ("spike", {"min_samples": 1}, "min_samples"),
])
def test_bad_config_names_the_parameter(name: str, params: dict[str, object], bad: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        build_detector(name, **params)
    assert info.value.name == bad
    assert isinstance(info.value, ValueError)


def test_known_p0_skips_the_warmup() -> None:
    detector = BernoulliGLR(p0=0.1, false_alarm_horizon=1000)
    assert detector.is_warm and detector.baseline == 0.1
    rng = np.random.default_rng(8)
    alarms = detector.update_many(np.concatenate([rng.random(200) < 0.1, np.ones(50)]))
    assert len(alarms) >= 1 and alarms[0] >= 200
