"""The ``driftline`` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from schemas.config import load_monitor_config
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


def _local_kafka(data_dir: Path, port: int):  # type: ignore[no-untyped-def]
    from streams.localkafka import LocalKafka

    return LocalKafka(data_dir=data_dir, port=port)


@kafka_app.command("start")
def kafka_start(
    port: Annotated[int, typer.Option(help="PLAINTEXT port on 127.0.0.1 (the controller takes port+1).")] = 9092,
    data_dir: Annotated[Path, typer.Option(help="Storage, config, pid and log of the broker.")] = DEFAULT_KAFKA_DIR,
) -> None:
    """Resolve the broker jars with Maven (once), format storage (once) and start the broker."""
    kafka = _local_kafka(data_dir, port)
    kafka.start()
    typer.echo(f"Kafka is up at {kafka.bootstrap} (pid {kafka.pid()}, log {kafka.log_file})")


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
    from streams.topics import ensure_topics

    created = ensure_topics(load_settings())
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


@app.command()
def worker(
    config: Annotated[Optional[Path], typer.Option(help="Monitor config (default: DRIFTLINE_MONITOR_CONFIG).")] = None,
) -> None:
    """Run the Faust worker: join, monitor, alert, trigger retrains."""
    from streams.settings import load_settings
    from streams.topics import ensure_topics

    settings = load_settings(**({"monitor_config": config} if config else {}))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    monitor_config = load_monitor_config(settings.monitor_config)
    # Build the monitors once up front so a bad detector parameter fails here, naming its field.
    from detectors.monitor import MonitorSet
    from detectors.registry import build_detector

    MonitorSet(monitor_config, build_detector)
    ensure_topics(settings)

    import faust

    from streams.app import create_app

    faust_app = create_app(settings, monitor_config)
    faust.Worker(faust_app, loglevel=settings.log_level.lower()).execute_from_commandline()


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Utterances to replay.")] = 12_000,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 150.0,
) -> None:
    """Replay the speech scenario through a real worker on a local (or configured) Kafka."""
    from streams.demo import run_demo

    raise typer.Exit(run_demo(n_events=events, timeout=timeout))


def main() -> None:
    try:
        app()
    except DriftlineError as exc:
        typer.echo(f"driftline: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
