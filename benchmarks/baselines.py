"""The two figures Driftline's worker is measured against, over the same backlog on the same broker.

* :func:`ceiling`: a bare confluent-kafka consumer that reads and validates
  each event with pydantic, and does nothing else;
* :func:`faust_count_rate`: a count-only faust-streaming agent
  (``faust_count.py``), the framework's own limit, before any work of ours.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer
from pydantic import TypeAdapter

from schemas.events import OutcomeEvent, PredictionEvent
from schemas.topics import TopicNames
from streams.processes import stop_worker
from streams.settings import load_settings

__all__ = ["ceiling", "faust_count_rate"]

HERE = Path(__file__).resolve().parent


def ceiling(bootstrap: str, topics: TopicNames, n_messages: int) -> float:
    """Events/s of a bare consumer that reads and validates each event, and does nothing else."""
    adapters = {topics.predictions: TypeAdapter(PredictionEvent), topics.outcomes: TypeAdapter(OutcomeEvent)}
    consumer = Consumer({**load_settings(kafka_bootstrap=bootstrap).confluent_config(), "group.id": f"ceiling-{uuid.uuid4().hex}",
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


def faust_count_rate(bootstrap: str, topics: TopicNames, n_events: int, work: Path) -> float:
    """Events/s of a count-only Faust agent over the sources, from its first batch to the one that completes the count.

    A fresh app id each call, so that its consumer group has no offsets and reads from the beginning.
    """
    app_id = f"faust-count-{uuid.uuid4().hex[:8]}"
    out, log_path = work / f"{app_id}.json", work / f"{app_id}.log"
    command = [sys.executable, str(HERE / "faust_count.py"), bootstrap, app_id, str(n_events), str(out),
               topics.predictions, topics.outcomes]
    with open(log_path, "wb") as log:
        # A session of its own, so that stop_worker's SIGKILL reaches the whole process group.
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + 120 + n_events / 500
    try:
        while not out.exists():
            if proc.poll() is not None:
                raise SystemExit(f"the count-only Faust agent exited with {proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the count-only Faust agent did not count {n_events:,} events; see {log_path}")
            time.sleep(0.2)
        return float(json.loads(out.read_text())["rate"])
    finally:
        stop_worker(proc)
