"""Benchmark the data monitor's drift tests: detection delay, false alarms and cost, block tests against sequential.

Run: ``python benchmarks/bench_monitors_data.py [--seeds 10] [--stationary-seeds 10]``.

Every stream is one model with 50 mixed features, all watched for drift: 10
normal, 10 lognormal, 10 Student-t(3), 8 Poisson counts, 6 zero-inflated
(60% zeros, else gamma) and 6 categorical (2 to 50 categories, one Zipf),
plus the prediction (a regressor's score, or a classifier's class).  The
reference is the first 2,000 predictions, blocks are 500.  Three monitors see
the same events:

* **before**: Driftline's block tests alone (``drift.sequential: false``:
  main's behaviour, KS and chi-squared per block, Holm-corrected, and the
  unseen-category rule);
* **after**: the block tests and the sequential tests together, on the same
  budget (``drift.sequential: true``, the default);
* **chunked**: a NannyML-style univariate drift baseline: per chunk of 500,
  KS for numbers and chi-squared for categories against the reference, each
  flagged at p < 0.05 with no correction (NannyML's default thresholds), and
  for the delay of a new category any unseen value in a chunk.

Changes start at a random offset inside a block (seeded), 3,000 predictions
after the reference, and the delay is from there to the first alert about the
changed series (its feature, or the predictions).  False alarms are alert
episodes fired on stationary streams (chunked: a feature flagged in a chunk
after an unflagged one), per 100,000 predictions tested, at a budget of one
false alarm per ``--horizon`` predictions (10,000, so that a run sees enough
of them to count).  The cost is the data monitor's CPU time per prediction
(``time.process_time``) on the stationary streams.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.distribution import chi_squared, ks  # noqa: E402
from detectors.monitors.data_monitor import DataMonitor  # noqa: E402
from detectors.registry import build_detector  # noqa: E402
from schemas.config import parse_monitor_config  # noqa: E402
from schemas.events import Alert, PredictionEvent  # noqa: E402

REFERENCE = 2000
WINDOW = 500
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
NUMERIC_KINDS = ("normal",) * 10 + ("lognormal",) * 10 + ("student_t3",) * 10 + ("poisson",) * 8 + ("zero_inflated",) * 6
CATEGORIES = (2, 3, 5, 10, 20, 50)  # the 50 are Zipf-distributed, the others uniform
NEW_CATEGORY_FEATURE = "c2"  # 5 categories
SHIFTED_FEATURE = "n0"  # normal
FEATURES = [f"n{j}" for j in range(len(NUMERIC_KINDS))] + [f"c{j}" for j in range(len(CATEGORIES))]
CHUNK_ALPHA = 0.05


def _numeric(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(10.0, 2.0, n)
    if kind == "lognormal":
        return rng.lognormal(0.0, 1.0, n)
    if kind == "student_t3":
        return rng.standard_t(3, n)
    if kind == "poisson":
        return rng.poisson(3.0, n).astype(float)
    return np.where(rng.random(n) < 0.6, 0.0, rng.gamma(2.0, 5.0, n))


def _categorical(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    if k == 50:
        p = 1.0 / np.arange(1, k + 1)
        return rng.choice(k, n, p=p / p.sum())
    return rng.integers(0, k, n)


@dataclass(frozen=True)
class Change:
    """What changes at ``at``: ``name`` (a feature, or ``prediction``) and how."""

    name: str
    kind: str  # "shift" (1 sd) or "new_category" (5% of traffic)
    task: str = "regression"


CHANGES = {
    "new category at 5% (feature c2, 5 categories)": Change(NEW_CATEGORY_FEATURE, "new_category"),
    "1 sd shift (feature n0, normal)": Change(SHIFTED_FEATURE, "shift"),
    "1 sd shift (prediction score, regressor)": Change("prediction", "shift"),
    "new class at 5% (predicted class)": Change("prediction", "new_category", "classification"),
}


def make_stream(seed: int, n: int, change: Change | None, at: int, task: str) -> list[PredictionEvent]:
    rng = np.random.default_rng(seed)
    columns: dict[str, list[object]] = {}
    after = np.arange(n) >= at
    for j, kind in enumerate(NUMERIC_KINDS):
        values = _numeric(rng, kind, n)
        if change is not None and change.kind == "shift" and change.name == f"n{j}":
            values = values + np.where(after, 2.0, 0.0)  # the normal features' sd is 2
        columns[f"n{j}"] = values.tolist()
    for j, k in enumerate(CATEGORIES):
        codes = _categorical(rng, k, n)
        names = np.array([f"k{c}" for c in range(k)] + ["new"])
        if change is not None and change.kind == "new_category" and change.name == f"c{j}":
            codes = np.where(after & (rng.random(n) < 0.05), k, codes)
        columns[f"c{j}"] = names[codes].tolist()
    score = rng.normal(0.0, 1.0, n)
    if change is not None and change.name == "prediction" and change.kind == "shift":
        score = score + np.where(after, 1.0, 0.0)
    if task == "classification":
        classes = np.array(["a", "b", "c", "new"])[np.where(
            after & (rng.random(n) < 0.05) if change is not None and change.name == "prediction" else False,
            3, rng.choice(3, n, p=[0.5, 0.3, 0.2]))]
        predictions: list[object] = classes.tolist()
    else:
        predictions = score.tolist()
    rows = [dict(zip(FEATURES, values)) for values in zip(*(columns[f] for f in FEATURES))]
    return [PredictionEvent.model_construct(prediction_id=f"p{i}", model="bench", model_version="1",
                                            event_time=T0 + timedelta(seconds=i), prediction=predictions[i],
                                            features=rows[i], segment=None, confidence=None, probabilities=None)
            for i in range(n)]


def config(task: str, horizon: float, sequential: bool) -> str:
    features = ", ".join(f"{name}: {{kind: {'numeric' if name.startswith('n') else 'categorical'}}}"
                         for name in FEATURES)
    return (f"models: {{bench: {{task: {task}, performance: {{threshold: {0.5 if task == 'classification' else 9}}},"
            f" detector: null, prediction_drift: true, features: {{{features}}}, drift: {{reference_size: {REFERENCE},"
            f" window: {WINDOW}, false_alarm_horizon: {horizon:g}, sequential: {str(sequential).lower()}}}}}}}")


def monitor_alerts(events: Sequence[PredictionEvent], task: str, horizon: float, sequential: bool,
                   batch: int = 500) -> tuple[list[tuple[int, Alert]], float]:
    """The data monitor's fired alerts (with their positions) and its CPU seconds."""
    spec = parse_monitor_config(config(task, horizon, sequential)).models["bench"]
    monitor = DataMonitor("bench", "1", spec, build_detector)
    # Calibrate (cached) outside the timed region: a throwaway monitor over the reference and one event.
    DataMonitor("bench", "1", spec, build_detector).observe(events[:REFERENCE + 1])
    out = []
    cpu = 0.0
    for first in range(0, len(events), batch):
        started = time.process_time()
        alerts, _ = monitor.observe(events[first:first + batch])
        cpu += time.process_time() - started
        out += [(int((a.event_time - T0).total_seconds()), a) for a in alerts if a.status == "fired"]
    return out, cpu


def chunked_flags(events: Sequence[PredictionEvent], names: Sequence[str]) -> list[tuple[int, str]]:
    """NannyML-style univariate drift: (chunk end position, series) flagged at p < 0.05, and any unseen category."""
    def column(name: str, chunk: Sequence[PredictionEvent]) -> list[object]:
        return [p.prediction if name == "prediction" else p.features[name] for p in chunk]

    reference = events[:REFERENCE]
    refs = {name: column(name, reference) for name in names}
    flags = []
    for first in range(REFERENCE, len(events) - WINDOW + 1, WINDOW):
        chunk = events[first:first + WINDOW]
        for name in names:
            values = column(name, chunk)
            if isinstance(values[0], float):
                flagged = ks(np.asarray(refs[name], dtype=float), np.asarray(values, dtype=float)).pvalue < CHUNK_ALPHA
            else:
                ref_counts, counts = Counter(refs[name]), Counter(values)
                result = chi_squared(ref_counts, counts)
                flagged = (result is not None and result.pvalue < CHUNK_ALPHA) or any(c not in ref_counts for c in counts)
            if flagged:
                flags.append((first + WINDOW - 1, name))
    return flags


def _about(alert: Alert, name: str) -> bool:
    return (alert.feature == name) if name != "prediction" else (alert.feature is None and alert.monitor != "estimated_performance")


def delays(label: str, change: Change, seeds: int, horizon: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"before": [], "after": [], "chunked": []}
    for seed in range(seeds):
        at = REFERENCE + 3000 + int(np.random.default_rng([seed, 99]).integers(WINDOW))
        events = make_stream(seed, at + 1500, change, at, change.task)
        for column, sequential in (("before", False), ("after", True)):
            fired = [i for i, a in monitor_alerts(events, change.task, horizon, sequential)[0]
                     if i >= at and _about(a, change.name)]
            out[column].append(fired[0] - at if fired else np.nan)
        flags = [i for i, name in chunked_flags(events, [change.name]) if i >= at]
        out["chunked"].append(flags[0] - at if flags else np.nan)
    return out


def false_alarms(seeds: int, n_tested: int, horizon: float) -> tuple[dict[str, int], dict[str, float], int]:
    counts = {"before": 0, "after": 0, "chunked": 0}
    cpu = {"before": 0.0, "after": 0.0}
    for seed in range(seeds):
        events = make_stream(1000 + seed, REFERENCE + n_tested, None, 0, "regression")
        for column, sequential in (("before", False), ("after", True)):
            fired, seconds = monitor_alerts(events, "regression", horizon, sequential)
            counts[column] += len(fired)
            cpu[column] += seconds
        previous: set[str] = set()
        by_chunk: dict[int, set[str]] = {}
        for i, name in chunked_flags(events, [*FEATURES, "prediction"]):
            by_chunk.setdefault(i, set()).add(name)
        for i in sorted(set(range(REFERENCE + WINDOW - 1, len(events), WINDOW))):
            flagged = by_chunk.get(i, set())
            counts["chunked"] += len(flagged - previous)
            previous = flagged
    return counts, cpu, seeds * n_tested


def _summary(values: list[float]) -> str:
    found = [v for v in values if not np.isnan(v)]
    if not found:
        return "missed"
    missed = len(values) - len(found)
    return f"{np.median(found):.0f} / {np.mean(found):.0f} / {max(found):.0f}" + (f" ({missed} missed)" if missed else "")


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="streams per change")
    parser.add_argument("--stationary-seeds", type=int, default=10)
    parser.add_argument("--stationary-predictions", type=int, default=20_000, help="tested per stationary stream")
    parser.add_argument("--horizon", type=float, default=10_000, help="false_alarm_horizon of the stationary runs")
    parser.add_argument("--delay-horizon", type=float, default=100_000, help="false_alarm_horizon of the delay runs")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out(f"Detection delay after the change, in predictions: median / mean / max over {args.seeds} seeds "
        f"(false_alarm_horizon {args.delay_horizon:,.0f}; 50 mixed features + predictions)")
    out(f"{'change':48} {'before (block tests)':>22} {'after (+ sequential)':>22} {'chunked (p<0.05)':>22}")
    for label, change in CHANGES.items():
        result = delays(label, change, args.seeds, args.delay_horizon)
        out(f"{label:48} {_summary(result['before']):>22} {_summary(result['after']):>22} "
            f"{_summary(result['chunked']):>22}")
    counts, cpu, tested = false_alarms(args.stationary_seeds, args.stationary_predictions, args.horizon)
    budget = tested / args.horizon
    out("")
    out(f"False alarms on stationary traffic: {args.stationary_seeds} streams x {args.stationary_predictions:,} tested "
        f"predictions, 50 mixed features + the score, false_alarm_horizon {args.horizon:,.0f} "
        f"(budget: {budget:.0f} in all, {1e5 / args.horizon:.1f} per 100k)")
    out(f"{'monitor':22} {'false alarms':>12} {'per 100k':>9} {'cpu us/prediction':>18}")
    for column in ("before", "after", "chunked"):
        us = f"{cpu[column] / (args.stationary_seeds * (REFERENCE + args.stationary_predictions)) * 1e6:.0f}" \
            if column in cpu else "-"
        out(f"{column:22} {counts[column]:>12} {counts[column] / tested * 1e5:>9.1f} {us:>18}")
    out(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
