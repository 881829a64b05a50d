"""Worker throughput and memory on the real broker, against a plain confluent-kafka consume-and-validate ceiling.

For each workload (see ``benchmarks/workloads.py``):

* the pure path offline, in a process of its own (``offline_path.py``):
  decode + join, then the monitors, events/s and peak resident memory;
* on a local Kafka, the same events: a bare consumer that reads and validates
  them (the ceiling, before and after), then a ``driftline worker``
  subprocess, timed from its first read to its ingest stage having joined every
  event, and to its monitors having scored every example and watched every
  prediction; its peak resident memory (``VmHWM``).

The ceiling and the worker read the same backlog from the same broker in the
same run, so the ratio is meaningful on a noisy shared machine even when the
absolute figures are not.

    python benchmarks/bench_worker.py [--workload speech|features20|models1000|all] [--events N]

Prints one table per workload; the figures in issue notes come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from pydantic import TypeAdapter

from offline_path import proc_status_kib
from schemas.config import parse_monitor_config
from schemas.events import OutcomeEvent, PredictionEvent
from streams.localkafka import LocalKafka
from streams.processes import free_port, metric_sum, scrape_metrics, start_worker, stop_worker
from streams.settings import load_settings
from streams.topics import ensure_topics
from workloads import WORKLOADS, Workload

HERE = Path(__file__).resolve().parent


def produce_backlog(bootstrap: str, topics, workload: Workload, n_predictions: int) -> None:  # type: ignore[no-untyped-def]
    # Idempotence keeps each partition in production order: without it, a batch retried while a fresh
    # broker elects leaders lands after later batches, and its pairs expire (seen: 4,173 of 20,000).
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 50,
                         "queue.buffering.max.messages": 500_000, "enable.idempotence": True})
    for chunk in workload.chunks(n_predictions):
        for key, prediction, outcome in chunk:
            producer.produce(topics.predictions, key=key, value=prediction)
            producer.produce(topics.outcomes, key=key, value=outcome)
            producer.poll(0)
    producer.flush(120)


def ceiling(bootstrap: str, topics, n_messages: int) -> float:  # type: ignore[no-untyped-def]
    """Events/s of a bare consumer that reads and validates each event, and does nothing else."""
    adapters = {topics.predictions: TypeAdapter(PredictionEvent), topics.outcomes: TypeAdapter(OutcomeEvent)}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ceiling-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(list(adapters))
    seen = 0
    started = None
    while seen < n_messages:
        for message in consumer.consume(1000, timeout=1.0):
            if message.error():
                continue
            if started is None:
                started = time.perf_counter()
            adapters[message.topic()].validate_json(message.value())
            seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return seen / elapsed


@dataclass(frozen=True)
class WorkerRun:
    ingest_rate: float
    rate: float
    start_rss_mib: float
    peak_rss_mib: float
    end_rss_mib: float
    n_processed: float  # events the ingest stage joined (every one, unless some expired or were dead-lettered)
    n_watched: float | None  # predictions the data monitors watched by the end; None: the config watches none
    start_resolution: float  # seconds within which the first read is placed


# Once every example is scored, how long the count of watched predictions may stand still short of every
# prediction before the worker is taken not to watch them all.
WATCH_STALL_SECONDS = 15.0


def read_checkpoint_page(port: int) -> dict[str, Any]:
    """The worker's /checkpoint page (examples scored and predictions watched, per model); empty if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/checkpoint", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def worker_rate(env: dict[str, str], web_port: int, n_predictions: int, watch: bool, log: Path) -> WorkerRun:
    """Time the worker from its first read to its last ingest batch, and to every example scored and prediction watched.

    /metrics is read before the first event and after the last, never in between: with 1,000 models
    the page is megabytes and takes the worker's event loop a good part of a second to render.  In
    between, the small /checkpoint page tells how many examples and predictions the monitors have seen.
    """
    proc = start_worker(env, log)
    n_events = 2 * n_predictions
    deadline = time.monotonic() + 300 + n_events / 500

    def check_deadline(what: str) -> None:
        if time.monotonic() > deadline:
            raise SystemExit(f"worker did not {what}; see {log}")

    try:
        started = previous = time.time()
        while True:  # the worker is idle until its first read, so a scrape costs the measurement nothing
            check_deadline("start reading")
            asked = time.time()
            if metric_sum(scrape_metrics(web_port), "driftline_events_read_total") > 0:
                started, start_rss = asked, proc_status_kib(proc.pid, "VmRSS")
                break
            previous = asked
            time.sleep(0.05)
        scored = None
        last_watched = (-1.0, time.time())  # the count, and when it last moved
        while True:
            check_deadline("score every example")
            state = read_checkpoint_page(web_port)
            now = time.time()
            n_scored = sum(state.get("n_seen", {}).values())
            n_watched = float(sum(state.get("n_predictions", {}).values()))
            if n_watched != last_watched[0]:
                last_watched = (n_watched, now)
            if scored is None and n_scored >= n_predictions:
                scored = now
            if scored is not None and (not watch or n_watched >= n_predictions):
                done = now
                break
            if scored is not None and now - max(scored, last_watched[1]) > WATCH_STALL_SECONDS:
                done = max(scored, last_watched[1])
                break
            time.sleep(0.1)
        peak, end = proc_status_kib(proc.pid, "VmHWM"), proc_status_kib(proc.pid, "VmRSS")
        samples = scrape_metrics(web_port)
        # The Unix time of the last ingest batch: once every event is read there are no more.
        ingested = metric_sum(samples, "driftline_last_batch_timestamp_seconds", stage="ingest")
        return WorkerRun(n_events / (ingested - started), n_events / (done - started),
                         start_rss / 1024, peak / 1024, end / 1024,
                         metric_sum(samples, "driftline_events_processed_total"),
                         last_watched[0] if watch else None, started - previous)
    finally:
        stop_worker(proc)


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
    worker: WorkerRun
    #: Records the worker wrote to the join's changelog (entries, tombstones, resolved lists, positions).
    changelog_records: int


def run_on_broker(bootstrap: str, workload: Workload, n_predictions: int, partitions: int, work: Path) -> BrokerRun:
    run = f"{workload.name}-{uuid.uuid4().hex[:8]}"
    settings = load_settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench-{run}.", partitions=partitions,
                             app_id=f"bench-{run}")
    ensure_topics(settings)
    t0 = time.perf_counter()
    produce_backlog(bootstrap, settings.topics, workload, n_predictions)
    produce_s = time.perf_counter() - t0
    config = work / f"{run}.yaml"
    config.write_text(workload.config())
    watch = any(
        spec.watches_predictions for spec in parse_monitor_config(workload.config()).models.values())
    web_port = free_port()
    env = {"DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap, "DRIFTLINE_TOPIC_PREFIX": settings.topic_prefix,
           "DRIFTLINE_APP_ID": settings.app_id, "DRIFTLINE_MONITOR_CONFIG": str(config),
           "DRIFTLINE_DATA_DIR": str(work / run), "DRIFTLINE_WEB_PORT": str(web_port),
           "DRIFTLINE_PARTITIONS": str(partitions)}
    before = ceiling(bootstrap, settings.topics, 2 * n_predictions)
    worker = worker_rate(env, web_port, n_predictions, watch, work / f"{run}.log")
    after = ceiling(bootstrap, settings.topics, 2 * n_predictions)
    return BrokerRun(produce_s, before, after, worker, records_written(bootstrap, settings.join_state_topic, partitions))


def records_written(bootstrap: str, topic: str, partitions: int) -> int:
    """How many records a topic holds in all (high-water marks: compaction does not lower them)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    finally:
        consumer.close()


def _row(what: str, rate: float | str, memory: str = "") -> None:
    print(f"{what:<66}{rate if isinstance(rate, str) else f'{rate:,.0f}':>10}   {memory}")


def print_table(workload: Workload, n_predictions: int, offline: dict[str, float], broker: BrokerRun | None,
                partitions: int, wall_s: float) -> None:
    n_events = 2 * n_predictions
    print(f"\n== {workload.name}: {workload.summary}")
    where = f"{partitions} partitions, backlog produced in {broker.produce_s:.1f} s, " if broker else ""
    print(f"{n_events:,} events ({n_predictions:,} predictions + their outcomes), {where}wall time {wall_s:.0f} s")
    _row("what", "events/s", "resident memory")
    before, end = offline["rss_before_kib"], offline["rss_end_kib"]
    _row("offline pure path: decode + join (JoinStage)", n_events / offline["join_s"])
    _row("offline pure path: monitors (observe_predictions + observe)", n_events / offline["monitor_s"])
    _row("offline pure path: both, one process", n_events / (offline["join_s"] + offline["monitor_s"]),
         f"peak {offline['peak_rss_kib'] / 1024:.0f} MiB (VmHWM); {before / 1024:.0f} MiB before the events, "
         f"{end / 1024:.0f} at the end")
    if broker is not None:
        w = broker.worker
        _row("ceiling: confluent-kafka consume + pydantic validate (before)", broker.ceiling_before)
        _row("ceiling: the same, after the worker run", broker.ceiling_after)
        if w.n_watched is None:
            monitors = "examples"
        elif w.n_watched >= n_predictions:
            monitors = "examples + predictions"
        else:
            monitors = f"examples + {w.n_watched:,.0f} predictions"
        _row("driftline worker, ingest: decode, dead-letter, join", w.ingest_rate)
        _row(f"driftline worker, end to end (monitors: {monitors})", w.rate,
             f"peak {w.peak_rss_mib:.0f} MiB (VmHWM); {w.start_rss_mib:.0f} MiB at the first read, "
             f"{w.end_rss_mib:.0f} at the end")
        mean_ceiling = (broker.ceiling_before + broker.ceiling_after) / 2
        print(f"ingest / mean ceiling = {w.ingest_rate / mean_ceiling:.3f}; end to end / mean ceiling = "
              f"{w.rate / mean_ceiling:.3f}; last event scored {n_events / w.rate - n_events / w.ingest_rate:.1f} s "
              f"after the last ingest batch; first read placed within {w.start_resolution:.2f} s")
        print(f"join changelog: {broker.changelog_records:,} records written, "
              f"{broker.changelog_records / n_events:.2f} per event")
        if w.n_processed < n_events:
            print(f"note: the worker joined {w.n_processed:,.0f} of {n_events:,} events (see its log)")
        if w.n_watched is not None and w.n_watched < n_predictions:
            print(f"note: the worker's monitors watched {w.n_watched:,.0f} of {n_predictions:,} predictions, still "
                  f"{WATCH_STALL_SECONDS:.0f} s after the last example: end to end is timed to the last one")
    print(f"offline: {offline['examples']:,} examples scored, {offline['predictions_watched']:,} predictions watched, "
          f"{offline['windows_judged']:,} drift windows judged, {offline['alerts']:,} alerts, "
          f"{offline['triggers']:,} retrain triggers")
    # The growth is not all per model: the join remembers every joined prediction id for a TTL of event time.
    print(f"offline memory: pickled monitor state {offline['pickled_state_bytes'] / workload.n_models / 1024:,.1f} KiB "
          f"per model; resident growth {(end - before) / 1024:,.0f} MiB = {(end - before) / workload.n_models:,.0f} "
          f"KiB per model with the join's state (it keeps joined ids {load_settings().join_ttl_seconds:,.0f} s of "
          f"event time; these events span {workload.event_seconds(n_predictions):,.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="speech")
    parser.add_argument("--events", type=int, default=None,
                        help="predictions (each with one outcome) per workload; default: each workload's own")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--offline-only", action="store_true", help="only the pure path; no broker, no worker")
    args = parser.parse_args()
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
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
    if not args.offline_only:
        bootstrap = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP")
        kafka = None
        if bootstrap is None:
            kafka = LocalKafka(data_dir=work / "kafka", port=free_port(), controller_port=free_port())
            kafka.start()
            bootstrap = kafka.bootstrap
        try:
            for name in names:
                t0 = time.perf_counter()
                broker[name] = run_on_broker(bootstrap, WORKLOADS[name], counts[name], args.partitions, work)
                wall[name] += time.perf_counter() - t0
                print(f"{name}: measured on the broker in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        finally:
            if kafka is not None:
                kafka.stop()
    for name in names:
        print_table(WORKLOADS[name], counts[name], offline[name], broker.get(name), args.partitions, wall[name])
    print(f"\n{len(names)} workload(s) in {time.perf_counter() - started:.0f} s in all (with the broker's start) on "
          f"{os.cpu_count()} CPUs; worker logs and data in {work}")


if __name__ == "__main__":
    main()
