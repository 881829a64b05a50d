"""Worker throughput and memory on the real broker, against a plain confluent-kafka consume-and-validate ceiling.

For each workload (see ``benchmarks/workloads.py``):

* the pure path offline, in a process of its own (``offline_path.py``):
  decode + join, then the monitors, events/s and peak resident memory;
* on a local Kafka, the same events: a bare consumer that reads and validates
  them (the ceiling, before and after); a faust-streaming agent that only
  counts them (``faust_count.py``: the framework's own limit); a ``driftline
  worker`` subprocess, timed from its first read to its ingest stage having
  joined every event, and to its monitors having scored every example and
  watched every prediction, with its peak resident memory (``VmHWM``); then two
  workers of one app id over a copy of the backlog in topics of their own.

A broker the benchmark starts is warmed first (:func:`warm_up`): a worker and the ceiling read a small
throwaway backlog, so that the JVM has compiled the broker's produce, fetch and group paths before anything is
timed.  On a cold broker the first workload's worker ran 25,600 events/s and the same run repeated 36,900
(speech, 100k predictions, this 2-core machine; the broker's CPU time halved), and the ceiling's before and after
differed by half: that was the JVM's compiler, not the worker.  A production broker has been up for weeks.

Then, once, a steady-rate run (``steady_rate.py``): ``--steady-rate`` events/s
sent for ``--steady-seconds`` into fresh topics while a worker reads them; its
alert latency (p50/p99) and consumer lag when the producer stops.

The ceiling and the workers read the same backlog from the same broker in the
same run, so the ratios (every events/s figure is printed next to its ratio to
the mean ceiling) are meaningful on a noisy shared machine even when the
absolute figures are not.

    python benchmarks/bench_worker.py [--workload speech|features20|models1000|all] [--events N]
                                      [--steady-rate 10000] [--steady-seconds 60]

Prints one table per workload and one for the steady-rate run; the figures in issue notes come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Producer

from baselines import ceiling, faust_count_rate
from schemas.config import parse_monitor_config
from schemas.topics import TopicNames
from steady_rate import OUTCOME_DELAY_SECONDS, SteadyRun, run_steady
from streams.localkafka import LocalKafka
from streams.processes import free_port
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics
from workers import WATCH_STALL_SECONDS, WorkerRun, end_offsets, fresh_settings, time_workers, worker_env
from workloads import WORKLOADS, Workload

HERE = Path(__file__).resolve().parent


def produce_backlog(bootstrap: str, topics: TopicNames, workload: Workload, n_predictions: int) -> None:
    # Idempotence keeps each partition in production order: without it, a batch retried while a fresh
    # broker elects leaders lands after later batches, and its pairs expire (seen: 4,173 of 20,000).
    producer = Producer({**load_settings(kafka_bootstrap=bootstrap).confluent_config(), "partitioner": "murmur2_random", "linger.ms": 50,
                         "queue.buffering.max.messages": 500_000, "enable.idempotence": True})
    for chunk in workload.chunks(n_predictions):
        for key, prediction, outcome in chunk:
            producer.produce(topics.predictions, key=key, value=prediction)
            producer.produce(topics.outcomes, key=key, value=outcome)
            producer.poll(0)
    producer.flush(120)


def run_offline(name: str, n_predictions: int) -> dict[str, float]:
    """The pure path in a fresh process, so that its peak resident memory is its own."""
    out = subprocess.run([sys.executable, str(HERE / "offline_path.py"), name, str(n_predictions)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@dataclass(frozen=True)
class BrokerRun:
    produce_s: float
    ceiling_before: float
    ceiling_after: float
    faust_count: float
    worker: WorkerRun
    two_workers: WorkerRun
    #: The same two, started on empty topics and given the backlog once their groups had settled.
    two_settled: WorkerRun
    #: One worker of the ingest role and one of the monitor role: each stage in a process (a core) of its own.
    split_roles: WorkerRun
    #: Records the worker wrote to the join's changelog (entries, tombstones, resolved lists, positions).
    changelog_records: int

    @property
    def mean_ceiling(self) -> float:
        return (self.ceiling_before + self.ceiling_after) / 2


def worker_envs(settings: Settings, config: Path, work: Path, n_workers: int) -> list[dict[str, str]]:
    """One environment per worker of one app: the same app id, a data dir and web port each."""
    data_dirs = [work / settings.app_id / f"worker-{i}" for i in range(n_workers)]
    for data_dir in data_dirs:
        data_dir.mkdir(parents=True)  # faust makes the last level only
    return [worker_env(settings, config, data_dir) for data_dir in data_dirs]


#: Predictions in the throwaway backlog that warms a fresh broker up (about 10 s of work here).
WARM_UP_PREDICTIONS = 20_000


def warm_up(bootstrap: str, partitions: int, work: Path) -> float:
    """Run a worker and the ceiling once over a small speech backlog in topics of their own; the seconds it took."""
    t0 = time.perf_counter()
    workload = WORKLOADS["speech"]
    settings = fresh_settings(bootstrap, "warm-up", partitions)
    ensure_topics(settings)
    config = work / f"{settings.app_id}.yaml"
    config.write_text(workload.config())
    produce_backlog(bootstrap, settings.topics, workload, WARM_UP_PREDICTIONS)
    ceiling(bootstrap, settings.topics, 2 * WARM_UP_PREDICTIONS)
    time_workers(worker_envs(settings, config, work, 1), WARM_UP_PREDICTIONS, False, [work / f"{settings.app_id}.log"])
    return time.perf_counter() - t0


def run_on_broker(bootstrap: str, workload: Workload, n_predictions: int, partitions: int, work: Path,
                  broker_pid: int | None = None) -> BrokerRun:
    settings = fresh_settings(bootstrap, workload.name, partitions)
    # The two workers read the same events from topics of their own: they would otherwise read the single
    # worker's monitor-input batches as well as their own.
    pair = fresh_settings(bootstrap, f"{workload.name}-x2", partitions)
    settled = fresh_settings(bootstrap, f"{workload.name}-x2-settled", partitions)
    split = fresh_settings(bootstrap, f"{workload.name}-roles", partitions)
    for each in (settings, pair, settled, split):
        ensure_topics(each)
    config = work / f"{settings.app_id}.yaml"
    config.write_text(workload.config())
    single, double = worker_envs(settings, config, work, 1), worker_envs(pair, config, work, 2)
    roles = [{**env, "DRIFTLINE_WORKER_ROLE": role}
             for env, role in zip(worker_envs(split, config, work, 2), ("ingest", "monitor"), strict=True)]
    t0 = time.perf_counter()
    produce_backlog(bootstrap, settings.topics, workload, n_predictions)
    produce_s = time.perf_counter() - t0
    produce_backlog(bootstrap, pair.topics, workload, n_predictions)
    produce_backlog(bootstrap, split.topics, workload, n_predictions)
    watch = any(
        spec.watches_predictions for spec in parse_monitor_config(workload.config()).models.values())
    n_events = 2 * n_predictions
    before = ceiling(bootstrap, settings.topics, n_events)
    faust_count = faust_count_rate(bootstrap, settings.topics, n_events, work)
    worker = time_workers(single, n_predictions, watch, [work / f"{settings.app_id}.log"], broker_pid=broker_pid)
    two_workers = time_workers(double, n_predictions, watch, [work / f"{pair.app_id}-{i}.log" for i in range(2)],
                               broker_pid=broker_pid)
    two_settled = time_workers(worker_envs(settled, config, work, 2), n_predictions, watch,
                               [work / f"{settled.app_id}-{i}.log" for i in range(2)],
                               lambda: produce_backlog(bootstrap, settled.topics, workload, n_predictions), broker_pid)
    split_roles = time_workers(roles, n_predictions, watch, [work / f"{split.app_id}-{r}.log" for r in ("ingest", "monitor")],
                               broker_pid=broker_pid)
    after = ceiling(bootstrap, settings.topics, n_events)
    return BrokerRun(produce_s, before, after, faust_count, worker, two_workers, two_settled, split_roles,
                     sum(end_offsets(bootstrap, settings.join_state_topic, partitions)))


# Column widths of the tables: what, events/s, its ratio to the mean ceiling, memory.
COLUMNS = "{:<66}{:>10}{:>11}   {}"


def _row(what: str, rate: float, ceiling_rate: float | None = None, memory: str = "") -> None:
    ratio = "" if ceiling_rate is None else f"{rate / ceiling_rate:.3f}"
    print(COLUMNS.format(what, f"{rate:,.0f}", ratio, memory))


def _mib(values: list[float]) -> str:
    return " and ".join(f"{v:.0f}" for v in values)


def _worker_memory(w: WorkerRun) -> str:
    each = " each" if len(w.peak_rss_mib) > 1 else ""
    return (f"peak {_mib(w.peak_rss_mib)} MiB (VmHWM){each}; {_mib(w.start_rss_mib)} MiB at the first read, "
            f"{_mib(w.end_rss_mib)} at the end")


def _monitors(w: WorkerRun, n_predictions: int) -> str:
    if w.n_watched is None:
        return "examples"
    if w.n_watched >= n_predictions:
        return "examples + predictions"
    return f"examples + {w.n_watched:,.0f} predictions"


def _worker_notes(w: WorkerRun, who: str, n_predictions: int) -> None:
    n_events = 2 * n_predictions
    if w.n_processed < n_events:
        print(f"note: {who} joined {w.n_processed:,.0f} of {n_events:,} events (see the log)")
    if w.n_watched is not None and w.n_watched < n_predictions:
        print(f"note: {who}'s monitors watched {w.n_watched:,.0f} of {n_predictions:,} predictions, still "
              f"{WATCH_STALL_SECONDS:.0f} s after the last example: end to end is timed to the last one")


def print_table(workload: Workload, n_predictions: int, offline: dict[str, float], broker: BrokerRun | None,
                partitions: int, wall_s: float) -> None:
    n_events = 2 * n_predictions
    print(f"\n== {workload.name}: {workload.summary}")
    where = f"{partitions} partitions, backlog produced in {broker.produce_s:.1f} s, " if broker else ""
    print(f"{n_events:,} events ({n_predictions:,} predictions + their outcomes), {where}wall time {wall_s:.0f} s")
    print(COLUMNS.format("what", "events/s", "/ ceiling" if broker else "", "resident memory"))
    mean_ceiling = broker.mean_ceiling if broker else None
    before, end = offline["rss_before_kib"], offline["rss_end_kib"]
    _row("offline pure path: decode + join (JoinStage)", n_events / offline["join_s"], mean_ceiling)
    _row("offline pure path: monitors (observe_predictions + observe)", n_events / offline["monitor_s"], mean_ceiling)
    _row("offline pure path: both, one process", n_events / (offline["join_s"] + offline["monitor_s"]), mean_ceiling,
         f"peak {offline['peak_rss_kib'] / 1024:.0f} MiB (VmHWM); {before / 1024:.0f} MiB before the events, "
         f"{end / 1024:.0f} at the end")
    if broker is not None:
        w, w2 = broker.worker, broker.two_workers
        _row("ceiling: confluent-kafka consume + pydantic validate (before)", broker.ceiling_before, mean_ceiling)
        _row("ceiling: the same, after the worker runs", broker.ceiling_after, mean_ceiling)
        _row("faust-streaming agent that only counts (raw values, take_events)", broker.faust_count, mean_ceiling)
        _row("driftline worker, ingest: decode, dead-letter, join", w.ingest_rate, mean_ceiling)
        _row(f"driftline worker, end to end (monitors: {_monitors(w, n_predictions)})", w.rate, mean_ceiling,
             _worker_memory(w))
        _row("2 driftline workers, one app id: ingest", w2.ingest_rate, mean_ceiling)
        _row(f"2 driftline workers, one app id: end to end ({_monitors(w2, n_predictions)})", w2.rate, mean_ceiling,
             _worker_memory(w2))
        w2s = broker.two_settled
        _row("2 workers, group settled before the backlog: ingest", w2s.ingest_rate, mean_ceiling)
        _row(f"2 workers, group settled before the backlog: end to end ({_monitors(w2s, n_predictions)})", w2s.rate,
             mean_ceiling, _worker_memory(w2s))
        ws = broker.split_roles
        _row("--role ingest + --role monitor, 2 processes: ingest", ws.ingest_rate, mean_ceiling)
        _row(f"--role ingest + --role monitor, 2 processes: end to end ({_monitors(ws, n_predictions)})", ws.rate,
             mean_ceiling, _worker_memory(ws))
        print(f"ingest / mean ceiling = {w.ingest_rate / broker.mean_ceiling:.3f}; end to end / mean ceiling = "
              f"{w.rate / broker.mean_ceiling:.3f}; last event scored {n_events / w.rate - n_events / w.ingest_rate:.1f} s "
              f"after the last ingest batch; first read placed within {w.start_resolution:.2f} s")
        print(f"2 workers / 1 worker, end to end = {w2.rate / w.rate:.2f}; the 2 workers are timed from the first "
              f"read of either (placed within {w2.start_resolution:.2f} s), rebalance included, to every example "
              "scored across both (each model's count read from the worker that has it furthest)")
        print(f"2 workers in a settled group / 1 worker, end to end = {w2s.rate / w.rate:.2f}; the backlog is produced "
              "once both hold partitions of both stages (for 2 s), so they read it as it arrives, and no rebalance "
              "falls into the run")
        # What limits each figure: a Python process runs one thread at a time (at most a core), and the broker
        # shares this machine's cores with the workers.
        for who, run in (("1 worker", w), ("2 workers", w2), ("2 workers, settled group (broker: + the backlog's "
                         "produce)", w2s), ("--role ingest + --role monitor", ws)):
            print(f"{who}: {run.cpu_line(n_events)}")
        print(f"join changelog: {broker.changelog_records:,} records written, "
              f"{broker.changelog_records / n_events:.2f} per event")
        _worker_notes(w, "the worker", n_predictions)
        _worker_notes(w2, "the 2 workers", n_predictions)
        _worker_notes(w2s, "the 2 workers in a settled group", n_predictions)
        _worker_notes(ws, "the ingest and monitor processes", n_predictions)
    print(f"offline: {offline['examples']:,} examples scored, {offline['predictions_watched']:,} predictions watched, "
          f"{offline['windows_judged']:,} drift windows judged, {offline['alerts']:,} alerts, "
          f"{offline['triggers']:,} retrain triggers")
    # The growth is not all per model: the join remembers every joined prediction id for a TTL of event time.
    print(f"offline memory: pickled monitor state {offline['pickled_state_bytes'] / workload.n_models / 1024:,.1f} KiB "
          f"per model; resident growth {(end - before) / 1024:,.0f} MiB = {(end - before) / workload.n_models:,.0f} "
          f"KiB per model with the join's state (it keeps joined ids {load_settings().join_ttl_seconds:,.0f} s of "
          f"event time; these events span {workload.event_seconds(n_predictions):,.0f} s)")


def _percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "none"
    p50, p99 = np.percentile(seconds, [50, 99])
    return f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(seconds):.2f} s over {len(seconds)}"


def print_steady(run: SteadyRun, partitions: int, wall_s: float) -> None:
    produced = run.produced
    window_s = produced.last_sent - produced.first_sent
    print(f"\n== steady rate: {run.rate:,.0f} events/s asked for {run.seconds:.0f} s, into fresh topics, "
          f"one driftline worker; wall time {wall_s:.0f} s")
    print(f"{run.summary}; {partitions} partitions; each outcome sent {OUTCOME_DELAY_SECONDS * 1000:.0f} ms after "
          f"its prediction, every event's event_time = the wall clock when it was sent")
    print(COLUMNS.format("what", "events/s", "/ ceiling", ""))
    _row("ceiling: consume + validate these events, after the run", run.ceiling, run.ceiling)
    _row("producer, achieved", produced.rate, run.ceiling,
         f"{produced.n_predictions:,} predictions + {produced.n_outcomes:,} outcomes in {window_s:.1f} s; "
         f"at most {produced.worst_behind_s * 1000:.0f} ms behind schedule; {produced.cpu_s:.1f} s of CPU "
         f"({produced.cpu_s / window_s:.0%} of a core) taken from the worker's")
    _row("driftline worker while the producer ran (2 x examples scored / s)", 2 * run.scored_at_stop / window_s,
         run.ceiling, f"{run.scored_at_stop:,} of {produced.n_predictions:,} examples scored at the producer's stop, "
         f"{run.held_at_stop:,} items held by the monitor stage for the watermarks")
    found = (f"{run.committed[1]:,} (end offsets - committed offsets of group {run.committed[0]})"
             if run.committed else "no ingest group had committed offsets")
    print(f"consumer lag when the producer stopped: driftline_consumer_lag_messages {run.metric_lag:,.0f} "
          f"(from its last fetch's high-water marks); {found}; the group that took the source partitions: "
          f"{run.assigned_group}")
    if run.caught_up_s is None:
        print(f"the worker had not scored every example {run.drain_limit_s:.0f} s after the producer stopped: "
              "the alerts below are those it had sent by then")
    else:
        print(f"the worker scored the last example {run.caught_up_s:.1f} s after the producer stopped")
    fired = sum(record.alert.status == "fired" for record in run.alerts)
    kinds = {record.timestamp_type for record in run.alerts}
    stamp = "LogAppendTime" if kinds == {TIMESTAMP_LOG_APPEND_TIME} else f"timestamp types {sorted(kinds)}"
    print(f"alert latency = the alert record's Kafka timestamp ({stamp}) - when the producer sent the event whose "
          f"event_time the alert carries; {len(run.alerts)} alerts ({fired} fired, {len(run.alerts) - fired} resolved)")
    print(f"  performance alerts, from the outcome that completed the example (its completed_at): "
          f"{_percentiles(run.latencies['examples'])}")
    print(f"  data alerts, from the prediction: {_percentiles(run.latencies['predictions'])}")
    print(f"  all: {_percentiles(run.latencies['examples'] + run.latencies['predictions'])}")
    if run.unmatched:
        print(f"note: {run.unmatched} alerts carry an event time the producer never sent; left out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all", "none"], default="speech",
                        help="none: the steady-rate run alone")
    parser.add_argument("--events", type=int, default=None,
                        help="predictions (each with one outcome) per workload; default: each workload's own")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="time the workloads on the broker as it starts, its JVM not yet warm (see warm_up)")
    parser.add_argument("--offline-only", action="store_true", help="only the pure path; no broker, no worker")
    parser.add_argument("--steady-rate", type=float, default=10_000,
                        help="events/s (half predictions, half outcomes) of the steady-rate run")
    parser.add_argument("--steady-seconds", type=float, default=60, help="how long the steady-rate run sends; 0: none")
    args = parser.parse_args()
    names = {"all": list(WORKLOADS), "none": []}.get(args.workload, [args.workload])
    counts = {name: args.events or WORKLOADS[name].default_predictions for name in names}

    work = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    started = time.perf_counter()
    # The offline runs come first, before any broker starts, so that nothing else shares the two cores with them.
    offline, wall = {}, {}
    for name in names:
        t0 = time.perf_counter()
        offline[name] = run_offline(name, counts[name])
        wall[name] = time.perf_counter() - t0
        print(f"{name}: offline pure path measured in {wall[name]:.0f} s", file=sys.stderr)
    broker: dict[str, BrokerRun] = {}
    steady: SteadyRun | None = None
    warmed = ""
    if not args.offline_only:
        bootstrap = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP")
        kafka = None
        if bootstrap is None:
            kafka = LocalKafka(data_dir=work / "kafka", port=free_port(), controller_port=free_port())
            kafka.start()
            bootstrap = kafka.bootstrap
        try:
            if kafka is not None and args.warm_up:
                took = warm_up(bootstrap, args.partitions, work)
                warmed = f"; the broker warmed up first ({WARM_UP_PREDICTIONS:,} predictions, {took:.0f} s)"
            for name in names:
                t0 = time.perf_counter()
                broker[name] = run_on_broker(bootstrap, WORKLOADS[name], counts[name], args.partitions, work,
                                             None if kafka is None else kafka.pid())
                wall[name] += time.perf_counter() - t0
                print(f"{name}: measured on the broker in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            if args.steady_seconds > 0:
                t0 = time.perf_counter()
                steady = run_steady(bootstrap, args.steady_rate, args.steady_seconds, args.partitions, work)
                wall["steady"] = time.perf_counter() - t0
                print(f"steady rate: measured in {wall['steady']:.0f} s", file=sys.stderr)
        finally:
            if kafka is not None:
                kafka.stop()
    for name in names:
        print_table(WORKLOADS[name], counts[name], offline[name], broker.get(name), args.partitions, wall[name])
    if steady is not None:
        print_steady(steady, args.partitions, wall["steady"])
    print(f"\n{len(names)} workload(s) in {time.perf_counter() - started:.0f} s in all (with the broker's start) on "
          f"{os.cpu_count()} CPUs{warmed}; worker logs and data in {work}")


if __name__ == "__main__":
    main()
