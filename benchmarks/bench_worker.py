"""Worker throughput on the real broker, against a plain confluent-kafka consume-and-decode ceiling.

Both read the same backlog of prediction and outcome events from the same
broker in the same run, so the ratio is meaningful on a noisy shared machine
even when the absolute figures are not.

    python benchmarks/bench_worker.py [--events 50000]

Prints one table; the figures in issue notes come from it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from pydantic import TypeAdapter

from schemas.events import OutcomeEvent, PredictionEvent
from streams.demo import DEMO_CONFIG, free_port, metric_sum, scrape_metrics, start_worker, stop_worker
from streams.localkafka import LocalKafka
from streams.scenarios import SpeechScenario
from streams.settings import load_settings
from streams.topics import ensure_topics


def produce_backlog(bootstrap: str, topics, n_events: int) -> None:  # type: ignore[no-untyped-def]
    # Idempotence keeps each partition in production order: without it, a batch retried while a fresh
    # broker elects leaders lands after later batches, and its pairs expire (seen: 4,173 of 20,000).
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 50,
                         "queue.buffering.max.messages": 500_000, "enable.idempotence": True})
    for prediction, outcome in SpeechScenario(n_events=n_events, change_at=n_events // 2).events():
        key = prediction.prediction_id.encode()
        producer.produce(topics.predictions, key=key, value=prediction.model_dump_json().encode())
        producer.produce(topics.outcomes, key=key, value=outcome.model_dump_json().encode())
        producer.poll(0)
    producer.flush(60)


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


def worker_rate(
    bootstrap: str, env: dict[str, str], web_port: int, n_events: int, log: Path
) -> tuple[float, float, float]:
    """Events/s through the worker's ingest stage, and end to end (to the last scored example); resident MiB."""
    proc = start_worker(env, log)
    try:
        started = ingested = None
        deadline = time.monotonic() + 300
        samples: dict = {}  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            samples = scrape_metrics(web_port) or samples
            read = metric_sum(samples, "driftline_events_read_total")
            if started is None and read > 0:
                started = time.perf_counter()
            if ingested is None and metric_sum(samples, "driftline_events_processed_total") >= 2 * n_events:
                ingested = time.perf_counter()
            if metric_sum(samples, "driftline_examples_total") >= n_events:
                done = time.perf_counter()
                start = started or done
                return 2 * n_events / ((ingested or done) - start), 2 * n_events / (done - start), _rss_mib(proc.pid)
            time.sleep(0.05)
        interesting = {k: v for k, v in samples.items() if k[0].startswith(("driftline_events", "driftline_examples", "driftline_join"))}
        raise SystemExit(f"worker did not finish; see {log}; last metrics {interesting}")
    finally:
        stop_worker(proc)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="predictions (each with one outcome)")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    bootstrap = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP")
    kafka = None
    if bootstrap is None:
        kafka = LocalKafka(data_dir=work / "kafka", port=free_port(), controller_port=free_port())
        kafka.start()
        bootstrap = kafka.bootstrap
    try:
        run = uuid.uuid4().hex[:8]
        settings = load_settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench{run}.", partitions=args.partitions)
        ensure_topics(settings)
        t0 = time.perf_counter()
        produce_backlog(bootstrap, settings.topics, args.events)
        produce_s = time.perf_counter() - t0
        config = work / "monitors.yaml"
        config.write_text(DEMO_CONFIG)
        web_port = free_port()
        env = {"DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap, "DRIFTLINE_TOPIC_PREFIX": settings.topic_prefix,
               "DRIFTLINE_APP_ID": f"bench-{run}", "DRIFTLINE_MONITOR_CONFIG": str(config),
               "DRIFTLINE_DATA_DIR": str(work / "worker"), "DRIFTLINE_WEB_PORT": str(web_port),
               "DRIFTLINE_PARTITIONS": str(args.partitions)}
        ceiling_rate = ceiling(bootstrap, settings.topics, 2 * args.events)
        ingest_rate, rate, rss = worker_rate(bootstrap, env, web_port, args.events, work / "worker.log")
        ceiling_after = ceiling(bootstrap, settings.topics, 2 * args.events)
    finally:
        if kafka is not None:
            kafka.stop()
    print(f"{2 * args.events:,} events ({args.events:,} predictions + outcomes), {args.partitions} partitions, "
          f"backlog produced in {produce_s:.1f} s")
    print(f"{'what':<58}{'events/s':>12}")
    print(f"{'ceiling: confluent-kafka consume + pydantic validate (before)':<58}{ceiling_rate:>12,.0f}")
    print(f"{'ceiling: the same, after the worker run':<58}{ceiling_after:>12,.0f}")
    print(f"{'driftline worker, ingest stage: decode, dead-letter, join':<58}{ingest_rate:>12,.0f}")
    print(f"{'driftline worker, end to end: ... and monitor':<58}{rate:>12,.0f}")
    mean_ceiling = (ceiling_rate + ceiling_after) / 2
    print(f"ingest / mean ceiling = {ingest_rate / mean_ceiling:.3f}; end to end / mean ceiling = "
          f"{rate / mean_ceiling:.3f}; worker resident memory at the end {rss:.0f} MiB")


if __name__ == "__main__":
    main()
