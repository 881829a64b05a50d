"""The pure path of one workload, offline, in a process of its own: events/s and peak resident memory.

``JoinStage`` (decode, join, order) then ``MonitorSet.observe_predictions`` and
``.observe``, batch by batch, each model's items gathered into batches of ``monitor_batch_items`` as the
worker's monitor stage gathers them (:mod:`detectors.monitors.scoring_batches`; the worker also scores a
model's items once they have waited ``monitor_batch_wait_seconds``, which offline, with no wall clock, never
happens before the end).  Run
alone so that its peak resident memory (``VmHWM``) is this path's and nothing
else's; prints one JSON object for ``bench_worker.py``.

    python benchmarks/offline_path.py models1000 200000
"""

from __future__ import annotations

import json
import math
import os
import pickle
import resource
import sys
import time
from pathlib import Path

from detectors.ingest.merge import Held
from detectors.ingest.stage import JoinStage, RawRecord
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.scoring_batches import ScoringBatches
from detectors.registry import build_detector
from schemas.config import parse_monitor_config
from streams.gc_tuning import tune_garbage_collection
from streams.settings import load_settings
from workloads import WORKLOADS

__all__ = ["proc_cpu_seconds", "proc_status_kib", "run"]


def proc_status_kib(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def proc_cpu_seconds(pid: int | str) -> float:
    """CPU seconds (user + system) the process has used so far, every thread of it, from ``/proc/<pid>/stat``."""
    # The command name (field 2) may hold spaces: the fields that follow are counted from its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(name: str, n_predictions: int) -> dict[str, float]:
    workload = WORKLOADS[name]
    settings = load_settings()
    monitors = MonitorSet(parse_monitor_config(workload.config()), build_detector)
    stage: JoinStage[int] = JoinStage(settings.join_ttl_seconds, settings.max_event_bytes)
    rss_before = proc_status_kib("self", "VmRSS")
    join_s = monitor_s = 0.0
    n_alerts = n_triggers = n_examples = 0

    gathered: ScoringBatches[int] = ScoringBatches(settings.monitor_batch_items, math.inf)

    def monitor(predictions, examples, everything: bool = False) -> None:  # type: ignore[no-untyped-def]
        nonlocal n_alerts, n_triggers, n_examples
        gathered.add([Held(0, p.model, p) for p in predictions], [Held(0, e.prediction.model, e) for e in examples],
                     wall_time=0.0)
        due = gathered.take_all() if everything else gathered.due(wall_time=0.0)
        predictions, examples = [h.item for h in due[0]], [h.item for h in due[1]]
        for result in (monitors.observe_predictions(predictions), monitors.observe(examples)):
            n_alerts += len(result.alerts)
            n_triggers += len(result.triggers)
        n_examples += len(examples)

    # The worker's micro-batch: up to batch_size messages, a prediction and its outcome side by side.
    pairs_per_batch = max(settings.batch_size // 2, 1)
    for chunk in workload.chunks(n_predictions):
        for first in range(0, len(chunk), pairs_per_batch):
            batch = [RawRecord(side, value, 0) for _key, prediction, outcome in chunk[first:first + pairs_per_batch]
                     for side, value in (("prediction", prediction), ("outcome", outcome))]
            t0 = time.perf_counter()
            out = stage.process(batch)
            t1 = time.perf_counter()
            monitor(out.predictions, out.labelled)
            join_s += t1 - t0
            monitor_s += time.perf_counter() - t1
    t0 = time.perf_counter()
    rest = stage.flush()
    monitor(rest.predictions, rest.labelled, everything=True)
    monitor_s += time.perf_counter() - t0
    data = monitors.data_monitors.values()
    return {
        "events": 2 * n_predictions,
        "join_s": join_s,
        "monitor_s": monitor_s,
        "examples": n_examples,
        "predictions_watched": sum(monitors.n_predictions.values()),
        "windows_judged": sum(max(0, (m.n_seen - m.spec.drift.reference_size) // m.spec.drift.window) for m in data),
        "alerts": n_alerts,
        "triggers": n_triggers,
        "models": workload.n_models,
        "rss_before_kib": rss_before,
        "rss_end_kib": proc_status_kib("self", "VmRSS"),
        "peak_rss_kib": proc_status_kib("self", "VmHWM"),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "pickled_state_bytes": len(pickle.dumps((monitors.monitors, monitors.data_monitors))),
    }


if __name__ == "__main__":
    tune_garbage_collection()  # as `driftline backtest` and the worker run
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]))))
