"""Calibration of thresholds on simulated stationary streams, and the distribution-drift helpers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors import BernoulliGLR, GaussianGLR
from detectors.distribution import (
    CategoricalDrift, benjamini_hochberg, chi_squared, holm, jensen_shannon, ks, psi, unseen_rate, wasserstein,
)


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


def test_psi_ks_wasserstein() -> None:
    rng = np.random.default_rng(1)
    ref, same, moved = rng.normal(0, 1, 4000), rng.normal(0, 1, 4000), rng.normal(1, 1, 4000)
    assert psi(ref, same) < 0.02 < 0.25 < psi(ref, moved)
    assert ks(ref, moved).statistic == pytest.approx(stats.ks_2samp(ref, moved).statistic)
    assert ks(ref, same).pvalue > 0.001 > ks(ref, moved).pvalue
    assert wasserstein(ref * 1000, moved * 1000) == pytest.approx(1.0, abs=0.1)


def test_categorical_tests() -> None:
    ref = ["a"] * 700 + ["b"] * 300
    assert chi_squared(ref, ["a"] * 70 + ["b"] * 30).pvalue > 0.5
    assert chi_squared(ref, ["a"] * 30 + ["b"] * 70).pvalue < 1e-6
    assert jensen_shannon(ref, ref) == pytest.approx(0.0, abs=1e-9)
    assert unseen_rate(ref, ["a", "c", "d", "b"]) == 0.5
    drift = CategoricalDrift(ref, window=10)
    drift.update_many(["c"] * 30)
    assert drift.test()["unseen_rate"].statistic == 1.0


def test_multiple_testing_corrections() -> None:
    p = [0.001, 0.012, 0.02, 0.04, 0.3]
    assert holm(p, 0.05).tolist() == [True, True, False, False, False]
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True, True, True, False]
    null = np.random.default_rng(2).random((200, 20))
    assert sum(holm(row, 0.05).any() for row in null) <= 25
