"""The ``driftline`` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Optional

import typer

from schemas.config import MonitorConfig, load_monitor_config
from schemas.exceptions import DriftlineError

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Streaming drift monitoring for ML models on Kafka.")
kafka_app = typer.Typer(no_args_is_help=True, help="A local single-node Apache Kafka for development and tests.")
topics_app = typer.Typer(no_args_is_help=True, help="Driftline's Kafka topics.")
schemas_app = typer.Typer(no_args_is_help=True, help="The JSON Schema contract of the events.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")

DEFAULT_KAFKA_DIR = Path(".driftline/kafka")


def _local_kafka(data_dir: Path, port: int, secure: bool = False):  # type: ignore[no-untyped-def]
    from streams.localkafka import LocalKafka

    # A data dir once started secured stays so: its users, CA and ACLs live there.
    secured_before = LocalKafka(data_dir=data_dir, secure=True).secrets.ca_file.exists()
    return LocalKafka(data_dir=data_dir, port=port, secure=secure or secured_before)


@kafka_app.command("start")
def kafka_start(
    port: Annotated[int, typer.Option(help="PLAINTEXT port on 127.0.0.1 (the controller takes port+1).")] = 9092,
    data_dir: Annotated[Path, typer.Option(help="Storage, config, pid and log of the broker.")] = DEFAULT_KAFKA_DIR,
    secure: Annotated[bool, typer.Option(
        help="SASL_SSL on the port instead of PLAINTEXT: SCRAM-SHA-512 users, a private CA, ACLs (use a data dir of its own).",
    )] = False,
) -> None:
    """Resolve the broker jars with Maven (once), format storage (once) and start the broker."""
    kafka = _local_kafka(data_dir, port, secure)
    kafka.start()
    typer.echo(f"Kafka is up at {kafka.bootstrap} (pid {kafka.pid()}, log {kafka.log_file})")
    if secure:
        _print_secure_environment(kafka)


def _print_secure_environment(kafka) -> None:  # type: ignore[no-untyped-def]
    """The variables that connect a Driftline process as the ``driftline`` user; the password stays in its file."""
    from streams.secure_broker import CLIENT_USER

    settings = kafka.client_settings()
    typer.echo("Connect as the driftline user (topics and groups starting with 'driftline') with:")
    for field, value in settings.items():
        if field == "kafka_sasl_password":
            value = f"$(cat {kafka.secrets.password_file(CLIENT_USER)})"
        typer.echo(f"  export DRIFTLINE_{field.upper()}={value}")


@kafka_app.command("stop")
def kafka_stop(data_dir: Annotated[Path, typer.Option()] = DEFAULT_KAFKA_DIR) -> None:
    """Stop the local broker."""
    stopped = _local_kafka(data_dir, 9092).stop()
    typer.echo("Kafka stopped" if stopped else "Kafka was not running")


@kafka_app.command("status")
def kafka_status(
    port: Annotated[int, typer.Option()] = 9092,
    data_dir: Annotated[Path, typer.Option()] = DEFAULT_KAFKA_DIR,
) -> None:
    """Say whether the local broker runs and answers; exit 1 if not."""
    kafka = _local_kafka(data_dir, port)
    pid = kafka.pid()
    if pid is None:
        typer.echo("Kafka is not running")
        raise typer.Exit(1)
    ready = kafka.is_ready()
    typer.echo(f"Kafka pid {pid} {'answers' if ready else 'does NOT answer'} at {kafka.bootstrap}")
    if not ready:
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create() -> None:
    """Create Driftline's topics (idempotent), with DRIFTLINE_PARTITIONS partitions."""
    from streams.settings import load_settings
    from streams.topics import ensure_topics, faust_topic_specs

    settings = load_settings()
    created = ensure_topics(settings, extra=faust_topic_specs(settings))
    typer.echo("created: " + ", ".join(created) if created else "all topics exist")


@schemas_app.command("export")
def schemas_export(
    out_dir: Annotated[Path, typer.Option(help="Where the .json files go.")] = Path("schemas/jsonschema"),
    check: Annotated[bool, typer.Option(help="Only check that the files are up to date; exit 1 if not.")] = False,
) -> None:
    """Write (or check) the JSON Schema of every event."""
    from schemas.jsonschema_export import export_json_schemas, stale_json_schemas

    if check:
        stale = stale_json_schemas(out_dir)
        if stale:
            typer.echo("stale JSON Schema files: " + ", ".join(stale) + " (run `driftline schemas export`)")
            raise typer.Exit(1)
        typer.echo("JSON Schema files are up to date")
        return
    for path in export_json_schemas(out_dir):
        typer.echo(f"wrote {path}")


def _warn_about(monitor_config: MonitorConfig, say: Callable[[str], None]) -> None:
    """Say, at start-up, what in a valid config will not work at once (uncalibrated estimates), naming the field."""
    for field, message in monitor_config.warnings():
        say(f"{field}: {message}")


def _start_up(settings, specs) -> None:  # type: ignore[no-untyped-def]
    """Quieter Kafka logs, then the readiness gate: the broker answers, the topics exist, the broker lists them."""
    from streams.health.gate import ReadinessGate
    from streams.health.ratelimit import install_repeated_line_filter
    from streams.topics import ensure_topics

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_repeated_line_filter()
    gate = ReadinessGate(settings, {spec.name: spec.partitions for spec in specs})
    gate.wait(require_topics=False)
    ensure_topics(settings, extra=specs)
    waited = gate.wait()
    logging.getLogger("streams.cli").info("start-up: the broker lists all %d topics (waited %.1f s)", len(specs), waited)


@app.command()
def worker(
    config: Annotated[Optional[Path], typer.Option(help="Monitor config (default: DRIFTLINE_MONITOR_CONFIG).")] = None,
    role: Annotated[Optional[str], typer.Option(
        help="all (default: DRIFTLINE_WORKER_ROLE), ingest or monitor: run one stage, the other in more processes.",
    )] = None,
) -> None:
    """Run the worker: join, monitor, alert, trigger retrains."""
    from streams.settings import load_settings
    from streams.topics import faust_topic_specs, topic_specs

    overrides: dict[str, object] = {"monitor_config": config} if config else {}
    if role:
        overrides["worker_role"] = role
    settings = load_settings(**overrides)
    from detectors import calibration

    calibration.use_cache_dir(settings.calibration_dir)
    monitor_config = load_monitor_config(settings.monitor_config)
    _warn_about(monitor_config, lambda text: logging.getLogger("streams.cli").warning("%s", text))
    # Build the monitors once up front so a bad detector parameter fails here, naming its field.
    from detectors.monitors.monitor_set import MonitorSet
    from detectors.registry import build_detector

    MonitorSet(monitor_config, build_detector)
    _start_up(settings, [*topic_specs(settings), *faust_topic_specs(settings)])

    from streams.app import DriftlineWorker, create_app, start_watchdog

    from streams.gc_tuning import tune_garbage_collection

    faust_app = create_app(settings, monitor_config)
    start_watchdog(faust_app, settings)
    tune_garbage_collection()
    DriftlineWorker(faust_app, loglevel=settings.log_level.lower()).execute_from_commandline()


@app.command()
def demo(
    scenario: Annotated[str, typer.Option(help="speech (the whole retrain loop), speech-accent, stock, robot, fraud or recommender.")] = "speech",
    events: Annotated[Optional[int], typer.Option(help="Predictions to replay (default: the scenario's own; speech 12,000).")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 150.0,
    seed: Annotated[int, typer.Option(help="Seed of the scenario's generator (not used by speech).")] = 7,
) -> None:
    """Replay a scenario through a real worker on a local (or configured) Kafka and narrate its alerts."""
    if scenario == "speech":
        from streams.demo import run_demo

        raise typer.Exit(run_demo(n_events=events or 12_000, timeout=timeout))
    from streams.exceptions import UnknownScenario
    from streams.scenario_demo import run_scenario_demo

    try:
        code = run_scenario_demo(scenario, n_events=events, seed=seed, timeout=timeout)
    except UnknownScenario as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario") from exc
    raise typer.Exit(code)


models_app = typer.Typer(no_args_is_help=True, help="The model registry: versions, lineage, rollbacks.")
app.add_typer(models_app, name="models")


def _retrainer_setup(config: Optional[Path]):  # type: ignore[no-untyped-def]
    from retrainer.config import retrainer_config
    from streams.settings import load_settings

    settings = load_settings(**({"monitor_config": config} if config else {}))
    return settings, retrainer_config(load_monitor_config(settings.monitor_config), source=str(settings.monitor_config))


@app.command()
def retrainer(
    config: Annotated[Optional[Path], typer.Option(help="Monitor config with the learners: section (default: DRIFTLINE_MONITOR_CONFIG).")] = None,
) -> None:
    """Run the retrainer: learn online from labelled examples, answer retrain triggers, publish model versions."""
    from streams.retrainer_app import run_retrainer
    from streams.topics import retrainer_topic_specs

    settings, learners = _retrainer_setup(config)
    _start_up(settings, retrainer_topic_specs(settings))
    run_retrainer(settings, learners)


def _registry(model: Optional[str] = None):  # type: ignore[no-untyped-def]
    """The settings and the registry they name (DRIFTLINE_REGISTRY), reading only ``model`` if given: the same
    commands, the same output, on both backends."""
    from streams.registries import open_backend
    from streams.settings import load_settings

    settings = load_settings()
    return settings, open_backend(settings, [model] if model else [], register=False).registry


@models_app.command("list")
def models_list(model: Annotated[Optional[str], typer.Argument(help="Only this model.")] = None) -> None:
    """Every version of every model (or of one), its status, parent and headline metric."""
    settings, registry = _registry(model)
    names = [model] if model else registry.models()
    if not names or (model and not registry.history(model)):
        typer.echo(f"no versions in {registry.location}")
        raise typer.Exit(1 if model else 0)
    for name in names:
        current = registry.current(name)
        for v in registry.versions(name):
            mark = "*" if current is not None and v.version == current.version else " "
            headline = ", ".join(f"{k}={val:.4g}" for k, val in v.metrics.items() if k.startswith(("challenger_", "progressive_")))
            typer.echo(f"{mark} {name} {v.version:>4} {v.status:<11} parent={v.parent_version or '-':<4} "
                       f"examples={v.n_examples:<6} {headline}")
    typer.echo("(* = current, served from the models topic)")


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument()],
    version: Annotated[Optional[str], typer.Argument(help="Default: the current version.")] = None,
) -> None:
    """One version's lineage: every record written for it, as JSON lines."""
    from retrainer.exceptions import UnknownVersion

    settings, registry = _registry(model)
    if version is None:
        current = registry.current(model)
        if current is None:
            typer.echo(f"model {model!r} has no current version", err=True)
            raise typer.Exit(1)
        version = current.version
    try:
        registry.get(model, version)
    except UnknownVersion as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    for record in registry.history(model):
        if record.version == version:
            typer.echo(record.model_dump_json())


@models_app.command("rollback")
def models_rollback(
    model: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why; kept in the registry.")] = "",
) -> None:
    """Roll back to the previously promoted version and announce it on the models topic."""
    from datetime import datetime, timezone

    from confluent_kafka import Producer

    from streams.retrainer_app import publish_versions

    settings, registry = _registry(model)
    records = registry.rollback(model, now=datetime.now(timezone.utc), reason=reason)
    producer = Producer({**settings.confluent_config(), "acks": "all"})
    failed = publish_versions(producer, settings.topics.models, records)
    typer.echo(f"{model}: version {records[0].version} rolled back, version {records[1].version} is current")
    if failed:
        typer.echo(f"the registry is updated but {failed} message(s) did not reach {settings.topics.models}; "
                   "the retrainer republishes the registry when it starts", err=True)
        raise typer.Exit(1)


@app.command()
def backtest(
    config: Annotated[Path, typer.Option(help="Monitor config (YAML).")],
    input: Annotated[Path, typer.Option(help="JSON lines: one prediction or outcome event per line.")],
    output: Annotated[Optional[Path], typer.Option(help="Write the alerts it would publish, one JSON per line.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Draw each monitored metric with alert markers (PNG).")] = None,
    ttl_seconds: Annotated[float, typer.Option(help="Event-time seconds an event waits for its partner.")] = 3600.0,
) -> None:
    """Replay a log through the worker's own join and monitors, with no Kafka, to tune monitors."""
    from rich.console import Console

    from streams.backtest_report import alerts_table, backtest_file, plot_report, summary_table
    from streams.gc_tuning import tune_garbage_collection

    console = Console(highlight=False)
    monitor_config = load_monitor_config(config)
    _warn_about(monitor_config, lambda text: console.print(f"[yellow]warning[/]: {text}"))
    if not input.exists():
        raise typer.BadParameter(f"{input} does not exist", param_hint="--input")
    tune_garbage_collection()
    result = backtest_file(monitor_config, input, ttl_seconds, console)
    for bad in result.bad_lines[:20]:
        where = f"line {bad.line_number}" if bad.line_number else "example"
        console.print(f"[yellow]skipped {where}[/]: {bad.reason}")
    if len(result.bad_lines) > 20:
        console.print(f"[yellow]… and {len(result.bad_lines) - 20} more bad lines[/]")
    if output is not None:
        output.write_text("".join(a.model_dump_json() + "\n" for a in result.alerts))
        console.print(f"wrote {len(result.alerts)} alerts to {output}")
    if plot is not None:
        plot_report(result, monitor_config, plot)
        console.print(f"wrote {plot}")
    console.print(summary_table(result, monitor_config))
    if any(a.status == "fired" for a in result.alerts):
        console.print(alerts_table(result))


@app.command()
def scenario(
    name: Annotated[str, typer.Argument(help="speech, speech-accent, stock, robot, fraud or recommender.")],
    output: Annotated[Path, typer.Option(help="JSON-lines file to write, events in arrival order.")],
    events: Annotated[Optional[int], typer.Option(help="Predictions (default: the scenario's own; speech 12,000).")] = None,
    seed: Annotated[int, typer.Option()] = 7,
    config_output: Annotated[Optional[Path], typer.Option(help="Also write the scenario's monitor config (YAML).")] = None,
) -> None:
    """Write a synthetic scenario's events as JSON lines (and its monitors), for `driftline backtest`."""
    from streams.exceptions import UnknownScenario
    from streams.scenarios import make_scenario

    try:
        chosen = make_scenario(name, n_events=events, seed=seed)
    except UnknownScenario as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME") from exc
    n_lines = 0
    with output.open("w") as out:
        for event in chosen.stream():
            out.write(event.model_dump_json() + "\n")
            n_lines += 1
    typer.echo(f"wrote {n_lines:,} events to {output} (the change is at prediction {chosen.change_at:,})")
    if config_output is not None:
        config_output.write_text(chosen.MONITORS)
        typer.echo(f"wrote its monitor config to {config_output}")


def main() -> None:
    try:
        app()
    except DriftlineError as exc:
        typer.echo(f"driftline: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
