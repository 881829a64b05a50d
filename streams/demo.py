"""``make demo``: the speech scenario's whole loop on a real Kafka (decay, alert, retrain, hot swap, recovery), narrated."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from retrainer.champions import register_initial_version
from retrainer.config import LearnerSpec, open_registry, open_store, retrainer_config
from retrainer.learners import OnlineModel, features_to_x
from schemas.config import parse_monitor_config
from schemas.events import Alert, ModelVersion, OutcomeEvent, RetrainTrigger
from schemas.topics import TopicNames
from streams.client import PredictionLogger
from streams.demo_watch import DemoWatch
from streams.localkafka import LocalKafka
from streams.processes import Samples, free_port, metric_sum, scrape_metrics, start_retrainer, start_worker, stop_worker
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
    demo = _SpeechDemo(n_events, timeout, rate)
    demo.start()
    demo.serve()
    done = demo.wait_for_loop()
    demo.stop()
    return demo.report(done)


def _rate_of(xs: list[bool]) -> str:
    return f"{sum(xs) / len(xs):.3f} over {len(xs):,} utterances" if xs else "-"


class _SpeechDemo:
    """One run of the speech demo: its steps share the run's processes, its clients and what it has seen.

    Parameters
    ----------
    n_events
        Utterances to serve.
    timeout
        Wall-clock seconds for the whole run, Kafka start-up included.
    rate
        Utterances served per second.
    """

    # Set by start(), one step at a time.
    local: LocalKafka | None
    we_started_kafka: bool
    web_port: int
    retrainer_port: int
    retrainer_dir: Path
    topics: TopicNames
    client_config: dict[str, str]
    shipped: ModelVersion
    worker: subprocess.Popen[bytes]
    retrainer: subprocess.Popen[bytes]
    server: ModelServer
    watch: DemoWatch

    def __init__(self, n_events: int, timeout: float, rate: float) -> None:
        self.n_events = n_events
        self.timeout = timeout
        self.rate = rate
        self.console = Console(highlight=False)
        self.started = time.monotonic()
        self.stamp = str(int(time.time()))
        self.work = Path(".driftline/demo") / self.stamp
        self.work.mkdir(parents=True, exist_ok=True)
        self.monitor_config = parse_monitor_config(DEMO_CONFIG)
        performance = self.monitor_config.models["speech-asr"].performance
        self.recovery_level = performance.threshold + performance.hysteresis
        self.scenario = LearnableSpeechScenario(n_events=n_events, change_at=n_events // 2, swapped_channels=(2, 7))
        self.produced = 0  # utterances predicted so far: the app's clock for the timeline
        self.swaps: list[tuple[int, str]] = []
        self.versions: list[tuple[int, ModelVersion]] = []
        self.served: list[tuple[int, str, bool]] = []
        self.samples: Samples = {}
        self.retrainer_samples: Samples = {}

    # -- the steps -------------------------------------------------------------

    def start(self) -> None:
        """Kafka and the run's topics, the shipped model, the worker and the retrainer, the app and the watch."""
        bootstrap = self._start_kafka()
        self._start_processes(bootstrap)
        self._start_app()

    def serve(self) -> None:
        """Serve every utterance live at ``rate``, log predictions and (later) outcomes, then some garbage."""
        console, scenario = self.console, self.scenario
        console.print(f"Serving live: {self.n_events:,} utterances at {self.rate:,.0f}/s; the microphone firmware "
                      f"changes at utterance {scenario.change_at:,}. Predictions come from the served model.")
        logger = PredictionLogger(self.client_config, self.topics)
        pending: list[OutcomeEvent] = []
        live_started = time.monotonic()
        for u in scenario.utterances():
            out = self.server.predict(u.features)
            self.served.append((u.index, out.version, out.prediction == u.truth))
            logger.log_prediction(scenario.prediction(u, str(out.prediction), out.version))
            self.produced = u.index + 1
            pending.append(scenario.outcome(u))
            # Ground truth arrives a little later than the prediction.
            if len(pending) > 50:
                logger.log_outcome(pending.pop(0))
            if u.index % 100 == 99:
                self.watch.poll(0.0)
                ahead = self.produced / self.rate - (time.monotonic() - live_started)
                if ahead > 0:
                    time.sleep(ahead)
        for outcome in pending:
            logger.log_outcome(outcome)
        raw = Producer({**self.client_config, "partitioner": "murmur2_random"})
        for i, value in enumerate(GARBAGE):
            raw.produce(self.topics.predictions, key=f"garbage-{i}".encode(), value=value)
        raw.flush(10)
        logger.flush(30)
        console.print(f"Produced {logger.stats.n_delivered:,} events and {len(GARBAGE)} malformed ones.\n")

    def wait_for_loop(self) -> bool:
        """Whether the worker processed everything and the loop closed before the deadline."""
        deadline = self.started + self.timeout
        while time.monotonic() < deadline and self.worker.poll() is None and self.retrainer.poll() is None:
            self.watch.poll(0.5)
            self.samples = scrape_metrics(self.web_port) or self.samples
            processed = metric_sum(self.samples, "driftline_events_processed_total")
            dead = metric_sum(self.samples, "driftline_events_dead_lettered_total")
            if processed >= 2 * self.n_events and dead >= len(GARBAGE) and self._loop_closed():
                return True
        return False

    def stop(self) -> None:
        """Read the last records and the retrainer's metrics, then stop the app, both processes and our Kafka."""
        self.watch.poll(1.0)
        self.retrainer_samples = scrape_metrics(self.retrainer_port)
        self.server.stop()
        self.watch.close()
        stop_worker(self.retrainer)
        stop_worker(self.worker)
        if self.local is not None and self.we_started_kafka:
            self.local.stop()

    def report(self, done: bool) -> int:
        """Print the timeline and the summary; 0 if the loop closed, without false alarms, and accuracy recovered."""
        elapsed = time.monotonic() - self.started
        console, scenario, alerts = self.console, self.scenario, self.watch.alerts
        _, _, fresh = self._live_accuracy()
        console.print()
        console.print(self._timeline())
        console.print(self._summary(elapsed))
        if not done:
            console.print(f"[red]The loop did not close in time: worker exit code {self.worker.returncode}, retrainer "
                          f"exit code {self.retrainer.returncode}; see {self.work / 'worker.log'} and "
                          f"{self.work / 'retrainer.log'}[/]")
            return 1
        early = [a for a in alerts if a.status == "fired" and scenario.utterance_at(a.event_time) < scenario.change_at]
        if early:
            console.print(f"[red]{len(early)} alert(s) fired before the change: false alarms[/]")
            return 1
        if not fresh or sum(fresh) / len(fresh) < self.recovery_level:
            console.print(f"[red]Live accuracy after the swap did not recover past {self.recovery_level:.2f}[/]")
            return 1
        console.print(f"[bold green]Loop closed:[/] decay, alert, retrain, promotion, hot swap; live accuracy back "
                      f"above {self.recovery_level:.2f} and every alert resolved.")
        return 0

    # -- starting --------------------------------------------------------------

    def _start_kafka(self) -> str:
        self.local = None
        self.we_started_kafka = False
        bootstrap = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP")
        if bootstrap is None:
            self.local = LocalKafka(data_dir=Path(".driftline/kafka"), port=9092)
            self.we_started_kafka = self.local.pid() is None
            self.console.print("[bold]Starting a local Apache Kafka[/] (first run resolves its jars with Maven)…")
            self.local.start()
            bootstrap = self.local.bootstrap
        self.console.print(f"Kafka at {bootstrap}")
        return bootstrap

    def _start_processes(self, bootstrap: str) -> None:
        work, stamp = self.work, self.stamp
        config_path = work / "monitors.yaml"
        config_path.write_text(DEMO_CONFIG)
        self.web_port, self.retrainer_port = free_port(), free_port()
        self.retrainer_dir = work / "retrainer"
        env = {
            "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
            "DRIFTLINE_TOPIC_PREFIX": f"demo{stamp}.",
            "DRIFTLINE_APP_ID": f"driftline-demo-{stamp}",
            "DRIFTLINE_MONITOR_CONFIG": str(config_path),
            "DRIFTLINE_DATA_DIR": str(work / "worker"),
            "DRIFTLINE_WEB_PORT": str(self.web_port),
            "DRIFTLINE_PARTITIONS": "2",
            "DRIFTLINE_RETRAINER_DATA_DIR": str(self.retrainer_dir),
            "DRIFTLINE_RETRAINER_WEB_PORT": str(self.retrainer_port),
        }
        settings = load_settings(kafka_bootstrap=bootstrap, topic_prefix=env["DRIFTLINE_TOPIC_PREFIX"], partitions=2)
        ensure_topics(settings)
        self.topics = settings.topics
        self.client_config = settings.confluent_config()

        model = self.scenario.model
        spec = retrainer_config(self.monitor_config).learners[model]
        self.shipped = register_shipped_model(self.retrainer_dir, self.scenario, spec)
        self.console.print(f"Registered the shipped model [bold]{model}[/] version {self.shipped.version} "
                           f"({spec.kind}, trained offline on {self.shipped.n_examples:,} utterances)")
        self.worker = start_worker(env, work / "worker.log")
        self.retrainer = start_retrainer({**env, "DRIFTLINE_LOG_LEVEL": "INFO"}, work / "retrainer.log")
        self.console.print(f"Worker started (pid {self.worker.pid}, metrics on http://127.0.0.1:{self.web_port}/metrics, "
                           f"log {work / 'worker.log'})")
        self.console.print(f"Retrainer started (pid {self.retrainer.pid}, metrics on "
                           f"http://127.0.0.1:{self.retrainer_port}/metrics, log {work / 'retrainer.log'})")

    def _start_app(self) -> None:
        self.server = ModelServer(self.scenario.model, open_store(self.retrainer_dir), self.client_config, self.topics,
                                  on_swap=self._on_swap)
        self.server.start()
        if self.server.wait_for_version(lambda r: r.version == self.shipped.version, 30) is None:
            self.console.print("[red]The app never received the shipped version from the models topic[/]")
        self.watch = DemoWatch(self.client_config, self.topics, f"demo-watch-{self.stamp}",
                               on_alert=self._on_alert, on_trigger=self._on_trigger, on_version=self._on_version)

    # -- narration -------------------------------------------------------------

    def _from_change(self, n: int) -> str:
        return f"{n - self.scenario.change_at:+,} from the change"

    def _on_swap(self, old: str | None, new: ModelVersion) -> None:
        self.swaps.append((self.produced, new.version))

    def _on_alert(self, alert: Alert) -> None:
        n = self.scenario.utterance_at(alert.event_time)
        colour = "red" if alert.status == "fired" else "green"
        self.console.print(f"[{colour}]ALERT {alert.status:<8}[/] utterance {n:>6,} ({self._from_change(n)}) "
                           f"[{alert.severity}] {alert.message}")

    def _on_trigger(self, trigger: RetrainTrigger) -> None:
        utterance = self.scenario.utterance_at
        self.console.print(f"[yellow]RETRAIN trigger[/] utterance {utterance(trigger.event_time):>6,}: "
                           f"train {trigger.model} on data from utterance {utterance(trigger.data_from):,} on")

    def _on_version(self, record: ModelVersion) -> None:
        if any(v.version == record.version and v.status == record.status for _, v in self.versions):
            return  # republished on the retrainer's start
        self.versions.append((self.produced, record))
        colour = {"promoted": "green", "rejected": "red"}.get(record.status, "cyan")
        when = f"app at utterance {self.produced:,}" if record.trigger_id is not None else "already registered"
        self.console.print(f"[{colour}]MODEL {record.model} v{record.version} {record.status}[/] ({when}): "
                           f"{record.reason}")

    def _loop_closed(self) -> bool:
        alerts = self.watch.alerts
        fired = {a.episode_id for a in alerts if a.status == "fired"}
        resolved = {a.episode_id for a in alerts if a.status == "resolved"}
        promoted = any(v.status == "promoted" and v.trigger_id is not None for _, v in self.versions)
        return bool(fired) and fired <= resolved and promoted

    # -- the report ------------------------------------------------------------

    def _live_accuracy(self) -> tuple[list[bool], list[bool], list[bool]]:
        """Whether each utterance was served right: before the change, after it by the shipped version, and after the swap."""
        change_at, shipped = self.scenario.change_at, self.shipped.version
        before = [ok for i, v, ok in self.served if i < change_at]
        stale = [ok for i, v, ok in self.served if i >= change_at and v == shipped]
        fresh = [ok for i, v, ok in self.served if i >= change_at and v != shipped]
        return before, stale, fresh

    def _timeline(self) -> Table:
        scenario, utterance = self.scenario, self.scenario.utterance_at
        timeline = Table(title="The loop, in utterances (the app's clock)")
        timeline.add_column("utterance", justify="right")
        timeline.add_column("from the change", justify="right")
        timeline.add_column("what")
        rows: list[tuple[int, str]] = [(scenario.change_at, "microphone firmware changes: features reordered")]
        for a in self.watch.alerts:
            detail = f"[{a.severity}]" if a.status == "fired" else f"rolling accuracy back to {a.statistic:.3f}"
            rows.append((utterance(a.event_time), f"alert {a.status} by {a.detector} {detail}"))
        for t in self.watch.triggers:
            rows.append((utterance(t.event_time), f"retrain trigger, data from utterance {utterance(t.data_from):,}"))
        for at, v in self.versions:
            if v.status in ("promoted", "rejected") and v.trigger_id is not None:
                m = v.metrics
                rows.append((at, f"v{v.version} {v.status} (parent v{v.parent_version}, {v.n_examples:,} examples; "
                                 f"challenger {m.get('challenger_accuracy', float('nan')):.3f} vs champion "
                                 f"{m.get('champion_accuracy', float('nan')):.3f})"))
        for at, version in self.swaps:
            if version != self.shipped.version:
                rows.append((at, f"app serves v{version} (hot swap)"))
        for n, what in sorted(rows, key=lambda r: r[0]):
            timeline.add_row(f"{n:,}", f"{n - scenario.change_at:+,}", what)
        return timeline

    def _summary(self, elapsed: float) -> Table:
        scenario, utterance, alerts = self.scenario, self.scenario.utterance_at, self.watch.alerts
        samples, retrainer_samples, shipped = self.samples, self.retrainer_samples, self.shipped.version
        before, stale, fresh = self._live_accuracy()
        table = Table(title="Driftline demo summary")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("utterances served", f"{self.n_events:,}")
        table.add_row("events processed (predictions + outcomes)",
                      f"{metric_sum(samples, 'driftline_events_processed_total'):,.0f}")
        table.add_row("events dead-lettered", f"{metric_sum(samples, 'driftline_events_dead_lettered_total'):,.0f}")
        table.add_row("events expired", f"{metric_sum(samples, 'driftline_events_expired_total'):,.0f}")
        fired = Counter(a.detector for a in alerts if a.status == "fired")
        for detector, n in sorted(fired.items()):
            first = min(utterance(a.event_time) for a in alerts if a.detector == detector and a.status == "fired")
            table.add_row(f"alerts fired by {detector}",
                          f"{n} (first {first - scenario.change_at:+,} utterances from the change)")
        table.add_row("alerts resolved", str(sum(1 for a in alerts if a.status == "resolved")))
        table.add_row("retrain triggers", str(len(self.watch.triggers)))
        table.add_row("examples the retrainer learnt from",
                      f"{metric_sum(retrainer_samples, 'driftline_retrainer_examples_total'):,.0f}")
        table.add_row("challengers promoted / rejected",
                      f"{metric_sum(retrainer_samples, 'driftline_challengers_total', outcome='promoted'):.0f} / "
                      f"{metric_sum(retrainer_samples, 'driftline_challengers_total', outcome='rejected'):.0f}")
        table.add_row("versions served", " -> ".join(f"v{v}" for _, v in self.swaps) or "-")
        table.add_row("live accuracy before the change", _rate_of(before))
        table.add_row(f"live accuracy after it, stale v{shipped}", _rate_of(stale))
        table.add_row("live accuracy after the hot swap", _rate_of(fresh))
        table.add_row("worker's rolling accuracy at the end", f"{metric_sum(samples, 'driftline_model_performance'):.3f}")
        table.add_row("wall time", f"{elapsed:.1f} s")
        return table
