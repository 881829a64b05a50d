"""The join's memory for what it must remember, and its speed, offline (no Kafka).

Run: ``python benchmarks/bench_join.py [--pairs 300000]``.  Joins ``--pairs``
prediction/outcome pairs, one every millisecond of event time, with the
default one-hour TTL, so every joined id is still remembered at the end (for
duplicate checks).  Reports the traced bytes the joiner holds per joined id
(tracemalloc, after the events themselves are dropped) and joins per second
in a second, untraced pass; the pure-Python dict insert of the same ids is
timed alongside as the baseline for the speed ratio.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.ingest.join import OutcomeJoiner
from schemas.events import OutcomeEvent, PredictionEvent  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _pairs(n: int) -> list[tuple[PredictionEvent, OutcomeEvent]]:
    out = []
    for i in range(n):
        t = T0 + timedelta(milliseconds=i)
        pid = f"speech-asr-{i:012d}"
        out.append((PredictionEvent(prediction_id=pid, model="speech-asr", model_version="1", event_time=t,
                                    prediction="yes"),
                    OutcomeEvent(prediction_id=pid, event_time=t + timedelta(milliseconds=500), actual="yes")))
    return out


def _join_all(joiner: OutcomeJoiner[int], pairs: list[tuple[PredictionEvent, OutcomeEvent]]) -> int:
    n_joined = 0
    for i, (prediction, outcome) in enumerate(pairs):
        joiner.add_prediction(prediction, i)
        n_joined += joiner.add_outcome(outcome, i) is not None
        if i % 1000 == 0:
            joiner.expire()
    return n_joined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300_000)
    args = parser.parse_args()

    # Memory: the events are built outside the trace and dropped afterwards; what stays is the joiner's own.
    pairs = _pairs(args.pairs)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    joiner: OutcomeJoiner[int] = OutcomeJoiner(ttl_seconds=3600)
    assert _join_all(joiner, pairs) == args.pairs
    del pairs
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert joiner.n_pending == 0

    # Speed, untraced, against a dict insert of the same ids in the same run.
    pairs = _pairs(args.pairs)
    started = time.perf_counter()
    _join_all(OutcomeJoiner(ttl_seconds=3600), pairs)
    join_seconds = time.perf_counter() - started
    started = time.perf_counter()
    baseline: dict[str, int] = {}
    for i, (prediction, _) in enumerate(pairs):
        baseline[prediction.prediction_id] = i
    dict_seconds = time.perf_counter() - started

    print(f"{args.pairs:,} pairs joined, all remembered for the TTL")
    print(f"joiner holds {held / 2**20:.1f} MiB: {held / args.pairs:.0f} bytes per joined id")
    print(f"joins/s {args.pairs / join_seconds:,.0f}; dict inserts/s {args.pairs / dict_seconds:,.0f}; "
          f"ratio {dict_seconds / join_seconds:.3f}")


if __name__ == "__main__":
    main()
