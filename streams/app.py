"""The Faust worker: a thin shell that reads raw bytes, calls the pure core and sends results.

Two stages, both by default; ``DRIFTLINE_WORKER_ROLE`` (``driftline worker --role``) runs one alone, so that
each gets a core of its own in another process (one Python process runs one thread at a time):

* ``ingest``, a task that runs :class:`~streams.worker.ingest.IngestThread`:
  it reads predictions and outcomes in bulk with confluent-kafka, off faust's
  per-message loop (about 200 µs of CPU a message here), and hands them to
  :class:`~streams.worker.ingest.IngestService`: the join
  (:class:`detectors.ingest.stage.JoinStage`) and its changelog, a batch per
  partition and the watermarks to the internal monitor-input topic, labelled
  batches to the retrainer, dead letters and expiries.
* ``monitor``, a faust agent over the monitor-input topic (one message carries
  up to a thousand items, so faust's per-message cost is divided by that), so
  each model's events meet in one worker; it hands them to
  :class:`~streams.worker.monitor.MonitorService`: the merge back into
  event-time order, :class:`detectors.monitors.monitor_set.MonitorSet`, the
  checkpoints to the monitor-state table, alerts and retrain triggers.

Agent concurrency stays 1: faust-streaming #606 loses messages above it.
"""

from __future__ import annotations

from typing import Any, get_args

import faust
from prometheus_client import generate_latest

from schemas.config import MonitorConfig
from schemas.decoding import RejectionKind
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.worker.handoff import BatchHandoff
from streams.worker.ingest import IngestThread
from streams.worker.monitor import MonitorService
from streams.worker.outbox import Outbox
from streams.worker.state import MonitorState, state_signer

__all__ = ["create_app"]


def create_app(settings: Settings, config: MonitorConfig, metrics: WorkerMetrics | None = None) -> faust.App:
    """Build the worker's Faust app, with the stages ``settings.worker_role`` asks for (both by default).

    The monitor config is validated before this is called.
    """
    metrics = metrics or WorkerMetrics()
    kafka = settings.kafka_access
    app = faust.App(
        # A worker of the ingest role alone takes no part in the monitor stage's group.
        settings.app_id if settings.worker_role != "ingest" else f"{settings.app_id}-ingest-only",
        broker=kafka.faust_broker(),
        broker_credentials=kafka.faust_credentials(),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_in_thread=False,
        broker_session_timeout=settings.broker_session_timeout,
        broker_request_timeout=settings.broker_request_timeout,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Faust's own table/recovery machinery is unused for now; keep its logs quiet.
        loghandlers=[],
    )
    # With both stages here, the ingest stage hands the monitor-input batches it writes to the monitor stage
    # decoded (streams.worker.handoff); Kafka still carries them, and is what counts.
    handoff = BatchHandoff() if settings.worker_role == "all" else None
    if settings.worker_role != "monitor":
        _add_ingest(app, settings, config, metrics, handoff)
    if settings.worker_role != "ingest":
        _add_monitor(app, settings, config, metrics, handoff)
    else:
        metrics.declare({}, get_args(RejectionKind))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain; version=0.0.4")

    app.driftline_metrics = metrics  # type: ignore[attr-defined]
    return app


def _add_ingest(app: faust.App, settings: Settings, config: MonitorConfig, metrics: WorkerMetrics,
                handoff: BatchHandoff | None) -> None:
    ingest_thread = IngestThread(settings, config, metrics, handoff)

    @app.task
    async def ingest() -> None:
        await ingest_thread.run()


def _add_monitor(app: faust.App, settings: Settings, config: MonitorConfig, metrics: WorkerMetrics,
                 handoff: BatchHandoff | None) -> None:
    names = settings.topics
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    monitor_input = app.topic(names.monitor_input, internal=False, **raw)
    # The monitor state's changelog (see streams.worker.monitor) is declared here only to keep it raw bytes
    # (faust's default is json).
    state_changelog = app.topic(
        f"{settings.app_id}-monitor-state-changelog", partitions=settings.partitions, compacting=True, deleting=False,
        internal=True, allow_empty=True, acks=False, maxsize=131_072, **raw,
    )
    state = MonitorState(state_signer(settings), metrics)
    state.table = app.Table("monitor-state", partitions=settings.partitions, changelog_topic=state_changelog,
                            help="Monitor state checkpoints", on_changelog_event=state.on_changelog_event)
    monitor_service = MonitorService(settings, config, metrics, Outbox(app), app, state, handoff)
    metrics.declare(monitor_service.metric_series(), get_args(RejectionKind))
    metrics.declare_predictions(config)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        await monitor_service.revoke({tp.partition for tp in revoked if tp.topic == names.monitor_input})

    @app.agent(monitor_input, concurrency=1)
    async def monitor(stream: faust.StreamT[bytes]) -> None:
        await monitor_service.consume(stream)

    @app.page("/checkpoint")
    async def checkpoint_page(web: Any, request: Any) -> Any:
        return web.json(monitor_service.status())
