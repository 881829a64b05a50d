"""The Faust worker: a thin shell that reads raw bytes, calls the pure core and sends results.

Two agents, each consuming micro-batches with ``take_events``:

* ``ingest`` reads predictions and outcomes (keyed by prediction id, so the two
  topics are co-partitioned), hands them to :class:`detectors.pipeline.JoinStage`
  and sends, per model, one message with the batch's predictions and labelled
  examples to the internal monitor-input topic (keyed by model), followed by a
  watermark message to every partition of it; labelled examples also go one by
  one to the labelled topic for the retrainer; rejects go to the dead-letter
  topic and expiries to the expired topic.  The events waiting in the join for
  their partner are logged to the join's changelog after every batch
  (:mod:`detectors.join_log`), and read back by whichever worker gets their
  partition next, after a crash or a rebalance.
* ``monitor`` reads the monitor-input topic, so each model's events meet in one
  worker, merges the batches of every ingest worker back into event-time order
  with the watermarks (:class:`detectors.pipeline.MonitorInputOrder`), runs
  :class:`detectors.monitor.MonitorSet` and publishes alerts and retrain
  triggers.

Agent concurrency stays 1: faust-streaming #606 loses messages above it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, get_args

import faust
from prometheus_client import generate_latest
from pydantic import TypeAdapter

from detectors.checkpoint import Checkpointer, decode_checkpoint, encode_checkpoint
from detectors.monitor import ModelMonitor, MonitorResult, MonitorSet
from detectors.pipeline import Held, MonitorInputOrder, RawRecord
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.decoding import Rejection, RejectionKind, decode
from schemas.events import LabelledExample, MonitorBatch, PredictionEvent
from streams.cloudevents import cloudevents_headers
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.worker.messages import (
    BATCH_BYTES,
    CLOUDEVENTS_SOURCE,
    MessageRef,
    SourceRef,
    dead_letter_headers,
    source_ref,
)
from streams.worker.outbox import Outbox
from streams.worker.ingest import IngestService

__all__ = ["SourceRef", "create_app"]

log = logging.getLogger(__name__)
_MONITOR_BATCH = TypeAdapter(MonitorBatch)


def create_app(settings: Settings, config: MonitorConfig, metrics: WorkerMetrics | None = None) -> faust.App:
    """Build the worker's Faust app; the monitor config is validated before this is called."""
    metrics = metrics or WorkerMetrics()
    names = settings.topics
    monitors = MonitorSet(config, build_detector)
    def performance_monitors(model: str) -> list[ModelMonitor]:
        """The model's main monitor and those of its further metrics."""
        return [monitors.monitors[model], *monitors.metric_monitors_of(model).values()]

    for model in monitors.monitors:
        for each in performance_monitors(model):
            metrics.performance_threshold.labels(model, each.metric_name).set(each.spec.performance.threshold)
            metrics.performance.labels(model, each.metric_name)
    metrics.declare(
        {model: (m.metric_name, [name for each in performance_monitors(model) for name in each.detector_names])
         for model, m in monitors.monitors.items()},
        get_args(RejectionKind),
    )
    metrics.declare_predictions(config)

    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
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
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    sources = app.topic(names.predictions, names.outcomes, internal=False, **raw)
    monitor_input = app.topic(names.monitor_input, internal=False, **raw)
    monitor_out = Outbox(app)
    ingest_service = IngestService(settings, config, metrics, Outbox(app), lambda: app.consumer)

    # Durable monitor state.  One entry per model (value: detectors.checkpoint bytes) in the changelog
    # partition equal to the model's monitor-input partition, so faust's table recovery has read it before the
    # monitor agent gets that partition's events.  The agent writes it straight to the changelog with the
    # producer and awaits the acks, once per checkpoint interval (and at once after a batch that alerts).
    # A monitor-input message is acked only once all its items are scored and checkpointed: the committed
    # offset never passes the state, so a kill -9 replays at most the messages since the last checkpoint,
    # and what the state already holds is skipped (see detectors.checkpoint).
    # The changelog is declared here only to keep it raw bytes (faust's default is json).
    state_changelog = app.topic(
        f"{settings.app_id}-monitor-state-changelog", partitions=settings.partitions, compacting=True, deleting=False,
        internal=True, allow_empty=True, acks=False, maxsize=131_072, **raw,
    )
    state_table = app.Table("monitor-state", partitions=settings.partitions, changelog_topic=state_changelog,
                            help="Monitor state checkpoints")
    checkpointer = Checkpointer(settings.checkpoint_seconds, settings.checkpoint_dedupe_ids)
    # One merge per monitor-input partition: a partition's models need its own order only, and a watermark
    # read on one partition says nothing of the data still unread on another.
    merges: dict[int, MonitorInputOrder[MessageRef]] = {}
    late_in_dropped_merges = [0]

    def merge_of(partition: int) -> MonitorInputOrder[MessageRef]:
        if partition not in merges:
            merges[partition] = MonitorInputOrder(settings.partitions, settings.join_idle_seconds,
                                                  settings.join_max_pending, time.time(), settings.order_grace_seconds)
        return merges[partition]

    def release_all_partitions(wall_time: float) -> tuple[list[Held[MessageRef]], list[Held[MessageRef]]]:
        predictions: list[Held[MessageRef]] = []
        labelled: list[Held[MessageRef]] = []
        for merge in merges.values():
            released = merge.release(wall_time)
            predictions += released[0]
            labelled += released[1]
        return predictions, labelled

    monitor_lock = asyncio.Lock()
    restored_partitions: set[int] = set()
    held: list[Any] = []  # monitor-input events read, acked once their items are scored and checkpointed
    # written: each model's checkpointed monitor-input offset; written_seen: the labelled examples its state holds.
    checkpoint_info: dict[str, Any] = {"n_checkpoints": 0, "n_restored": 0, "written": {}, "written_seen": {}}

    def restore_partition(partition: int) -> None:
        for blob in list(state_table.data.values()):
            checkpoint = decode_checkpoint(blob)
            if checkpoint is None or checkpoint.partition != partition:
                continue
            current = monitors.monitors.get(checkpoint.model)
            if current is None:
                continue
            if checkpoint.monitor.spec != current.spec:
                log.warning("monitor config of %s changed: its checkpoint is not restored", checkpoint.model)
                continue
            monitors.install(checkpoint.model, checkpoint.monitor, checkpoint.segments, checkpoint.data,
                             checkpoint.metrics)
            checkpointer.restore(checkpoint)
            checkpoint_info["n_restored"] += 1
            log.warning("restored %s from its checkpoint at monitor-input offset %d (%d examples seen)",
                        checkpoint.model, checkpoint.next_offset, checkpoint.monitor.n_seen)
        restored_partitions.add(partition)

    async def write_checkpoint(only: set[str] | None = None) -> None:
        """Write the changed models' state, then ack the events it wholly covers (call under monitor_lock).

        With ``only`` (the models that just alerted), write just theirs and ack nothing: encoding every
        model's state after each alert cost a fifth of the worker's time with 1,000 models.
        """
        snapshots = checkpointer.snapshot(monitors, time.time(), only)
        # Encoded before any await: the monitors must not change between snapshot and bytes.
        blobs = [(c.partition, c.model, c.next_offset, encode_checkpoint(c)) for c in snapshots]
        seen = {c.model: c.monitor.n_seen for c in snapshots}
        done = []
        if only is None:
            # An event is acked once every item of it is scored (below the partition's oldest waiting
            # message) and every model's state is written.
            waiting = {p: checkpointer.oldest_waiting(p) for p in {e.message.partition for e in held}}
            still_held = []
            for event in held:
                oldest = waiting[event.message.partition]
                (done if oldest is None or event.message.offset < oldest else still_held).append(event)
            held[:] = still_held
        producer = app.producer
        topic = state_table.changelog_topic.get_topic_name()
        acks = [await producer.send(topic, model.encode(), blob, partition, None, None)
                for partition, model, _, blob in blobs]
        await asyncio.gather(*acks)
        for event in done:
            event.ack()
        checkpoint_info["n_checkpoints"] += 1
        for _, model, next_offset, _ in blobs:
            checkpoint_info["written"][model] = next_offset
        checkpoint_info["written_seen"].update(seen)

    async def checkpoint_while_idle() -> None:
        # A plain task, not a faust timer: it must keep acking while faust waits for held events at shutdown.
        while True:
            await asyncio.sleep(min(1.0, settings.checkpoint_seconds / 2))
            async with monitor_lock:
                # A worker that stopped announcing (it died, or lost its partitions) stops holding items back.
                if any(merge.n_held for merge in merges.values()):
                    await score(*release_all_partitions(time.time()), events=[])
                if (held or checkpointer.dirty) and (checkpointer.due(time.time()) or app.should_stop
                                                     or app.rebalancing):
                    await write_checkpoint()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        await ingest_service.revoke({tp.partition for tp in revoked if tp.topic in ingest_service.side_of_topic})
        lost = {tp.partition for tp in revoked if tp.topic == names.monitor_input}
        if not lost:
            return
        async with monitor_lock:
            if held or checkpointer.dirty:
                await write_checkpoint()
            # Their items go unscored here; the new owner re-reads them from the committed offset.
            for partition in lost:
                gone = merges.pop(partition, None)
                late_in_dropped_merges[0] += gone.n_late if gone is not None else 0
            held[:] = [e for e in held if e.message.partition not in lost]
            for partition in lost:
                restored_partitions.discard(partition)
                checkpointer.forget_partition(partition)

    late_reported: Counter[str] = Counter()

    def report_late(stage: str, n_late: int) -> None:
        if n_late > late_reported[stage]:
            metrics.late.labels(stage).inc(n_late - late_reported[stage])
            late_reported[stage] = n_late

    @app.agent(sources, concurrency=1)
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        await ingest_service.consume(stream)

    @app.timer(interval=1.0)
    async def expire_while_idle() -> None:
        await ingest_service.tick()

    def publish_monitor(
        result: MonitorResult, dead: Sequence[tuple[RawRecord[SourceRef], Rejection]], outbox: Outbox
    ) -> None:
        for alert in result.alerts:
            outbox.add(
                names.alerts, alert.model.encode(), alert.model_dump_json().encode(),
                cloudevents_headers(CLOUDEVENTS_SOURCE, alert.alert_id, f"dev.driftline.alert.{alert.status}",
                                    alert.event_time),
            )
            metrics.alerts.labels(alert.model, alert.detector, alert.status, alert.severity).inc()
            log.warning("alert %s %s: %s", alert.status, alert.alert_id, alert.message)
        for trigger in result.triggers:
            outbox.add(
                names.retrain, trigger.model.encode(), trigger.model_dump_json().encode(),
                cloudevents_headers(CLOUDEVENTS_SOURCE, trigger.trigger_id, "dev.driftline.retrain",
                                    trigger.event_time),
            )
            metrics.retrain_triggers.labels(trigger.model, trigger.reason).inc()
        for example, reason in result.rejected:
            ref = SourceRef(names.monitor_input, -1, -1, example.prediction.model.encode())
            outbox.add(
                names.deadletter, ref.key, example.model_dump_json().encode(),
                dead_letter_headers(ref, Rejection("unscorable", reason), "monitor"),
            )
            metrics.examples_rejected.labels(example.prediction.model).inc()
        for record, rejection in dead:
            outbox.add(names.deadletter, record.ref.key, record.value, dead_letter_headers(record.ref, rejection, "monitor"))
        if result.n_unmonitored:
            metrics.examples_unmonitored.inc(result.n_unmonitored)
        for model in monitors.monitors:
            for each in performance_monitors(model):
                metrics.performance.labels(model, each.metric_name).set(each.metric_value)
            metrics.alerts_open.labels(model).set(sum(len(each.open_alerts) for each in performance_monitors(model)))

    @app.agent(monitor_input, concurrency=1)
    async def monitor(stream: faust.StreamT[bytes]) -> None:
        # Batches are ours, but a foreign producer could still write here.
        max_bytes = 2 * BATCH_BYTES + 4 * settings.max_event_bytes
        idle_task = asyncio.ensure_future(checkpoint_while_idle())
        try:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
                async with monitor_lock:
                    await monitor_batch(events, max_bytes)
        finally:
            idle_task.cancel()

    def admitted(items: Sequence[Held[MessageRef]], prefix: str) -> list[Any]:
        """The released items not already in the state (checkpointed, or re-published by a restarted ingest)."""
        out = []
        for held_item in items:
            item = held_item.item
            pid = item.prediction_id if isinstance(item, PredictionEvent) else item.prediction.prediction_id
            if held_item.model not in monitors.monitors or checkpointer.admit(
                held_item.model, held_item.ref.offset, prefix + pid
            ):
                out.append(item)
        return out

    async def score(predictions: Sequence[Held[MessageRef]], labelled: Sequence[Held[MessageRef]],
                    events: Sequence[Any], dead: Sequence[tuple[RawRecord[SourceRef], Rejection]] = ()) -> None:
        """Run the monitors on released items, publish what they decide, and checkpoint when it matters."""
        started = time.perf_counter()
        watched: list[PredictionEvent] = admitted(predictions, "p:")
        examples: list[LabelledExample] = admitted(labelled, "l:")
        result = monitors.observe_predictions(watched)
        metrics.observe_predictions(monitors, watched)
        result.extend(monitors.observe(examples))
        for model, n in Counter(e.prediction.model for e in examples).items():
            if model in monitors.monitors:
                metrics.examples.labels(model).inc(n)
        publish_monitor(result, dead, monitor_out)
        await monitor_out.send()
        metrics.observe_label_delay(examples, monitors.monitors)
        if events:
            metrics.observe_alert_latency(result.alerts, events)
            metrics.batch_seconds.labels("monitor").observe(time.perf_counter() - started)
        if checkpointer.due(time.time()):
            await write_checkpoint()
        elif result.alerts or result.triggers:
            # Right after alerts, so that a replay after a crash does not re-derive and re-send them.
            await write_checkpoint({each.model for each in [*result.alerts, *result.triggers]})

    async def monitor_batch(events: Sequence[Any], max_bytes: int) -> None:
        dead: list[tuple[RawRecord[SourceRef], Rejection]] = []
        wall = time.time()
        for event in events:
            partition, offset = event.message.partition, event.message.offset
            if partition not in restored_partitions:
                restore_partition(partition)
            # Hold the ack (take_events acks once; this reference is released by write_checkpoint).
            event.message.incref()
            held.append(event)
            decoded = decode(_MONITOR_BATCH, event.value, max_bytes)  # type: ignore[arg-type]
            if isinstance(decoded, Rejection):
                dead.append((RawRecord("prediction", event.value, source_ref(event)), decoded))  # type: ignore[arg-type]
                continue
            if decoded.model in monitors.monitors and not checkpointer.arrive(
                decoded.model, partition, offset, len(decoded.predictions) + len(decoded.labelled)
            ):
                continue  # wholly in the restored state
            merge_of(partition).add(decoded, MessageRef(partition, offset), wall)
        metrics.batch_size.labels("monitor").observe(len(events))
        await score(*release_all_partitions(wall), events=events, dead=dead)
        report_late("monitor", late_in_dropped_merges[0] + sum(merge.n_late for merge in merges.values()))
        metrics.observe_batch("monitor", events, lambda _topic: "monitor-input", app.consumer.highwater)

    @app.page("/checkpoint")
    async def checkpoint_page(web: Any, request: Any) -> Any:
        return web.json({
            **checkpoint_info,
            "n_replayed": checkpointer.n_replayed,
            "n_duplicates": checkpointer.n_duplicates,
            "n_held": len(held),
            "n_held_items": sum(merge.n_held for merge in merges.values()),
            "n_seen": {model: m.n_seen for model, m in monitors.monitors.items()},
            "n_predictions": dict(monitors.n_predictions),
        })

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain; version=0.0.4")

    app.driftline_metrics = metrics  # type: ignore[attr-defined]
    return app
