"""``make demo``: the speech scenario's whole loop on a real Kafka (decay, alert, retrain, hot swap, recovery), narrated."""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Consumer, Producer
from pydantic import TypeAdapter
from rich.console import Console
from rich.table import Table

from retrainer.champions import register_initial_version
from retrainer.config import LearnerSpec, open_registry, open_store, retrainer_config
from retrainer.learners import OnlineModel, features_to_x
from schemas.config import parse_monitor_config
from schemas.events import Alert, ModelVersion, OutcomeEvent, RetrainTrigger
from streams.client import PredictionLogger
from streams.localkafka import LocalKafka
from streams.processes import free_port, metric_sum, scrape_metrics, start_retrainer, start_worker, stop_worker
from streams.scenarios import LearnableSpeechScenario
from streams.serving import ModelServer
from streams.settings import load_settings
from streams.topics import ensure_topics

__all__ = ["DEMO_CONFIG", "register_shipped_model", "run_demo"]

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
learners:
  speech-asr:
    kind: logistic_regression
    holdout_size: 200
    min_training_examples: 500
    promotion_margin: 0.02
"""
# Not JSON, a schema violation and a NaN feature: they must land on the dead-letter topic.
GARBAGE = [
    b"\x00\x01 definitely not json",
    b'{"prediction_id": "bad-1", "model": "speech-asr", "event_time": "yesterday", "prediction": "yes"}',
    b'{"prediction_id": "bad-2", "model": "speech-asr", "model_version": "1",'
    b' "event_time": "2026-11-01T00:00:00Z", "features": {"snr_db": NaN}, "prediction": "yes"}',
]


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


def run_demo(n_events: int = 12_000, timeout: float = 150.0, rate: float = 400.0) -> int:
    """The speech scenario's whole loop; returns 0 when the loop closed (promotion, recovery, resolved alert)."""
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
    monitor_config = parse_monitor_config(DEMO_CONFIG)
    threshold = monitor_config.models["speech-asr"].performance.threshold
    recovery_level = threshold + monitor_config.models["speech-asr"].performance.hysteresis
    web_port, retrainer_port = free_port(), free_port()
    retrainer_dir = work / "retrainer"
    env = {
        "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
        "DRIFTLINE_TOPIC_PREFIX": f"demo{stamp}.",
        "DRIFTLINE_APP_ID": f"driftline-demo-{stamp}",
        "DRIFTLINE_MONITOR_CONFIG": str(config_path),
        "DRIFTLINE_DATA_DIR": str(work / "worker"),
        "DRIFTLINE_WEB_PORT": str(web_port),
        "DRIFTLINE_PARTITIONS": "2",
        "DRIFTLINE_RETRAINER_DATA_DIR": str(retrainer_dir),
        "DRIFTLINE_RETRAINER_WEB_PORT": str(retrainer_port),
    }
    settings = load_settings(
        kafka_bootstrap=bootstrap, topic_prefix=env["DRIFTLINE_TOPIC_PREFIX"], partitions=2,
    )
    ensure_topics(settings)
    topics = settings.topics
    client_config = settings.confluent_config()

    scenario = LearnableSpeechScenario(n_events=n_events, change_at=n_events // 2, swapped_channels=(2, 7))
    spec = retrainer_config(monitor_config).learners[scenario.model]
    shipped = register_shipped_model(retrainer_dir, scenario, spec)
    console.print(f"Registered the shipped model [bold]{scenario.model}[/] version {shipped.version} "
                  f"({spec.kind}, trained offline on {shipped.n_examples:,} utterances)")
    worker = start_worker(env, work / "worker.log")
    retrainer = start_retrainer({**env, "DRIFTLINE_LOG_LEVEL": "INFO"}, work / "retrainer.log")
    console.print(f"Worker started (pid {worker.pid}, metrics on http://127.0.0.1:{web_port}/metrics, log {work / 'worker.log'})")
    console.print(f"Retrainer started (pid {retrainer.pid}, metrics on http://127.0.0.1:{retrainer_port}/metrics, "
                  f"log {work / 'retrainer.log'})")

    produced = 0  # utterances predicted so far: the app's clock for the timeline
    swaps: list[tuple[int, str]] = []
    server = ModelServer(scenario.model, open_store(retrainer_dir), client_config, topics,
                         on_swap=lambda old, new: swaps.append((produced, new.version)))
    server.start()
    if server.wait_for_version(lambda r: r.version == shipped.version, 30) is None:
        console.print("[red]The app never received the shipped version from the models topic[/]")
    consumer = Consumer({**client_config, "group.id": f"demo-watch-{stamp}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topics.alerts, topics.retrain, topics.models])
    alerts: list[Alert] = []
    triggers: list[RetrainTrigger] = []
    versions: list[tuple[int, ModelVersion]] = []
    alert_adapter, trigger_adapter, version_adapter = TypeAdapter(Alert), TypeAdapter(RetrainTrigger), TypeAdapter(ModelVersion)
    utterance = scenario.utterance_at

    def from_change(n: int) -> str:
        return f"{n - scenario.change_at:+,} from the change"

    def watch(max_wait: float) -> None:
        deadline = time.monotonic() + max_wait
        while True:
            message = consumer.poll(max(0.0, deadline - time.monotonic()))
            if message is None:
                return
            if message.error():
                continue
            if message.topic() == topics.alerts:
                alert = alert_adapter.validate_json(message.value())
                alerts.append(alert)
                n = utterance(alert.event_time)
                colour = "red" if alert.status == "fired" else "green"
                console.print(f"[{colour}]ALERT {alert.status:<8}[/] utterance {n:>6,} ({from_change(n)}) "
                              f"[{alert.severity}] {alert.message}")
            elif message.topic() == topics.retrain:
                trigger = trigger_adapter.validate_json(message.value())
                triggers.append(trigger)
                console.print(f"[yellow]RETRAIN trigger[/] utterance {utterance(trigger.event_time):>6,}: "
                              f"train {trigger.model} on data from utterance {utterance(trigger.data_from):,} on")
            elif message.key() == scenario.model.encode() or message.key() == b"":
                continue  # the current-version announcement; its version record is narrated below
            else:
                record = version_adapter.validate_json(message.value())
                if any(v.version == record.version and v.status == record.status for _, v in versions):
                    continue  # republished on the retrainer's start
                versions.append((produced, record))
                colour = {"promoted": "green", "rejected": "red"}.get(record.status, "cyan")
                when = f"app at utterance {produced:,}" if record.trigger_id is not None else "already registered"
                console.print(f"[{colour}]MODEL {record.model} v{record.version} {record.status}[/] ({when}): {record.reason}")

    console.print(f"Serving live: {n_events:,} utterances at {rate:,.0f}/s; the microphone firmware changes at "
                  f"utterance {scenario.change_at:,}. Predictions come from the served model.")
    logger = PredictionLogger(client_config, topics)
    served: list[tuple[int, str, bool]] = []
    pending: list[OutcomeEvent] = []
    live_started = time.monotonic()
    for u in scenario.utterances():
        out = server.predict(u.features)
        served.append((u.index, out.version, out.prediction == u.truth))
        logger.log_prediction(scenario.prediction(u, str(out.prediction), out.version))
        produced = u.index + 1
        pending.append(scenario.outcome(u))
        # Ground truth arrives a little later than the prediction.
        if len(pending) > 50:
            logger.log_outcome(pending.pop(0))
        if u.index % 100 == 99:
            watch(0.0)
            ahead = produced / rate - (time.monotonic() - live_started)
            if ahead > 0:
                time.sleep(ahead)
    for outcome in pending:
        logger.log_outcome(outcome)
    raw = Producer({**client_config, "partitioner": "murmur2_random"})
    for i, value in enumerate(GARBAGE):
        raw.produce(topics.predictions, key=f"garbage-{i}".encode(), value=value)
    raw.flush(10)
    logger.flush(30)
    console.print(f"Produced {logger.stats.n_delivered:,} events and {len(GARBAGE)} malformed ones.\n")

    def loop_closed() -> bool:
        fired = {a.episode_id for a in alerts if a.status == "fired"}
        resolved = {a.episode_id for a in alerts if a.status == "resolved"}
        promoted = any(v.status == "promoted" and v.trigger_id is not None for _, v in versions)
        return bool(fired) and fired <= resolved and promoted

    done = False
    samples: dict = {}  # type: ignore[type-arg]
    deadline = started + timeout
    while time.monotonic() < deadline and worker.poll() is None and retrainer.poll() is None:
        watch(0.5)
        samples = scrape_metrics(web_port) or samples
        processed = metric_sum(samples, "driftline_events_processed_total")
        dead = metric_sum(samples, "driftline_events_dead_lettered_total")
        if processed >= 2 * n_events and dead >= len(GARBAGE) and loop_closed():
            done = True
            break
    watch(1.0)
    retrainer_samples = scrape_metrics(retrainer_port)
    server.stop()
    consumer.close()
    stop_worker(retrainer)
    stop_worker(worker)
    if local is not None and we_started_kafka:
        local.stop()

    elapsed = time.monotonic() - started
    post = [(i, v, ok) for i, v, ok in served if i >= scenario.change_at]
    before = [ok for i, v, ok in served if i < scenario.change_at]
    stale = [ok for i, v, ok in post if v == shipped.version]
    fresh = [ok for i, v, ok in post if v != shipped.version]

    def rate_of(xs: list[bool]) -> str:
        return f"{sum(xs) / len(xs):.3f} over {len(xs):,} utterances" if xs else "-"

    timeline = Table(title="The loop, in utterances (the app's clock)")
    timeline.add_column("utterance", justify="right")
    timeline.add_column("from the change", justify="right")
    timeline.add_column("what")
    rows: list[tuple[int, str]] = [(scenario.change_at, "microphone firmware changes: features reordered")]
    for a in alerts:
        detail = f"[{a.severity}]" if a.status == "fired" else f"rolling accuracy back to {a.statistic:.3f}"
        rows.append((utterance(a.event_time), f"alert {a.status} by {a.detector} {detail}"))
    for t in triggers:
        rows.append((utterance(t.event_time), f"retrain trigger, data from utterance {utterance(t.data_from):,}"))
    for at, v in versions:
        if v.status in ("promoted", "rejected") and v.trigger_id is not None:
            m = v.metrics
            rows.append((at, f"v{v.version} {v.status} (parent v{v.parent_version}, {v.n_examples:,} examples; challenger "
                             f"{m.get('challenger_accuracy', float('nan')):.3f} vs champion {m.get('champion_accuracy', float('nan')):.3f})"))
    for at, version in swaps:
        if version != shipped.version:
            rows.append((at, f"app serves v{version} (hot swap)"))
    for n, what in sorted(rows, key=lambda r: r[0]):
        timeline.add_row(f"{n:,}", f"{n - scenario.change_at:+,}", what)

    table = Table(title="Driftline demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("utterances served", f"{n_events:,}")
    table.add_row("events processed (predictions + outcomes)", f"{metric_sum(samples, 'driftline_events_processed_total'):,.0f}")
    table.add_row("events dead-lettered", f"{metric_sum(samples, 'driftline_events_dead_lettered_total'):,.0f}")
    table.add_row("events expired", f"{metric_sum(samples, 'driftline_events_expired_total'):,.0f}")
    fired = Counter(a.detector for a in alerts if a.status == "fired")
    for detector, n in sorted(fired.items()):
        first = min(utterance(a.event_time) for a in alerts if a.detector == detector and a.status == "fired")
        table.add_row(f"alerts fired by {detector}", f"{n} (first {first - scenario.change_at:+,} utterances from the change)")
    table.add_row("alerts resolved", str(sum(1 for a in alerts if a.status == "resolved")))
    table.add_row("retrain triggers", str(len(triggers)))
    table.add_row("examples the retrainer learnt from", f"{metric_sum(retrainer_samples, 'driftline_retrainer_examples_total'):,.0f}")
    table.add_row("challengers promoted / rejected",
                  f"{metric_sum(retrainer_samples, 'driftline_challengers_total', outcome='promoted'):.0f} / "
                  f"{metric_sum(retrainer_samples, 'driftline_challengers_total', outcome='rejected'):.0f}")
    table.add_row("versions served", " -> ".join(f"v{v}" for _, v in swaps) or "-")
    table.add_row("live accuracy before the change", rate_of(before))
    table.add_row(f"live accuracy after it, stale v{shipped.version}", rate_of(stale))
    table.add_row("live accuracy after the hot swap", rate_of(fresh))
    table.add_row("worker's rolling accuracy at the end", f"{metric_sum(samples, 'driftline_model_performance'):.3f}")
    table.add_row("wall time", f"{elapsed:.1f} s")
    console.print()
    console.print(timeline)
    console.print(table)
    if not done:
        console.print(f"[red]The loop did not close in time: worker exit code {worker.returncode}, retrainer exit code "
                      f"{retrainer.returncode}; see {work / 'worker.log'} and {work / 'retrainer.log'}[/]")
        return 1
    early = [a for a in alerts if a.status == "fired" and utterance(a.event_time) < scenario.change_at]
    if early:
        console.print(f"[red]{len(early)} alert(s) fired before the change: false alarms[/]")
        return 1
    if not fresh or sum(fresh) / len(fresh) < recovery_level:
        console.print(f"[red]Live accuracy after the swap did not recover past {recovery_level:.2f}[/]")
        return 1
    console.print(f"[bold green]Loop closed:[/] decay, alert, retrain, promotion, hot swap; live accuracy back above "
                  f"{recovery_level:.2f} and every alert resolved.")
    return 0
