"""``streams.metrics.observe_all`` gives the samples ``Histogram.observe`` gives, on the installed prometheus-client."""

from __future__ import annotations

import math

from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams.metrics import observe_all

BUCKETS = (0.05, 0.1, 1.0, 2.5, 60.0, 300.0)


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for s in histogram.collect()[0].samples}


@given(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=True), st.sampled_from(BUCKETS)), max_size=60))
def test_bulk_observation_matches_one_call_per_value(values: list[float]) -> None:
    one_by_one, bulk = (Histogram("delay", "d", ["model"], buckets=BUCKETS, registry=CollectorRegistry())
                        for _ in range(2))
    child = one_by_one.labels("m")
    for value in values:
        child.observe(value)
    observe_all(bulk.labels("m"), values)
    expected, got = _samples(one_by_one), _samples(bulk)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        # The sum is added up at once here, value by value there: equal but for rounding (or both inf/nan).
        assert got[key] == value or math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9) or (
            math.isnan(got[key]) and math.isnan(value)), key
