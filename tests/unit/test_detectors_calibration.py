"""Calibration of thresholds on simulated stationary streams, and the distribution-drift helpers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors import BernoulliGLR, GaussianGLR
from collections import Counter

from detectors.distribution import chi_squared, holm, ks, mad_scale, robust_reference, unseen_rate


def mean_events_between_alarms(make, draw, n_events: int) -> float:
    alarms = 0
    for seed in range(8):
        alarms += len(make().update_many(draw(np.random.default_rng(seed), n_events // 8)))
    return n_events / max(alarms, 1)


@pytest.mark.parametrize("p", [0.02, 0.1, 0.3])
def test_bernoulli_glr_false_alarm_horizon_is_met(p: float) -> None:
    horizon = 2000
    # Events between alarms include the 200-event warm-up after each restart.
    run = mean_events_between_alarms(lambda: BernoulliGLR(false_alarm_horizon=horizon, warmup=200),
                                     lambda rng, n: rng.random(n) < p, 800_000)
    # At a low rate the 200-event warm-up sees a handful of errors; the
    # calibration then errs on the safe side (fewer false alarms, not more).
    assert 0.6 * horizon < run < 4 * (horizon + 200)


def test_gaussian_glr_false_alarm_horizon_is_met() -> None:
    horizon = 2000
    run = mean_events_between_alarms(lambda: GaussianGLR(false_alarm_horizon=horizon, warmup=200),
                                     lambda rng, n: rng.normal(3.0, 7.0, n), 800_000)
    assert 0.6 * horizon < run < 2.5 * (horizon + 200)


def test_longer_horizon_means_higher_threshold_and_fewer_alarms() -> None:
    rng = np.random.default_rng(0)
    xs = rng.normal(size=300_000)
    short, long = GaussianGLR(false_alarm_horizon=1000), GaussianGLR(false_alarm_horizon=100_000)
    n_short, n_long = len(short.update_many(xs)), len(long.update_many(xs))
    short.reset()
    long.reset()
    short.update_many(xs[:1000])
    long.update_many(xs[:1000])
    assert short.threshold < long.threshold
    assert n_short > 50 and n_long < 15


def test_ks_and_robust_spread() -> None:
    rng = np.random.default_rng(1)
    ref, same, moved = rng.normal(0, 1, 4000), rng.normal(0, 1, 4000), rng.normal(1, 1, 4000)
    assert ks(ref, moved).statistic == pytest.approx(stats.ks_2samp(ref, moved).statistic)
    assert ks(ref, same).pvalue > 0.001 > ks(ref, moved).pvalue
    # 1.4826 * MAD estimates a normal sample's standard deviation, whatever its scale.
    assert mad_scale(ref * 1000) == pytest.approx(1000, rel=0.05)
    assert robust_reference(np.array([2.0, 2.0, 2.0, 2.0])) == (2.0, 0.0)


def test_categorical_tests() -> None:
    ref = Counter({"a": 700, "b": 300})
    assert chi_squared(ref, Counter({"a": 70, "b": 30})).pvalue > 0.5
    assert chi_squared(ref, Counter({"a": 30, "b": 70})).pvalue < 1e-6
    assert unseen_rate(ref, Counter(["a", "c", "d", "b"])) == 0.5
    assert unseen_rate(ref, Counter(["c"] * 30)) == 1.0
    # Rare reference categories are pooled with unseen ones; a single common category leaves nothing to test.
    assert chi_squared(Counter({"a": 700, "b": 3, "c": 300}), Counter({"a": 70, "c": 30, "z": 20})).category == "<other>"
    assert chi_squared(Counter({"a": 700}), Counter({"a": 10})) is None


def test_multiple_testing_corrections() -> None:
    p = [0.001, 0.012, 0.02, 0.04, 0.3]
    assert holm(p, 0.05).tolist() == [True, True, False, False, False]
    null = np.random.default_rng(2).random((200, 20))
    assert sum(holm(row, 0.05).any() for row in null) <= 25
