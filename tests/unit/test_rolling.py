"""RollingMean: the mean after every value equals a naive per-position computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.exceptions import InvalidParameter
from detectors.rolling import SMALL_BATCH, RollingMean


def naive(values: list[float], window: int) -> list[float]:
    return [math.fsum(values[max(0, i + 1 - window) : i + 1]) / min(i + 1, window) for i in range(len(values))]


def feed(window: int, batches: list[list[float]]) -> tuple[RollingMean, list[float]]:
    rm = RollingMean(window)
    out: list[float] = []
    for batch in batches:
        means = rm.update_many(batch)
        assert len(means) == len(batch)
        out.extend(means.tolist())
    return rm, out


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 40),
    st.lists(st.lists(st.sampled_from([0.0, 1.0]), max_size=60), max_size=8),
)
def test_zero_one_losses_match_naive(window: int, batches: list[list[float]]) -> None:
    rm, got = feed(window, batches)
    flat = [x for b in batches for x in b]
    np.testing.assert_allclose(got, naive(flat, window), rtol=0, atol=1e-12)
    assert rm.n_seen == len(flat)
    assert rm.n_in_window == min(len(flat), window)
    if flat:
        assert rm.mean == pytest.approx(naive(flat, window)[-1], abs=1e-12)
    else:
        assert math.isnan(rm.mean)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 50),
    st.lists(st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=80), max_size=6),
)
def test_real_values_match_naive(window: int, batches: list[list[float]]) -> None:
    _, got = feed(window, batches)
    flat = [x for b in batches for x in b]
    expected = naive(flat, window)
    scale = max((abs(x) for x in flat), default=0.0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * (scale + 1.0))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.lists(st.floats(0, 100, allow_nan=False), max_size=150), st.data())
def test_result_does_not_depend_on_batching(window: int, values: list[float], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(values)), max_size=10)))
    bounds = [0, *cuts, len(values)]
    batches = [values[a:b] for a, b in zip(bounds, bounds[1:])]
    _, one_go = feed(window, [values])
    _, cut = feed(window, batches)
    np.testing.assert_allclose(cut, one_go, rtol=1e-9, atol=1e-9)


def test_docstring_example_and_empty_batch() -> None:
    rm = RollingMean(3)
    assert rm.update_many([]).tolist() == []
    assert rm.update_many([1.0, 2.0, 3.0, 4.0]).tolist() == [1.0, 1.5, 2.0, 3.0]
    assert rm.update_many([10.0]).tolist() == [pytest.approx(17 / 3)]
    assert rm.n_seen == 5


@pytest.mark.parametrize("window", [0, -3])
def test_window_must_be_positive(window: int) -> None:
    with pytest.raises(InvalidParameter) as info:
        RollingMean(window)
    assert info.value.name == "window"


def test_huge_value_leaving_the_window_does_not_poison_the_batch() -> None:
    got = RollingMean(2).update_many([1e17, 1.0, 1.0, 1.0]).tolist()
    assert got[2:] == [1.0, 1.0]  # naive: mean of [1, 1]; update_many returns [0.0, 0.0]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30),
    st.lists(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=2 * SMALL_BATCH), max_size=40),
)
def test_small_batches_give_the_general_paths_bits(window: int, batches: list[list[float]]) -> None:
    """The shortcuts for a few values (filling the window, or on a full one) add the same floats in the same order."""
    fast, general = RollingMean(window), RollingMean(window)
    for batch in batches:
        got = fast.update_many(batch)
        expected = general._update_general(np.asarray(batch, dtype=float))
        assert got.tobytes() == expected.tobytes()
        assert fast._tail.tobytes() == general._tail.tobytes() and fast.n_seen == general.n_seen
