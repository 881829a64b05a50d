"""``driftline demo --scenario NAME``: one use-case scenario through a real worker on Kafka, its alerts narrated.

The speech scenario's demo (:mod:`streams.demo`) closes the whole retrain loop.
This one shows what the monitors of the other scenarios (stock, robot, fraud,
recommender, speech-accent) say about live traffic: it writes the scenario's
monitor config, starts a worker, publishes the scenario's events in arrival
order with the :class:`~streams.client.PredictionLogger`, and prints every
alert and retrain trigger as it comes, with where it fell relative to the
change.  It succeeds when at least one alert fired after the change and none
fired before it (apart from those the scenario causes on purpose, such as the
stock scenario's early price spikes).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from schemas.events import Alert, OutcomeEvent, RetrainTrigger
from streams.client import PredictionLogger
from streams.demo_watch import DemoWatch
from streams.localkafka import LocalKafka
from streams.processes import Samples, free_port, metric_sum, scrape_metrics, start_worker, stop_worker
from streams.scenarios import make_scenario
from streams.settings import load_settings
from streams.topics import ensure_topics

__all__ = ["run_scenario_demo"]

# After the last labelled example is counted, wait this long for the alerts it caused.
_SETTLE_SECONDS = 3.0


def _kafka(console: Console) -> tuple[str, LocalKafka | None]:
    """The configured broker, or the local one (started if need be); the second item is set if we started it."""
    configured = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP")
    if configured is not None:
        return configured, None
    local = LocalKafka(data_dir=Path(".driftline/kafka"), port=9092)
    running = local.pid() is not None
    if not running:
        console.print("[bold]Starting a local Apache Kafka[/] (first run resolves its jars with Maven)…")
    local.start()
    console.print(f"Kafka at {local.bootstrap}")
    return local.bootstrap, None if running else local


def run_scenario_demo(
    name: str, n_events: int | None = None, seed: int = 7, timeout: float = 150.0, rate: float = 2000.0
) -> int:
    """Replay scenario ``name`` through a worker; 0 if alerts fired after the change and none before it.

    Parameters
    ----------
    name
        A scenario of :data:`streams.scenarios.SCENARIOS` other than speech (see :func:`streams.demo.run_demo`).
    n_events
        Predictions to replay (default: the scenario's own).
    seed
        Seed of the scenario's generator.
    timeout
        Wall-clock seconds to give the whole run, Kafka start-up included.
    rate
        Events (predictions and outcomes) published per second, so that both topics move together.
    """
    scenario = make_scenario(name, n_events=n_events, seed=seed)
    console = Console(highlight=False)
    started = time.monotonic()
    stamp = str(int(time.time()))
    work = Path(".driftline/demo") / f"{name}-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    bootstrap, ours = _kafka(console)

    config_path = work / "monitors.yaml"
    config_path.write_text(scenario.MONITORS)
    web_port = free_port()
    prefix = f"demo{stamp}."
    env = {
        "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
        "DRIFTLINE_TOPIC_PREFIX": prefix,
        "DRIFTLINE_APP_ID": f"driftline-{name}-{stamp}",
        "DRIFTLINE_MONITOR_CONFIG": str(config_path),
        "DRIFTLINE_DATA_DIR": str(work / "worker"),
        "DRIFTLINE_WEB_PORT": str(web_port),
        "DRIFTLINE_PARTITIONS": "2",
    }
    settings = load_settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=2)
    ensure_topics(settings)
    topics = settings.topics
    worker = start_worker(env, work / "worker.log")
    console.print(f"Worker started (pid {worker.pid}, metrics on http://127.0.0.1:{web_port}/metrics, "
                  f"log {work / 'worker.log'}, monitors {config_path})")

    def where(event_time: datetime) -> str:
        n = scenario.index_at(event_time)
        return f"prediction {n:>6,} ({n - scenario.change_at:+,} from the change)"

    def on_alert(a: Alert) -> None:
        colour = "green" if a.status == "resolved" else "red"
        console.print(f"[{colour}]ALERT {a.status:<8}[/] {where(a.event_time)} {a.kind}/{a.monitor}/{a.detector} "
                      f"v{a.model_version or '-'}{f' [{a.segment}]' if a.segment else ''}: {a.message}")

    def on_trigger(t: RetrainTrigger) -> None:
        console.print(f"[yellow]RETRAIN {t.reason}[/] {where(t.event_time)}: {t.message}")

    watch = DemoWatch(settings.confluent_config(), topics, f"demo-watch-{stamp}", on_alert=on_alert, on_trigger=on_trigger)

    console.print(f"Publishing the [bold]{name}[/] scenario: {scenario.n_events:,} predictions and their outcomes at "
                  f"{rate:,.0f} events/s; the change comes at prediction {scenario.change_at:,}.\n"
                  f"[dim]{(type(scenario).__doc__ or '').strip().splitlines()[0]}[/]")
    logger = PredictionLogger(settings.confluent_config(), topics)
    n_outcomes = 0
    publishing = time.monotonic()
    for n_sent, event in enumerate(scenario.stream(), start=1):
        if isinstance(event, OutcomeEvent):
            logger.log_outcome(event)
            n_outcomes += 1
        else:
            logger.log_prediction(event)
        if n_sent % 500 == 0:
            watch.poll(0.0)
            ahead = n_sent / rate - (time.monotonic() - publishing)
            if ahead > 0:
                time.sleep(ahead)
    logger.flush(30)
    console.print(f"Published {logger.stats.n_delivered:,} events ({n_outcomes:,} outcomes; "
                  f"{scenario.n_events - n_outcomes:,} predictions never get one).\n")

    samples: Samples = {}
    settled_at: float | None = None
    deadline = started + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        watch.poll(0.5)
        samples = scrape_metrics(web_port) or samples
        if metric_sum(samples, "driftline_examples_total") >= n_outcomes:
            settled_at = settled_at or time.monotonic()
            if time.monotonic() - settled_at >= _SETTLE_SECONDS:
                break
    watch.poll(1.0)
    watch.close()
    stop_worker(worker)
    if ours is not None:
        ours.stop()
    return _report(console, scenario, watch.alerts, watch.triggers, samples, n_outcomes, settled_at is not None,
                   time.monotonic() - started, work)


def _report(console: Console, scenario: Any, alerts: list[Alert], triggers: list[RetrainTrigger], samples: Samples,
            n_outcomes: int, finished: bool, elapsed: float, work: Path) -> int:
    table = Table(title=f"Alerts on {scenario.MODEL} (change at prediction {scenario.change_at:,})")
    for column in ("status", "kind", "monitor", "detector", "version", "segment", "feature", "first", "n"):
        table.add_column(column, justify="right" if column in ("first", "n") else "left")
    groups: dict[tuple[str | None, ...], list[Alert]] = {}
    for a in alerts:
        key = (a.status, a.kind, a.monitor, a.detector, a.model_version, a.segment, a.feature)
        groups.setdefault(key, []).append(a)
    for key, group in sorted(groups.items(), key=lambda kv: min(x.event_time for x in kv[1])):
        first = scenario.index_at(min(x.event_time for x in group)) - scenario.change_at
        table.add_row(*(k or "-" for k in key), f"{first:+,}", str(len(group)))
    console.print(table)
    reasons = Counter(t.reason for t in triggers)
    console.print(f"Labelled examples the worker scored: {metric_sum(samples, 'driftline_examples_total'):,.0f} of "
                  f"{n_outcomes:,}; retrain triggers: {', '.join(f'{n} {r}' for r, n in sorted(reasons.items())) or 'none'}; "
                  f"wall time {elapsed:.1f} s")
    fired = [a for a in alerts if a.status == "fired"]
    planned = [a for a in fired if a.event_time < scenario.change_time and scenario.planned_before_change(a)]
    early = [a for a in fired if a.event_time < scenario.change_time and a not in planned]
    late = [a for a in fired if a.event_time >= scenario.change_time]
    seen = {a.monitor for a in late}
    if planned:
        console.print(f"{len(planned)} alert(s) before the change are the scenario's own doing "
                      f"(e.g. the stock scenario's early price spikes), as planned.")
    if not finished:
        console.print(f"[yellow]The worker did not score every labelled example in time; see {work / 'worker.log'}[/]")
    if missing := sorted(scenario.EXPECTED_MONITORS - seen):
        console.print(f"[yellow]Expected but not seen after the change: {', '.join(missing)}[/]")
    if early:
        console.print(f"[red]{len(early)} alert(s) fired before the change: false alarms[/]")
        return 1
    if not late:
        console.print("[red]No alert fired after the change[/]")
        return 1
    console.print(f"[bold green]{len(late)} alert(s) fired after the change and none before it.[/]")
    return 0
