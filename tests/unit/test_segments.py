"""Per-segment monitors: a decay confined to one accent is caught in that segment, with a bounded segment count."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from detectors.monitors.episodes import MonitorResult
from detectors.monitors.monitor_set import MonitorSet
from detectors.registry import build_detector
from detectors.segment_baseline import BorrowedBaselineGLR
from schemas.config import parse_monitor_config
from schemas.events import Alert, LabelledExample, OutcomeEvent, PredictionEvent

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
ACCENTS = ("en-GB", "en-US", "en-IN", "en-AU")
CONFIG = """
models:
  asr:
    task: classification
    performance: {{window: 300, threshold: 0.85}}
    detector: {{name: bernoulli_glr, params: {{warmup: 500}}}}
    segments: {{max_segments: {max_segments}}}
"""


def stream(n: int = 12_000, change_at: int = 6_000, decaying: str = "en-IN", seed: int = 1) -> list[LabelledExample]:
    """92% right everywhere; from ``change_at`` the ``decaying`` accent drops to 60% (about 84% overall)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        accent = ACCENTS[int(rng.integers(len(ACCENTS)))]
        accuracy = 0.60 if (i >= change_at and accent == decaying) else 0.92
        t = T0 + timedelta(seconds=i)
        p = PredictionEvent(prediction_id=f"p{i}", model="asr", model_version="1", event_time=t,
                            prediction="a", segment=accent)
        actual = "a" if rng.random() < accuracy else "b"
        out.append(LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id=f"p{i}", event_time=t, actual=actual)))
    return out


def run(examples: list[LabelledExample], max_segments: int = 20, batch: int = 1000) -> tuple[MonitorSet, MonitorResult]:
    monitors, total = MonitorSet(parse_monitor_config(CONFIG.format(max_segments=max_segments)), build_detector), MonitorResult()
    for i in range(0, len(examples), batch):
        total.extend(monitors.observe(examples[i : i + batch]))
    return monitors, total


def test_a_decay_in_one_segment_alerts_for_that_segment_only() -> None:
    _, result = run(stream())
    fired = [a for a in result.alerts if a.status == "fired"]
    segment_alerts = [a for a in fired if a.segment is not None]
    assert segment_alerts and {a.segment for a in segment_alerts} == {"en-IN"}
    assert all(a.event_time >= T0 + timedelta(seconds=6000) for a in fired)
    assert all("segment en-IN" in a.message for a in segment_alerts)
    # Segment alerts inform; only the model-wide monitor may ask for a retrain.
    model_alert_ids = {a.alert_id for a in fired if a.segment is None}
    assert all(set(t.alert_ids) <= model_alert_ids for t in result.triggers)


def _per_monitor(alerts: list[Alert]) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = {}
    for a in alerts:
        out.setdefault(a.segment, []).append(a.alert_id)
    return out


@pytest.mark.parametrize("batch", [1, 333])
def test_segment_alerts_do_not_depend_on_batch_size(batch: int) -> None:
    # Each monitor's alerts (model-wide, per segment) come in the same order; how the
    # model-wide and segment streams interleave within one batch is not specified.
    examples = stream(n=8000, change_at=4000)
    reference = _per_monitor(run(examples, batch=8000)[1].alerts)
    assert reference.get("en-IN"), "the decaying segment must alert, or the comparison proves nothing"
    assert _per_monitor(run(examples, batch=batch)[1].alerts) == reference


def test_segments_beyond_the_limit_are_pooled() -> None:
    monitors, _ = run(stream(n=2000, change_at=2000), max_segments=2)
    segments = sorted(s for m, s in monitors.segment_monitors if m == "asr")
    assert len(segments) == 3 and MonitorSet.POOLED in segments
    pooled = monitors.segment_monitors[("asr", MonitorSet.POOLED)]
    named = [monitors.segment_monitors[("asr", s)] for s in segments if s != MonitorSet.POOLED]
    assert pooled.n_seen + sum(m.n_seen for m in named) == 2000


def test_many_segments_pool_into_one_monitor() -> None:
    """Thousands of distinct segments (user ids, say): the first max_segments get monitors, the rest one pool."""
    config = parse_monitor_config(
        "models: {m: {task: classification, performance: {threshold: 0.5}, segments: {max_segments: 20}, "
        "features: {x: {kind: numeric}}}}")
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    predictions = [PredictionEvent(prediction_id=f"p{i}", model="m", model_version="1", prediction="a",
                                   event_time=t0 + timedelta(seconds=i), features={"x": float(i % 7)},
                                   segment=f"user-{i}") for i in range(5_000)]
    monitors = MonitorSet(config, build_detector)
    monitors.observe_predictions(predictions)
    segments = sorted(str(s) for (_, _, s) in monitors.data_monitors if s is not None)
    assert len(segments) == 21 and "pooled-other" in segments
    assert monitors.data_monitors[("m", "1", "pooled-other")].n_seen == 5_000 - 20


def test_a_small_segment_is_watched_from_its_first_examples_on_a_borrowed_baseline() -> None:
    # A tenth of the traffic; its accuracy falls 0.93 -> 0.70 at model event 10,000, about its 1,000th example,
    # half-way through what its own GLR would still spend warming up.
    rng = np.random.default_rng(11)
    n, change = 14_000, 10_000
    which = rng.choice(4, size=n, p=(0.1, 0.3, 0.3, 0.3))
    right = rng.random(n) < np.where((which == 0) & (np.arange(n) >= change), 0.70, 0.93)
    examples = []
    for i in range(n):
        t = T0 + timedelta(seconds=i)
        p = PredictionEvent(prediction_id=f"p{i}", model="asr", model_version="1", event_time=t, prediction="a",
                            segment=f"s{which[i]}")
        examples.append(LabelledExample(prediction=p, outcome=OutcomeEvent(prediction_id=f"p{i}", event_time=t,
                                                                           actual="a" if right[i] else "b")))
    config = parse_monitor_config("models: {asr: {task: classification, performance: {window: 500, threshold: 0.85},"
                                  " segments: {max_segments: 10}}}")
    monitors, total = MonitorSet(config, build_detector), MonitorResult()
    for i in range(0, n, 500):
        total.extend(monitors.observe(examples[i:i + 500]))
    fired = [a for a in total.alerts if a.status == "fired"]
    assert all(a.event_time >= T0 + timedelta(seconds=change) for a in fired), fired
    first = min((a for a in fired if a.segment == "s0"), key=lambda a: a.event_time)
    assert first.detector == "bernoulli_glr" and first.event_time < T0 + timedelta(seconds=change + 1000)
    detector = monitors.segment_monitors[("asr", "s0")].detector
    assert isinstance(detector, BorrowedBaselineGLR) and monitors.pooled_rate("asr") == pytest.approx(0.07, abs=0.01)


@pytest.mark.parametrize("borrow", [None, 0.06])
def test_the_borrowing_detector_in_batches_equals_one_update_at_a_time(borrow: float | None) -> None:
    rng = np.random.default_rng(4)
    xs = np.r_[rng.random(2500) < 0.07, rng.random(3000) < 0.25].astype(float)
    loop, batched = BorrowedBaselineGLR(false_alarm_horizon=20_000), BorrowedBaselineGLR(false_alarm_horizon=20_000)
    if borrow is not None:
        loop.borrow(borrow)
        batched.borrow(borrow)
    one_by_one = []
    for i, x in enumerate(xs):
        loop.update(float(x))
        if loop.drift_detected:
            one_by_one.append(i)
    cuts = [0, *sorted(rng.choice(len(xs), 25, replace=False).tolist()), len(xs)]
    in_batches = [lo + int(a) for lo, hi in zip(cuts, cuts[1:]) for a in batched.update_many(xs[lo:hi])]
    assert one_by_one and in_batches == one_by_one
    assert pickle.loads(pickle.dumps(batched)).statistic == batched.statistic
    assert repr(BorrowedBaselineGLR().clone()) == repr(BorrowedBaselineGLR())
