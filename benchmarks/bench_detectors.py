"""Benchmark Driftline's detectors against river's on synthetic streams with known change points.

Run: ``python benchmarks/bench_detectors.py [--seeds 20] [--workers 2]``.  Every
drift stream changes at event 5000 and runs to event 10000; each detector
starts fresh on each seeded stream.  Prints one table: detection rate, median
and mean delay of the first alarm at or after the change, false alarms per 10k
events (before the change on drift streams; all alarms on stationary ones) and
updates per second through ``update_many``.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.registry import build_detector  # noqa: E402

CHANGE = 5000
LENGTH = 10_000
STATIONARY_LENGTH = 200_000
# River's detectors run about 10-100x slower; a shorter stationary stream
# still shows their false-alarm rates, which are orders of magnitude higher.
RIVER_STATIONARY_LENGTH = 20_000
# KSWIN runs a KS test per update (about 3,500 updates/s here).
KSWIN_STATIONARY_LENGTH = 10_000

BINARY = ["bernoulli_glr", "bernoulli_cusum", "adwin", "ddm", "eddm", "hddm_a", "hddm_w", "page_hinkley", "kswin"]
NUMERIC = ["gaussian_glr", "adwin", "page_hinkley", "kswin"]
OURS = {"bernoulli_glr", "bernoulli_cusum", "gaussian_glr"}


def _bern(rng: np.random.Generator, p: np.ndarray | float, n: int) -> np.ndarray:
    return (rng.random(n) < p).astype(float)


def _returns(rng: np.random.Generator, means: np.ndarray) -> np.ndarray:
    x = rng.normal(means, 0.01)
    spikes = rng.random(len(x)) < 0.002
    x[spikes] += rng.choice([-0.08, 0.08], spikes.sum())
    return x


def make_stream(kind: str, seed: int, length: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pre = np.arange(length) < CHANGE
    if kind == "bern 0.08->0.20":
        return _bern(rng, np.where(pre, 0.08, 0.20), length)
    if kind == "bern 0.08->0.12":
        return _bern(rng, np.where(pre, 0.08, 0.12), length)
    if kind == "bern gradual 0.08->0.20 over 2k":
        ramp = np.clip((np.arange(length) - CHANGE) / 2000, 0, 1)
        return _bern(rng, 0.08 + 0.12 * ramp, length)
    if kind == "new category 0 -> 3%":
        return _bern(rng, np.where(pre, 0.0, 0.03), length)
    if kind == "gauss mean +0.5sd (100, sd 5)":
        return rng.normal(np.where(pre, 100.0, 102.5), 5.0)
    if kind == "gauss sd x1.5 (100, sd 5)":
        return rng.normal(100.0, np.where(pre, 5.0, 7.5))
    if kind == "returns reversal + spikes":
        return _returns(rng, np.where(pre, 0.001, -0.004))
    if kind == "stationary bern 0.08":
        return _bern(rng, 0.08, length)
    if kind == "stationary gauss (100, sd 5)":
        return rng.normal(100.0, 5.0, length)
    if kind == "stationary returns + spikes":
        return _returns(rng, np.full(length, 0.001))
    raise ValueError(kind)


STREAMS = [
    ("bern 0.08->0.20", BINARY), ("bern 0.08->0.12", BINARY), ("bern gradual 0.08->0.20 over 2k", BINARY),
    ("new category 0 -> 3%", BINARY), ("gauss mean +0.5sd (100, sd 5)", NUMERIC),
    ("gauss sd x1.5 (100, sd 5)", NUMERIC), ("returns reversal + spikes", NUMERIC),
    ("stationary bern 0.08", BINARY), ("stationary gauss (100, sd 5)", NUMERIC),
    ("stationary returns + spikes", NUMERIC),
]


def run(job: tuple[str, str, int]) -> tuple[str, str, dict[str, float]]:
    kind, name, seeds = job
    stationary = kind.startswith("stationary")
    river_length = KSWIN_STATIONARY_LENGTH if name == "kswin" else RIVER_STATIONARY_LENGTH
    length = (STATIONARY_LENGTH if name in OURS else river_length) if stationary else LENGTH
    delays, false_alarms, watched, events, seconds = [], 0, 0, 0, 0.0
    detected = 0
    for seed in range(seeds):
        xs = make_stream(kind, 10_000 + seed, length)
        detector = build_detector(name)
        if name in OURS:
            # Calibrate (cached) outside the timed region.
            detector.clone().update_many(xs[:3000])
        start = time.perf_counter()
        alarms = detector.update_many(xs)
        seconds += time.perf_counter() - start
        events += len(xs)
        if stationary:
            false_alarms += len(alarms)
            watched += len(xs)
            continue
        false_alarms += int(np.sum(alarms < CHANGE))
        watched += CHANGE
        after = alarms[alarms >= CHANGE]
        if len(after):
            detected += 1
            delays.append(int(after[0]) - CHANGE)
    return kind, name, {
        "rate": float("nan") if stationary else detected / seeds,
        "median": float(np.median(delays)) if delays else float("nan"),
        "mean": float(np.mean(delays)) if delays else float("nan"),
        "fa": false_alarms / watched * 1e4,
        "ups": events / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [(kind, name, args.seeds) for kind, names in STREAMS for name in names]
    # The slowest jobs (KSWIN, stationary) first, so the pool stays busy.
    jobs.sort(key=lambda j: (j[1] != "kswin", not j[0].startswith("stationary")))
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = {(k, n): r for k, n, r in pool.map(run, jobs)}
    print(f"{'stream':34} {'detector':16} {'det.rate':>8} {'med.delay':>9} {'mean.delay':>10} "
          f"{'FA/10k':>8} {'updates/s':>11}")
    for kind, names in STREAMS:
        for name in names:
            r = results[(kind, name)]
            rate = "-" if np.isnan(r["rate"]) else f"{r['rate']:.2f}"
            med = "-" if np.isnan(r["median"]) else f"{r['median']:.0f}"
            mean = "-" if np.isnan(r["mean"]) else f"{r['mean']:.0f}"
            print(f"{kind:34} {name:16} {rate:>8} {med:>9} {mean:>10} {r['fa']:>8.2f} {r['ups']:>11,.0f}")
        print()
    print(f"{args.seeds} seeds per stream; change at event {CHANGE}; stationary streams {STATIONARY_LENGTH:,} "
          f"events (river: {RIVER_STATIONARY_LENGTH:,}, kswin: {KSWIN_STATIONARY_LENGTH:,}); wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
