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

import logging
from typing import Any, get_args

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from prometheus_client import generate_latest

from schemas.config import MonitorConfig
from schemas.decoding import RejectionKind
from streams.health.ratelimit import install_repeated_line_filter
from streams.health.liveness import HealthState, StageTracker, WatchdogThread
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.worker.commit_limit import CommitLimit
from streams.worker.handoff import BatchHandoff
from streams.worker.ingest import IngestThread
from streams.worker.monitor import MonitorService
from streams.worker.outbox import Outbox
from streams.worker.state import MonitorState, state_signer

__all__ = ["DriftlineApp", "DriftlineWorker", "create_app", "start_watchdog"]

log = logging.getLogger(__name__)


#: How long the broker may hold a fetch of the monitor stage's consumer waiting for data (faust fixes 1,500 ms).
MONITOR_FETCH_WAIT_MS = 100


class _MonitorConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread, with the broker's wait for a fetch cut to :data:`MONITOR_FETCH_WAIT_MS`.

    aiokafka sends one fetch at a time to a broker, and leaves out of it the partitions whose fetched records are
    not consumed yet (its fetcher's code).  When every monitor-input partition has records waiting to be consumed,
    the fetch names only partitions where nothing comes (faust's leader topic, the checkpoints' changelog), and
    the broker holds it the full 1.5 s that faust asks for: the monitor-input records that come meanwhile wait
    for it.  In the benchmark's steady-rate run (10,000 events/s) that made 12 of 34 runs here deliver the
    monitor stage its input in bursts, 1-2 s apart: alert latency p50 0.8-2.2 s, p99 2.1-3.2 s, against 0.2-0.3
    and 0.3-0.6 s in the others; with 100 ms, 16 runs of 16 were of the others.
    """

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start(), which hands it to the fetcher (tests/unit/test_monitor_fetch.py checks it).
        consumer._fetch_max_wait_ms = MONITOR_FETCH_WAIT_MS
        return consumer


class _MonitorConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _MonitorConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> int | None:
        # Never past the monitor stage's own acks: see streams.worker.commit_limit.
        offset = super()._new_offset(tp)
        limit: CommitLimit | None = getattr(self.app, "driftline_commit_limit", None)
        return offset if limit is None else limit.clamp(tp, offset)


class _Transport(faust_aiokafka.Transport):
    Consumer = _MonitorConsumer


class DriftlineApp(faust.App):
    """faust's app, with the fetch wait of :class:`_MonitorConsumerThread`; and a rebalance which comes while the
    worker stops is left alone.

    faust-streaming (0.15.3, and its main branch) answers one with ``consumer.close()``.  That marks the aiokafka
    consumer closed and runs its client's and group coordinator's ``close`` on the app's event loop, not on the
    consumer thread's loop they live on: the connections close under the coordinator, which is marked dead
    and, being "closing", never looked up again.  The shutdown's last offset commit then retries
    GroupCoordinatorNotAvailableError every 100 ms, the heartbeat task is never stopped, and the process
    hangs until SIGKILL (seen in test_join_handover once its peer had left; reproduced by stopping two
    workers of one group a moment apart, with the main loop's stack in the consumer's final commit).
    Left alone, the rebalance completes, the final commit reaches the coordinator, and the shutdown stops
    the consumer on its own thread, which leaves the group.
    """

    def _on_rebalance_when_stopped(self) -> None:
        log.info("a rebalance came while stopping: left to complete; the shutdown stops the consumer")

    def _new_transport(self) -> _Transport:
        # faust's own picks the transport by the broker URL's scheme: ours are kafka://, the aiokafka one.
        return _Transport(self.conf.broker_consumer, self)


class DriftlineWorker(faust.Worker):
    """faust's worker, with the Kafka clients' repeated error lines rate-limited on the handlers it sets up."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        install_repeated_line_filter()


#: faust's consumer_max_fetch_size (see create_app).
MONITOR_FETCH_BYTES = 8 * 1024 * 1024


def create_app(settings: Settings, config: MonitorConfig, metrics: WorkerMetrics | None = None) -> faust.App:
    """Build the worker's Faust app, with the stages ``settings.worker_role`` asks for (both by default).

    The monitor config is validated before this is called.
    """
    metrics = metrics or WorkerMetrics()
    kafka = settings.kafka_access
    trackers: list[StageTracker] = []
    app = DriftlineApp(
        settings.faust_app_id,
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
        # Static membership (see Settings.instance_id): a restart with the same id takes its partitions back at once.
        consumer_group_instance_id=settings.instance_id,
        producer_acks=-1,
        # Per partition and fetch.  A monitor-input message carries up to 1,000 items, up to a megabyte: at faust's
        # default of 1 MiB each fetch brought one or two, and the monitor stage sat idle between them (py-spy on a
        # --role monitor process over a features20 backlog: 60% in select()).  features20, 200k predictions,
        # --role all: 10,900 events/s at 1 MiB, 13,900-14,200 at 4, 15,100-15,700 at 8, 15,100-17,600 at 16 MiB, which
        # held ~70 MiB more at its peak than 8 did.  A response stays within fetch_max_bytes (50 MiB) however many
        # partitions it holds.
        consumer_max_fetch_size=MONITOR_FETCH_BYTES,
        # Faust's own table/recovery machinery is unused for now; keep its logs quiet.
        loghandlers=[],
    )
    # With both stages here, the ingest stage hands the monitor-input batches it writes to the monitor stage
    # decoded (streams.worker.handoff); Kafka still carries them, and is what counts.
    handoff = BatchHandoff() if settings.worker_role == "all" else None
    if settings.worker_role != "monitor":
        trackers.append(_add_ingest(app, settings, config, metrics, handoff))
    if settings.worker_role != "ingest":
        trackers.append(_add_monitor(app, settings, config, metrics, handoff))
    else:
        metrics.declare({}, get_args(RejectionKind))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain; version=0.0.4")

    health = HealthState(trackers)
    metrics.health.declare(t.stage for t in trackers)
    _add_health_pages(app, health)
    app.driftline_metrics = metrics  # type: ignore[attr-defined]
    app.driftline_health = health  # type: ignore[attr-defined]
    return app


def start_watchdog(app: faust.App, settings: Settings) -> WatchdogThread:
    """Start the watchdog of an app made by :func:`create_app` (it exits the process when a stage is stuck)."""
    watchdog = WatchdogThread(settings, app.driftline_health, app.driftline_metrics.health)  # type: ignore[attr-defined]
    watchdog.start()
    return watchdog


def _add_health_pages(app: faust.App, health: HealthState) -> None:
    # 503 when not alive / not ready: what a compose healthcheck (curl -f) or a Kubernetes probe reads.
    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        ok, state = health.health()
        return web.json(state, status=200 if ok else 503)

    @app.page("/ready")
    async def ready_page(web: Any, request: Any) -> Any:
        ready, state = health.ready()
        return web.json(state, status=200 if ready else 503)


def _last_batch_of(metrics: WorkerMetrics, stage: str) -> Any:
    return lambda: metrics.registry.get_sample_value("driftline_last_batch_timestamp_seconds", {"stage": stage})


def _add_ingest(app: faust.App, settings: Settings, config: MonitorConfig, metrics: WorkerMetrics,
                handoff: BatchHandoff | None) -> StageTracker:
    topics = settings.topics
    tracker = StageTracker("ingest", settings.ingest_group, (topics.predictions, topics.outcomes),
                           last_batch=_last_batch_of(metrics, "ingest"))
    ingest_thread = IngestThread(settings, config, metrics, tracker, handoff)

    @app.task
    async def ingest() -> None:
        await ingest_thread.run()

    return tracker


def _add_monitor(app: faust.App, settings: Settings, config: MonitorConfig, metrics: WorkerMetrics,
                 handoff: BatchHandoff | None) -> StageTracker:
    names = settings.topics
    tracker = StageTracker("monitor", settings.faust_app_id, (names.monitor_input,),
                           last_batch=_last_batch_of(metrics, "monitor"))
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
    app.driftline_commit_limit = monitor_service.commit_limit  # type: ignore[attr-defined]
    metrics.declare(monitor_service.metric_series(), get_args(RejectionKind))
    metrics.declare_predictions(config)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        tracker.remove((tp.topic, tp.partition) for tp in revoked)
        await monitor_service.revoke({tp.partition for tp in revoked if tp.topic == names.monitor_input})

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        # Faust's rebalances are eager: this is the whole new assignment.
        tracker.set_assignment((tp.topic, tp.partition) for tp in assigned)

    @app.agent(monitor_input, concurrency=1)
    async def monitor(stream: faust.StreamT[bytes]) -> None:
        await monitor_service.consume(stream)

    @app.page("/checkpoint")
    async def checkpoint_page(web: Any, request: Any) -> Any:
        return web.json(monitor_service.status())

    return tracker
