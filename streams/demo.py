"""``make demo``: the speech scenario end to end on a real Kafka, narrated in the terminal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter
from rich.console import Console
from rich.table import Table

from retrainer.config import LearnerSpec
from retrainer.core import register_initial_version
from retrainer.learners import OnlineModel, features_to_x
from retrainer.settings import open_registry, open_store
from schemas.events import Alert, ModelVersion, RetrainTrigger
from streams.client import PredictionLogger
from streams.localkafka import LocalKafka
from streams.scenarios import LearnableSpeechScenario, SpeechScenario
from streams.settings import load_settings
from streams.topics import ensure_topics

__all__ = ["register_shipped_model", "run_demo", "scrape_metrics", "start_retrainer", "start_worker", "stop_worker", "free_port"]

DEMO_CONFIG = """\
models:
  speech-asr:
    task: classification
    performance:
      metric: accuracy
      window: 500
      threshold: 0.85
      hysteresis: 0.02
    detector:
      name: bernoulli_glr
      params: {false_alarm_horizon: 100000}
    retrain:
      cooldown_seconds: 3600
"""
# Not JSON, a schema violation and a NaN feature: they must land on the dead-letter topic.
GARBAGE = [
    b"\x00\x01 definitely not json",
    b'{"prediction_id": "bad-1", "model": "speech-asr", "event_time": "yesterday", "prediction": "yes"}',
    b'{"prediction_id": "bad-2", "model": "speech-asr", "model_version": "1",'
    b' "event_time": "2026-11-01T00:00:00Z", "features": {"snr_db": NaN}, "prediction": "yes"}',
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``driftline worker`` as a subprocess in its own session."""
    log = open(log_path, "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"], env={**os.environ, **env},
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )


def start_retrainer(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``driftline retrainer`` as a subprocess in its own session (stop it with :func:`stop_worker`)."""
    log = open(log_path, "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "retrainer"], env={**os.environ, **env},
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )


def register_shipped_model(data_dir: Path, scenario: LearnableSpeechScenario, spec: LearnerSpec, n_history: int = 2000) -> ModelVersion:
    """Train the model the app ships with on ``n_history`` earlier utterances and register it as version 1.

    This is the ML engineer's step before the loop runs: the retrainer then
    starts from this champion, and serving apps load it from the models topic.
    An already registered model is left alone.
    """
    registry = open_registry(data_dir)
    current = registry.current(scenario.model)
    if current is not None:
        return current
    trained = OnlineModel(spec)
    history = list(scenario.history(n_history))
    for u in history:
        trained.learn_one(features_to_x(u.features), u.truth)
    return register_initial_version(
        registry, open_store(data_dir), scenario.model, trained, datetime.now(timezone.utc),
        data_from=history[0].event_time, data_to=history[-1].event_time,
        reason=f"shipped: trained offline on {n_history} historical utterances",
    )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``: faust has been seen ignoring SIGTERM for seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def scrape_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's /metrics as {(sample name, sorted labels): value}; empty if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, val) in ls for k, val in labels.items()))


def run_demo(n_events: int = 12_000, timeout: float = 150.0) -> int:
    console = Console(highlight=False)
    started = time.monotonic()
    stamp = str(int(time.time()))
    work = Path(".driftline/demo") / stamp
    work.mkdir(parents=True, exist_ok=True)
    local: LocalKafka | None = None
    bootstrap = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP")
    if bootstrap is None:
        local = LocalKafka(data_dir=Path(".driftline/kafka"), port=9092)
        we_started_kafka = local.pid() is None
        console.print("[bold]Starting a local Apache Kafka[/] (first run resolves its jars with Maven)…")
        local.start()
        bootstrap = local.bootstrap
    else:
        we_started_kafka = False
    console.print(f"Kafka at {bootstrap}")

    config_path = work / "monitors.yaml"
    config_path.write_text(DEMO_CONFIG)
    web_port = free_port()
    env = {
        "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
        "DRIFTLINE_TOPIC_PREFIX": f"demo{stamp}.",
        "DRIFTLINE_APP_ID": f"driftline-demo-{stamp}",
        "DRIFTLINE_MONITOR_CONFIG": str(config_path),
        "DRIFTLINE_DATA_DIR": str(work / "worker"),
        "DRIFTLINE_WEB_PORT": str(web_port),
        "DRIFTLINE_PARTITIONS": "2",
    }
    settings = load_settings(
        kafka_bootstrap=bootstrap, topic_prefix=env["DRIFTLINE_TOPIC_PREFIX"], partitions=2,
    )
    ensure_topics(settings)
    topics = settings.topics
    worker = start_worker(env, work / "worker.log")
    console.print(f"Worker started (pid {worker.pid}, metrics on http://127.0.0.1:{web_port}/metrics, "
                  f"log {work / 'worker.log'})")

    scenario = SpeechScenario(n_events=n_events, change_at=n_events // 2)
    console.print(f"Replaying {n_events:,} utterances of [bold]{scenario.model}[/]: accuracy "
                  f"{scenario.accuracy_before:.0%} until utterance {scenario.change_at:,}, then "
                  f"{scenario.accuracy_after:.0%}…")
    client_config = settings.confluent_config()
    logger = PredictionLogger(client_config, topics)
    pending_outcomes = []
    for prediction, outcome in scenario.events():
        logger.log_prediction(prediction)
        pending_outcomes.append(outcome)
        # Ground truth arrives a little later than the prediction, now and then before it.
        if len(pending_outcomes) > 50:
            logger.log_outcome(pending_outcomes.pop(0))
    for outcome in pending_outcomes:
        logger.log_outcome(outcome)
    raw = Producer({**client_config, "partitioner": "murmur2_random"})
    for i, value in enumerate(GARBAGE):
        raw.produce(topics.predictions, key=f"garbage-{i}".encode(), value=value)
    raw.flush(10)
    logger.flush(30)
    console.print(f"Produced {logger.stats.n_delivered:,} events and {len(GARBAGE)} malformed ones.\n")

    consumer = Consumer({**client_config, "group.id": f"demo-watch-{stamp}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topics.alerts, topics.retrain])
    alert_adapter, trigger_adapter = TypeAdapter(Alert), TypeAdapter(RetrainTrigger)
    alerts: list[Alert] = []
    triggers: list[RetrainTrigger] = []

    def utterance(event_time):  # type: ignore[no-untyped-def]
        return int((event_time - scenario.start).total_seconds() / scenario.seconds_apart)

    done = False
    samples: dict = {}
    deadline = started + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            if message.topic() == topics.alerts:
                alert = alert_adapter.validate_json(message.value())
                alerts.append(alert)
                n = utterance(alert.event_time)
                colour = "red" if alert.status == "fired" else "green"
                console.print(f"[{colour}]ALERT {alert.status:<8}[/] utterance {n:>6,} "
                              f"({n - scenario.change_at:+,} from the change) [{alert.severity}] {alert.message}")
            else:
                trigger = trigger_adapter.validate_json(message.value())
                triggers.append(trigger)
                console.print(f"[yellow]RETRAIN trigger[/] utterance {utterance(trigger.event_time):>6,}: "
                              f"train {trigger.model} on data from utterance {utterance(trigger.data_from):,} on")
            continue
        samples = scrape_metrics(web_port) or samples
        processed = metric_sum(samples, "driftline_events_processed_total")
        dead = metric_sum(samples, "driftline_events_dead_lettered_total")
        if processed >= 2 * n_events and dead >= len(GARBAGE) and alerts and triggers:
            done = True
            break
    consumer.close()
    code = stop_worker(worker)
    if local is not None and we_started_kafka:
        local.stop()

    elapsed = time.monotonic() - started
    table = Table(title="Driftline demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("utterances replayed", f"{n_events:,}")
    table.add_row("events processed (predictions + outcomes)", f"{metric_sum(samples, 'driftline_events_processed_total'):,.0f}")
    table.add_row("events dead-lettered", f"{metric_sum(samples, 'driftline_events_dead_lettered_total'):,.0f}")
    table.add_row("events expired", f"{metric_sum(samples, 'driftline_events_expired_total'):,.0f}")
    fired = Counter(a.detector for a in alerts if a.status == "fired")
    for detector, n in sorted(fired.items()):
        first = min(utterance(a.event_time) for a in alerts if a.detector == detector and a.status == "fired")
        table.add_row(f"alerts fired by {detector}", f"{n} (first {first - scenario.change_at:+,} utterances from the change)")
    table.add_row("retrain triggers", str(len(triggers)))
    table.add_row("rolling accuracy at the end", f"{metric_sum(samples, 'driftline_model_performance'):.3f}")
    table.add_row("wall time", f"{elapsed:.1f} s")
    console.print()
    console.print(table)
    if not done:
        console.print(f"[red]The demo did not finish: worker exit code {worker.returncode}, see {work / 'worker.log'}[/]")
        return 1
    early = [a for a in alerts if a.status == "fired" and utterance(a.event_time) < scenario.change_at]
    if early:
        console.print(f"[red]{len(early)} alert(s) fired before the change: false alarms[/]")
        return 1
    del code
    return 0
