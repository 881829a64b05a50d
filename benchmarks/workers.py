"""``driftline worker`` subprocesses for the benchmark: their settings, and timing one or more over a backlog.

Several workers started with the same app id share the work as one consumer
group; :func:`time_workers` times them together, from the first read of any of
them to every example scored across them all.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from offline_path import proc_cpu_seconds, proc_status_kib
from streams.processes import free_port, metric_sum, scrape_metrics, start_worker, stop_worker
from streams.settings import Settings, load_settings

__all__ = ["WATCH_STALL_SECONDS", "WorkerRun", "end_offsets", "fresh_settings", "monitored_counts",
           "read_checkpoint_page", "time_workers", "worker_env"]

# Once every example is scored, how long the count of watched predictions may stand still short of every
# prediction before the worker is taken not to watch them all.
WATCH_STALL_SECONDS = 15.0


def fresh_settings(bootstrap: str, name: str, partitions: int) -> Settings:
    """Settings with topics and an app id of their own, so that a run reads nothing an earlier one wrote."""
    run = f"{name}-{uuid.uuid4().hex[:8]}"
    return load_settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench-{run}.", partitions=partitions,
                         app_id=f"bench-{run}")


def worker_env(settings: Settings, config: Path, data_dir: Path) -> dict[str, str]:
    """The environment of a ``driftline worker`` with these settings, on a web port of its own."""
    return {"DRIFTLINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "DRIFTLINE_TOPIC_PREFIX": settings.topic_prefix,
            "DRIFTLINE_APP_ID": settings.app_id, "DRIFTLINE_MONITOR_CONFIG": str(config),
            "DRIFTLINE_DATA_DIR": str(data_dir), "DRIFTLINE_WEB_PORT": str(free_port()),
            "DRIFTLINE_PARTITIONS": str(settings.partitions),
            # Workers of one app id share the key that signs their checkpoints (README: set one shared key).
            "DRIFTLINE_STATE_KEY": f"benchmark state key of {settings.app_id}"}


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """Each partition's high-water mark (compaction does not lower it)."""
    consumer = Consumer({**load_settings(kafka_bootstrap=bootstrap).confluent_config(), "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


def read_checkpoint_page(port: int) -> dict[str, Any]:
    """The worker's /checkpoint page (examples scored and predictions watched, per model); empty if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/checkpoint", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def monitored_counts(ports: list[int]) -> tuple[int, int]:
    """Examples scored and predictions watched, summed over models, across workers of one app.

    Per model the largest count of any worker: a worker that lost a model's partition in a rebalance keeps
    its count, and the one that took it over goes on from the checkpoint, so a sum would count twice.
    """
    scored: dict[str, int] = {}
    watched: dict[str, int] = {}
    for port in ports:
        state = read_checkpoint_page(port)
        for counts, seen in ((scored, state.get("n_seen", {})), (watched, state.get("n_predictions", {}))):
            for model, n in seen.items():
                counts[model] = max(counts.get(model, 0), n)
    return sum(scored.values()), sum(watched.values())


@dataclass(frozen=True)
class WorkerRun:
    ingest_rate: float
    rate: float
    # Per worker, in MiB: resident memory at the group's first read, the peak (VmHWM) and at the end.
    start_rss_mib: list[float]
    peak_rss_mib: list[float]
    end_rss_mib: list[float]
    n_processed: float  # events the ingest stages joined (every one, unless some expired or were dead-lettered)
    n_watched: float | None  # predictions the data monitors watched by the end; None: the config watches none
    start_resolution: float  # seconds within which the first read is placed
    #: CPU seconds each worker used from the first read to the last example scored (start-up left out), and the
    #: broker's over the same span (None: its process is not on this machine's books).  When the watched
    #: predictions stall short of all, read WATCH_STALL_SECONDS later, idle time included.
    cpu_s: list[float]
    broker_cpu_s: float | None

    def cpu_line(self, n_events: int) -> str:
        """What the run cost in CPU per event: each worker's, and the broker's; and the cores they kept busy."""
        seconds = n_events / self.rate
        each = " + ".join(f"{cpu / n_events * 1e6:.0f}" for cpu in self.cpu_s)
        broker = "" if self.broker_cpu_s is None else f", broker {self.broker_cpu_s / n_events * 1e6:.0f}"
        total = sum(self.cpu_s) + (self.broker_cpu_s or 0.0)
        return (f"CPU µs/event: worker {each}{broker}; {total / seconds:.2f} cores busy over the {seconds:.1f} s "
                f"(first read placed within {self.start_resolution:.2f} s)")


def _settled(ports: list[int], partitions: int) -> bool:
    """Every worker holds source and monitor-input partitions, and between them every partition of each."""
    samples = [scrape_metrics(port) for port in ports]
    if not all(samples):
        return False
    held = {stage: [metric_sum(s, "driftline_assigned_partitions", stage=stage) for s in samples]
            for stage in ("ingest", "monitor")}
    # The ingest stage holds a partition of each source topic per partition number.
    return (all(held["ingest"]) and all(held["monitor"]) and sum(held["ingest"]) == 2 * partitions
            and sum(held["monitor"]) == partitions)


def time_workers(envs: list[dict[str, str]], n_predictions: int, watch: bool, logs: list[Path],
                 produce_once_settled: Callable[[], None] | None = None, broker_pid: int | None = None) -> WorkerRun:
    """Time workers from the first read of any to their last ingest batch, and to every example scored and prediction watched.

    /metrics is read before the first event and after the last, never in between: with 1,000 models
    the page is megabytes and takes the worker's event loop a good part of a second to render.  In
    between, the small /checkpoint page tells how many examples and predictions the monitors have seen.

    With ``produce_once_settled`` the workers start on empty topics, and it is run (in a thread) once their
    groups have settled: every worker holding partitions of both stages, the same for 2 s.  The figure is
    then the group's combined rate, with no rebalance in it; without, the backlog is there before they
    start, and the first rebalance falls into the run.

    ``broker_pid``: the local broker's process, whose CPU time over the run is reported beside the workers'.
    (With ``produce_once_settled`` it includes taking in the backlog, which the producer sends meanwhile.)
    """
    procs = [start_worker(env, log) for env, log in zip(envs, logs, strict=True)]
    ports = [int(env["DRIFTLINE_WEB_PORT"]) for env in envs]
    n_events = 2 * n_predictions
    deadline = time.monotonic() + 300 + n_events / 500

    def check_deadline(what: str) -> None:
        if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
            raise SystemExit(f"the worker(s) did not {what}; see {', '.join(map(str, logs))}")

    producer: threading.Thread | None = None
    try:
        if produce_once_settled is not None:
            partitions, since = int(envs[0]["DRIFTLINE_PARTITIONS"]), None
            while since is None or time.monotonic() - since < 2:
                check_deadline("settle into one group")
                since = (since or time.monotonic()) if _settled(ports, partitions) else None
                time.sleep(0.25)
            producer = threading.Thread(target=produce_once_settled, daemon=True)
            producer.start()
        started = previous = time.time()
        while True:  # a worker is idle until its first read, so a scrape costs the measurement nothing
            check_deadline("start reading")
            asked = time.time()
            # The CPU counters as the question is asked, not once it is answered: the page of a worker with 1,000
            # models takes seconds to render, and with produce_once_settled the workers are reading meanwhile.
            cpu_asked = [proc_cpu_seconds(proc.pid) for proc in procs]
            broker_asked = None if broker_pid is None else proc_cpu_seconds(broker_pid)
            if any(metric_sum(scrape_metrics(port), "driftline_events_read_total") > 0 for port in ports):
                started, start_rss = asked, [proc_status_kib(proc.pid, "VmRSS") for proc in procs]
                start_cpu, broker_start_cpu = cpu_asked, broker_asked
                break
            previous = asked
            time.sleep(0.05)
        scored = None
        last_watched = (-1.0, time.time())  # the count, and when it last moved
        while True:
            check_deadline("score every example")
            n_scored, n_watched = monitored_counts(ports)
            now = time.time()
            if n_watched != last_watched[0]:
                last_watched = (float(n_watched), now)
            if scored is None and n_scored >= n_predictions:
                scored = now
            if scored is not None and (not watch or n_watched >= n_predictions):
                done = now
                break
            if scored is not None and now - max(scored, last_watched[1]) > WATCH_STALL_SECONDS:
                done = max(scored, last_watched[1])
                break
            time.sleep(0.1)
        cpu = [proc_cpu_seconds(proc.pid) - before for proc, before in zip(procs, start_cpu, strict=True)]
        broker_cpu = None if broker_start_cpu is None else proc_cpu_seconds(broker_pid) - broker_start_cpu  # type: ignore[arg-type]
        peak = [proc_status_kib(proc.pid, "VmHWM") for proc in procs]
        end = [proc_status_kib(proc.pid, "VmRSS") for proc in procs]
        # The last read must be whole: a 1,000-model page can take its worker longer than the 2 s default to render,
        # and an unanswered scrape reads as no samples (models1000 once printed an ingest rate of -0 from it).
        samples = [scrape_metrics(port, timeout=60) for port in ports]
        if not all(samples):
            raise SystemExit(f"a worker's /metrics did not answer within 60 s; see {', '.join(map(str, logs))}")
        # The Unix time of the last ingest batch of any worker: once every event is read there are no more.
        ingested = max(metric_sum(s, "driftline_last_batch_timestamp_seconds", stage="ingest") for s in samples)
        return WorkerRun(n_events / (ingested - started), n_events / (done - started),
                         [kib / 1024 for kib in start_rss], [kib / 1024 for kib in peak], [kib / 1024 for kib in end],
                         sum(metric_sum(s, "driftline_events_processed_total") for s in samples),
                         last_watched[0] if watch else None, started - previous, cpu, broker_cpu)
    finally:
        if producer is not None:
            producer.join(60)
        for proc in procs:
            stop_worker(proc)
