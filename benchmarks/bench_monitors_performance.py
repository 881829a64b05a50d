"""Benchmark the monitors of issue 13: calibrated estimates, one false-alarm budget per model, segments watched early.

Run: ``python benchmarks/bench_monitors_performance.py [--seeds 10] [--part 1 2 3]``.

Every table compares

* **before**: the code on git branch ``main`` (``git archive main`` into a temporary directory, run in a subprocess
  with that directory on ``PYTHONPATH``), so the old behaviour is the old code, not a re-implementation;
* **after**: the code of this checkout;
* where one fits (part 1), a **chunked CBPE-style baseline**: scikit-learn's ``IsotonicRegression`` fitted on the
  first 5,000 labelled examples, the mean calibrated probability of each chunk of 5,000 predictions, an alert when a
  chunk's estimate is below the threshold (the same threshold as ours, not NannyML's reference-spread bands).

Both codes are fed the same seeded streams through ``MonitorSet.observe_predictions`` and ``MonitorSet.observe``
with batches of 500, each prediction's label 2,000 predictions later.

Part 1: a classifier whose accuracy at confidence ``c`` is ``c + offset`` (under-confident for ``offset > 0``),
accuracy about 0.944, threshold 0.93, estimate window 1,000.  Stable streams of 30,000 predictions count false
alarms; drift streams drop the accuracy 3 points at prediction 20,000 (harder inputs: the confidences fall, the
calibration holds) and measure the delay of the first estimate alert after it.  "isotonic, first 2,000 only" is
the calibration fitted once on the version's first 2,000 labels; the default refits at each doubling up to 16,000, then
every 2,000 labels on the latest 16,000.
The estimation error is measured
with a window of 5,000, at the end of each block of 5,000 predictions after the drop, against the realized accuracy
of that block.

Part 2: stationary streams of a segmented model (four segments with 10/20/30/40% of traffic and accuracies
0.95/0.92/0.90/0.96) with five numeric features, one categorical and the predictions watched; a budget of 20,000
model events between false alarms.  Every alert a change detector or a drift test raised is a false alarm
(thresholds are set where they never fire).

Part 3: a segment with 10% of traffic whose accuracy falls 0.93 -> 0.70 at model event 10,000 (about its 1,000th
example); the other three segments stay at 0.93.  Delay in model events from the change to the segment's first
alert, and false alarms elsewhere before the change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
BATCH = 500
LABEL_DELAY = 2000

# ---------------------------------------------------------------- streams


def _events(code: str, n: int, confidence: np.ndarray, right: np.ndarray, segments: list[str] | None = None,
            features: dict[str, np.ndarray] | None = None) -> tuple[list[Any], list[Any]]:
    from schemas.events import LabelledExample, OutcomeEvent, PredictionEvent

    predictions, labelled = [], []
    for i in range(n):
        p = PredictionEvent(
            prediction_id=f"{code}-{i}", model="m", model_version="1", prediction="yes",
            confidence=round(float(confidence[i]), 5), event_time=T0 + timedelta(seconds=i),
            segment=segments[i] if segments else None,
            features={k: (float(v[i]) if v.dtype.kind == "f" else str(v[i])) for k, v in (features or {}).items()})
        predictions.append(p)
        labelled.append(LabelledExample(prediction=p, outcome=OutcomeEvent(
            prediction_id=p.prediction_id, event_time=p.event_time + timedelta(seconds=LABEL_DELAY),
            actual="yes" if right[i] else "no")))
    return predictions, labelled


def _replay(config_yaml: str, predictions: list[Any], labelled: list[Any],
            on_block: Callable[[Any, int], None] | None = None) -> list[Any]:
    from detectors.monitors.monitor_set import MonitorSet
    from detectors.registry import build_detector
    from schemas.config import parse_monitor_config

    monitors = MonitorSet(parse_monitor_config(config_yaml), build_detector)
    alerts = []
    for start in range(0, len(predictions), BATCH):
        alerts += monitors.observe_predictions(predictions[start:start + BATCH]).alerts
        alerts += monitors.observe(labelled[max(0, start - LABEL_DELAY):max(0, start + BATCH - LABEL_DELAY)]).alerts
        if on_block is not None:
            on_block(monitors, start + BATCH)
    return alerts


def _index(alert: Any) -> int:
    return int((alert.event_time - T0).total_seconds())


def _estimate_of(monitors: Any) -> float:
    """The current estimated accuracy, whichever code is running (main kept it on the data monitor)."""
    estimates = getattr(monitors, "estimate_monitors", None)
    if estimates is not None:
        return float(estimates[("m", "1")].estimates["accuracy"])
    return float(monitors.data_monitors[("m", "1", None)].estimated_accuracy)


# ------------------------------------------------------------------ part 1

ACCURACY, DROP, THRESHOLD = 0.944, 0.03, 0.93
P1_STABLE, P1_DRIFT, P1_CHANGE = 30_000, 40_000, 20_000
OFFSETS = (-0.03, -0.015, 0.0, 0.015, 0.03)


def _part1_stream(seed: int, offset: float, n: int, change: int | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, int(round(offset * 1000)) + 100, n])
    mean = np.full(n, ACCURACY - offset)
    if change is not None:
        mean[change:] -= DROP
    confidence = np.clip(rng.normal(mean, 0.03), 0.5, 0.999)
    p_right = np.clip(confidence + offset, 0.0, 1.0)
    return confidence, rng.random(n) < p_right


def _part1_config(window: int, calibration: str | None) -> str:
    if calibration == "isotonic-once":
        extra = ", max_calibration_size: 2000, keep_refitting: false"  # fitted on the first 2,000 labels only
    else:
        extra = f", calibration: {calibration}" if calibration else ""
    return ("models: {m: {task: classification, performance: {threshold: 0.5}, detector: null,"
            f" estimated_performance: {{threshold: {THRESHOLD}, window: {window}{extra}}}}}}}")


def part1(seeds: int, calibration: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for offset in OFFSETS:
        false_alarms, delays, missed, errors, to_expected = 0, [], 0, [], []
        for seed in range(seeds):
            confidence, right = _part1_stream(seed, offset, P1_STABLE, None)
            predictions, labelled = _events("s", P1_STABLE, confidence, right)
            alerts = _replay(_part1_config(1000, calibration), predictions, labelled)
            false_alarms += sum(a.status == "fired" and a.monitor == "estimated_performance" for a in alerts)

            confidence, right = _part1_stream(seed, offset, P1_DRIFT, P1_CHANGE)
            predictions, labelled = _events("d", P1_DRIFT, confidence, right)
            fired = [_index(a) for a in _replay(_part1_config(1000, calibration), predictions, labelled)
                     if a.status == "fired" and a.monitor == "estimated_performance"]
            after = [i - P1_CHANGE for i in fired if i >= P1_CHANGE]
            if after and not [i for i in fired if i < P1_CHANGE]:
                delays.append(after[0])
            else:
                missed += 1  # never fired, or already open from a false alarm: the drop raised nothing new

            blocks: list[tuple[int, float]] = []

            def read(monitors: Any, upto: int, blocks: list[tuple[int, float]] = blocks) -> None:
                if upto % 5000 == 0 and upto > P1_CHANGE:
                    blocks.append((upto, _estimate_of(monitors)))

            _replay(_part1_config(5000, calibration), predictions, labelled, read)
            errors += [abs(estimate - float(right[upto - 5000:upto].mean())) for upto, estimate in blocks]
            expected = np.clip(confidence + offset, 0.0, 1.0)  # each prediction's chance of being right
            to_expected += [abs(estimate - float(expected[upto - 5000:upto].mean())) for upto, estimate in blocks]
        out[str(offset)] = {"false_alarms": false_alarms, "delays": delays, "missed": missed, "errors": errors,
                            "to_expected": to_expected}
    return out


def part1_cbpe(seeds: int) -> dict[str, Any]:
    """The chunked CBPE-style baseline (scikit-learn isotonic on the first 5,000 labelled, chunks of 5,000)."""
    from sklearn.isotonic import IsotonicRegression

    chunk = 5000
    out: dict[str, Any] = {}
    for offset in OFFSETS:
        false_alarms, delays, missed, errors = 0, [], 0, []
        for seed in range(seeds):
            for n, change in ((P1_STABLE, None), (P1_DRIFT, P1_CHANGE)):
                confidence, right = _part1_stream(seed, offset, n, change)
                confidence = np.round(confidence, 5)
                iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(confidence[:chunk], right[:chunk])
                # The reference chunk is where the calibration was fitted; monitoring starts after it.
                fired = []
                for lo in range(chunk, n, chunk):
                    estimate = float(iso.predict(confidence[lo:lo + chunk]).mean())
                    if change is not None and lo >= change:
                        errors.append(abs(estimate - float(right[lo:lo + chunk].mean())))
                    if estimate < THRESHOLD:
                        fired.append(lo + chunk - 1)
                if change is None:
                    false_alarms += bool(fired)  # one open alert: NannyML reports per chunk, a pager once
                else:
                    after = [i - change for i in fired if i >= change]
                    if after and not [i for i in fired if i < change]:
                        delays.append(after[0])
                    else:
                        missed += 1
        out[str(offset)] = {"false_alarms": false_alarms, "delays": delays, "missed": missed, "errors": errors}
    return out


def part1_oracle(seeds: int) -> dict[str, Any]:
    """The noise floor: each block's expected accuracy (the mean chance of being right) against its realized one.

    Realized accuracy over 5,000 predictions at about 0.914 has a standard deviation of
    ``sqrt(0.914 * 0.086 / 5000) = 0.004``, so even a perfect estimate misses 0.01 on about 1.2% of blocks.
    """
    out: dict[str, Any] = {}
    for offset in OFFSETS:
        errors = []
        for seed in range(seeds):
            confidence, right = _part1_stream(seed, offset, P1_DRIFT, P1_CHANGE)
            expected = np.clip(confidence + offset, 0.0, 1.0)
            for upto in range(P1_CHANGE + 5000, P1_DRIFT + 1, 5000):
                errors.append(abs(float(expected[upto - 5000:upto].mean()) - float(right[upto - 5000:upto].mean())))
        out[str(offset)] = {"false_alarms": "-", "delays": [], "missed": "-", "errors": errors, "to_expected": []}
    return out


# ------------------------------------------------------------------ part 2

P2_EVENTS, P2_BUDGET = 100_000, 20_000
SHARES, ACCURACIES = (0.1, 0.2, 0.3, 0.4), (0.95, 0.92, 0.90, 0.96)
P2_CONFIG = f"""
models:
  m:
    task: classification
    performance: {{threshold: 0.5, window: 500}}
    detector: {{name: bernoulli_glr, params: {{false_alarm_horizon: {P2_BUDGET}}}}}
    segments: {{max_segments: 10}}
    features: {{f0: {{kind: numeric}}, f1: {{kind: numeric}}, f2: {{kind: numeric}}, f3: {{kind: numeric}},
               f4: {{kind: numeric}}, c0: {{kind: categorical}}}}
    prediction_drift: true
    drift: {{reference_size: 2000, window: 500, false_alarm_horizon: {P2_BUDGET}}}
    retrain: {{enabled: false}}
"""


def part2(seeds: int) -> dict[str, Any]:
    counts: dict[str, int] = {"performance": 0, "segment_performance": 0, "data": 0, "segment_data": 0}
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 2])
        which = rng.choice(len(SHARES), size=P2_EVENTS, p=SHARES)
        right = rng.random(P2_EVENTS) < np.asarray(ACCURACIES)[which]
        features = {f"f{j}": rng.normal(size=P2_EVENTS) for j in range(5)}
        features["c0"] = rng.choice(np.array(["a", "b", "c", "d"]), size=P2_EVENTS, p=[0.4, 0.3, 0.2, 0.1])
        predictions, labelled = _events("b", P2_EVENTS, np.full(P2_EVENTS, 0.9), right,
                                        [f"s{k}" for k in which], features)
        for alert in _replay(P2_CONFIG, predictions, labelled):
            if alert.status != "fired" or alert.detector.startswith("threshold") or alert.detector == "unseen_rate":
                continue
            side = "performance" if alert.monitor == "performance" else "data"
            counts[("segment_" if alert.segment else "") + side] += 1
    return {"counts": counts, "events": seeds * P2_EVENTS}


# ------------------------------------------------------------------ part 3

P3_EVENTS, P3_CHANGE = 16_000, 10_000
P3_CONFIG = """
models:
  m:
    task: classification
    performance: {threshold: 0.85, window: 500}
    detector: {name: bernoulli_glr, params: {false_alarm_horizon: 100000}}
    segments: {max_segments: 10}
    retrain: {enabled: false}
"""


def part3(seeds: int) -> dict[str, Any]:
    delays, missed, false_alarms, detectors, where = [], 0, 0, [], []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 3])
        which = rng.choice(4, size=P3_EVENTS, p=(0.1, 0.3, 0.3, 0.3))
        accuracy = np.where((which == 0) & (np.arange(P3_EVENTS) >= P3_CHANGE), 0.70, 0.93)
        right = rng.random(P3_EVENTS) < accuracy
        predictions, labelled = _events("g", P3_EVENTS, np.full(P3_EVENTS, 0.9), right, [f"s{k}" for k in which])
        fired = [a for a in _replay(P3_CONFIG, predictions, labelled) if a.status == "fired"]
        early = [a for a in fired if _index(a) < P3_CHANGE]
        false_alarms += len(early)
        where += [f"{a.segment or 'model'} {a.detector} at {_index(a)}" for a in early]
        mine = [a for a in fired if a.segment == "s0" and _index(a) >= P3_CHANGE]
        if mine:
            delays.append(_index(mine[0]) - P3_CHANGE)
            detectors.append(mine[0].detector)
        else:
            missed += 1
    return {"delays": delays, "missed": missed, "false_alarms": false_alarms, "detectors": detectors,
            "false_alarm_where": where}


# ---------------------------------------------------------------- running

PARTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "1": lambda seeds: part1(seeds, None),
    "1-none": lambda seeds: part1(seeds, "none"),
    "1-histogram": lambda seeds: part1(seeds, "histogram"),
    "1-once": lambda seeds: part1(seeds, "isotonic-once"),
    "1-cbpe": part1_cbpe,
    "1-oracle": part1_oracle,
    "2": part2,
    "3": part3,
}


def _main_snapshot() -> Path:
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "main"], check=True, capture_output=True,
                         text=True).stdout.strip()
    where = Path(tempfile.gettempdir()) / f"driftline-bench-main-{sha[:12]}"
    if not (where / "detectors").exists():
        where.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "main"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def _run_before(part: str, seeds: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(_main_snapshot())}
    done = subprocess.run([sys.executable, __file__, "--worker", part, "--seeds", str(seeds)], env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.median(values):.0f} / {max(values):.0f}"


def _print_part1(seeds: int) -> None:
    rows = {"before (main: mean confidence)": _run_before("1", seeds),
            "after, calibration: none": PARTS["1-none"](seeds),
            "after, isotonic, first 2,000 only": PARTS["1-once"](seeds),
            "after, isotonic (default)": PARTS["1"](seeds),
            "after, histogram": PARTS["1-histogram"](seeds)}
    try:
        rows["CBPE-style, chunks of 5,000"] = PARTS["1-cbpe"](seeds)
    except ImportError:
        print("(scikit-learn is not installed: no CBPE-style baseline)")
    rows["oracle: the expected accuracy"] = PARTS["1-oracle"](seeds)
    print(f"\nPart 1: label-free accuracy estimate; accuracy {ACCURACY} -> {ACCURACY - DROP:.3f} at {P1_CHANGE}, "
          f"threshold {THRESHOLD}, {seeds} seeds per row and offset")
    print("offset = accuracy - confidence (+: under-confident).  FA: estimate alerts on stable streams of "
          f"{P1_STABLE}; delay after the drop, median / max (missed: never fired, or already open);")
    print("error: |estimate - realized accuracy| over blocks of 5,000 after the drop: median / max / share within 0.01;")
    print("to expected: the same against the block's expected accuracy (its mean chance of being right), which")
    print("leaves out the realized accuracy's own sampling noise (sd 0.004 over 5,000: see the oracle row)")
    print(f"{'method':34} {'offset':>7} {'FA':>4} {'delay':>13} {'missed':>7} {'error':>22} {'to expected':>22}")

    def summary(values: list[float]) -> str:
        errors = np.asarray(values)
        return f"{np.median(errors):.4f} / {errors.max():.4f} / {(errors <= 0.01).mean():4.0%}" if len(errors) else "-"

    for name, result in rows.items():
        for offset in OFFSETS:
            r = result[str(offset)]
            print(f"{name:34} {offset:>+7.3f} {r['false_alarms']:>4} {_stats(r['delays']):>13} {r['missed']:>7} "
                  f"{summary(r['errors']):>22} {summary(r.get('to_expected', [])):>22}")


def _before_after(part: str, seeds: int) -> dict[str, dict[str, Any]]:
    return {"before (main)": _run_before(part, seeds), "after": PARTS[part](seeds)}


def _print_part2(seeds: int) -> None:
    header = (f"\nPart 2: false alarms on stationary segmented streams, budget {P2_BUDGET} model events between "
              f"false alarms ({100_000 / P2_BUDGET:.0f} per 100k events at most); {seeds} seeds x {P2_EVENTS} events\n"
              f"{'code':16} {'model perf':>11} {'segment perf':>13} {'data':>6} {'segment data':>13} {'total':>6} "
              f"{'per 100k':>9} {'budget':>7}")
    print(header)
    for name, result in _before_after("2", seeds).items():
        c = result["counts"]
        total = sum(c.values())
        per = total / result["events"] * 100_000
        print(f"{name:16} {c['performance']:>11} {c['segment_performance']:>13} {c['data']:>6} "
              f"{c['segment_data']:>13} {total:>6} {per:>9.2f} {100_000 / P2_BUDGET:>7.2f}")


def _print_part3(seeds: int) -> None:
    rows = _before_after("3", seeds)
    print(f"\nPart 3: a 10% segment's accuracy 0.93 -> 0.70 at model event {P3_CHANGE} (its ~1,000th example); "
          f"target: an alarm within 1,000 model events; {seeds} seeds")
    print(f"{'code':16} {'delay median / max':>19} {'within 1000':>12} {'missed':>7} {'FA before change':>17}  "
          "first detector")
    for name, result in rows.items():
        delays = result["delays"]
        within = sum(d <= 1000 for d in delays)
        first = ", ".join(f"{d}: {result['detectors'].count(d)}" for d in sorted(set(result["detectors"])))
        print(f"{name:16} {_stats(delays):>19} {within:>9}/{seeds:<2} {result['missed']:>7} "
              f"{result['false_alarms']:>17}  {first}")
        if result["false_alarm_where"]:
            print(f"{'':16} false alarms: {'; '.join(result['false_alarm_where'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--part", nargs="*", default=["1", "3", "2"], choices=["1", "2", "3"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        # A subprocess of the "before" column: the code under PYTHONPATH, results as one JSON line.
        sys.path.insert(0, os.environ["PYTHONPATH"])
        from detectors.calibration import use_cache_dir

        use_cache_dir(Path(tempfile.gettempdir()) / "driftline-bench-calibration")
        print(json.dumps(PARTS[args.worker](args.seeds)))
        return
    sys.path.insert(0, str(ROOT))
    from detectors.calibration import use_cache_dir

    use_cache_dir(Path(tempfile.gettempdir()) / "driftline-bench-calibration")
    printers = {"1": _print_part1, "2": _print_part2, "3": _print_part3}
    for part in args.part:
        printers[part](args.seeds)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
