"""The worker's monitor stage: the monitor-input topic in, scored by :class:`detectors.monitors.performance_monitor.MonitorSet`.

Each model's events meet in one worker, as the monitor-input topic is keyed by model.  The batches of every
ingest worker are merged back into event-time order with their watermarks
(:class:`detectors.ingest.stage.MonitorInputOrder`, one per monitor-input partition), scored, and what the
monitors decide goes out: alerts, retrain triggers and the metrics.

The monitors' state is checkpointed to the monitor-state table.  One entry per model (value:
:mod:`detectors.monitors.checkpoint` bytes) in the changelog partition equal to the model's monitor-input partition,
so faust's table recovery has read it before the monitor agent gets that partition's events.  The state is
written straight to the changelog with the producer and the acks awaited, once per checkpoint interval (and
at once after a batch that alerts).  A monitor-input message is acked only once all its items are scored and
checkpointed: the committed offset never passes the state (nor do faust's own acks of the messages it skips
in a rebalance move it: :class:`streams.worker.commit_limit.CommitLimit`), so a kill -9 replays at most the
messages since the last checkpoint, and what the state already holds is skipped.  A foreign message refused
here is dead-lettered once per process, and once across a crash if a restored checkpoint lies past it
(:meth:`Checkpointer.first_dead_letter`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Collection, Sequence
from operator import attrgetter
from typing import Any

import faust
from faust.types import TP

from detectors.ingest.merge import Held, MonitorInputOrder, decode_monitor_input
from detectors.ingest.stage import RawRecord
from detectors.monitors.alert_replay import AlertReplayGuard, read_back_starts
from detectors.monitors.checkpoint import Checkpointer
from detectors.monitors.episodes import MonitorResult
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.scoring_batches import ScoringBatches
from detectors.monitors.performance_monitor import ModelMonitor
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.decoding import Rejection
from schemas.events import LabelledExample, MonitorBatch, PredictionEvent
from streams.cloudevents import cloudevents_headers
from streams.exceptions import TopicError
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.topics import committed_offset, read_partition_from
from streams.worker.alert_log import AlertLog
from streams.worker.commit_limit import CommitLimit
from streams.worker.messages import (
    BATCH_BYTES,
    CLOUDEVENTS_SOURCE,
    MessageRef,
    SourceRef,
    dead_letter_headers,
    partition_of,
    source_ref,
)
from streams.worker.handoff import BatchHandoff, handoff_key
from streams.worker.outbox import Outbox
from streams.worker.state import MonitorState
from streams.worker.totals import Totals

__all__ = ["MonitorService"]

_MODEL, _EXAMPLE_MODEL = attrgetter("model"), attrgetter("prediction.model")

log = logging.getLogger(__name__)
EXIT_FAULT_INJECTED = 72  # Settings.fault_exit_after_alert
# One read of the messages faust skipped (see MonitorService._take_in_unhanded); tried again until it succeeds.
READ_UNHANDED_SECONDS = 10.0
Dead = tuple[RawRecord[SourceRef], Rejection]


class MonitorService:
    """Merges, scores and checkpoints the monitor-input partitions this worker reads.

    One step runs at a time: a batch, the idle round of :meth:`consume` or a :meth:`revoke`.

    Parameters
    ----------
    settings
        Process settings (topics, batch sizes, ordering and checkpoint intervals).
    config
        The validated monitor config.
    metrics
        Where to count; the performance thresholds are set here.
    outbox
        Where alerts, triggers, dead letters and checkpoints go; sent before a step ends.
    app
        The Faust app: its consumer's high-water marks, and whether it is stopping or rebalancing.
    state
        The monitor-state table (its changelog's name and what recovery read into it), and how its records are
        signed and verified.
    handoff
        Where this process's ingest stage leaves the batches it wrote, decoded, when it runs here too.
    """

    def __init__(self, settings: Settings, config: MonitorConfig, metrics: WorkerMetrics, outbox: Outbox,
                 app: faust.App, state: MonitorState, handoff: BatchHandoff | None = None) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.metrics = metrics
        self.monitors = MonitorSet(config, build_detector)
        self.checkpointer = Checkpointer(settings.checkpoint_seconds, settings.checkpoint_dedupe_ids)
        # Alerts are acked before the checkpoint that covers them: those a crash left uncovered are read back on
        # restore, so that the replay that re-derives them does not send them again.
        self.replay_guard = AlertReplayGuard()
        self._alert_log = AlertLog(settings)
        self._outbox = outbox
        self._app = app
        self._state = state
        # Batches this process's ingest stage wrote, decoded already (None: it runs elsewhere).
        self._handoff = handoff
        # One merge per monitor-input partition: a partition's models need its own order only, and a watermark
        # read on one partition says nothing of the data still unread on another.
        self._merges: dict[int, MonitorInputOrder[MessageRef]] = {}
        self._late_in_dropped_merges = 0
        # Released items wait here until their model has enough to score at once (see ScoringBatches), while the
        # partition has unread messages: per monitor-input partition, the offset after the last message read.
        self._next_offsets: dict[int, int] = {}
        self._model_partitions: dict[str, int] = {}
        self._scoring: ScoringBatches[MessageRef] = ScoringBatches(settings.monitor_batch_items,
                                                                   settings.monitor_batch_wait_seconds)
        self._restored_partitions: set[int] = set()
        self._held: list[Any] = []  # monitor-input events read, acked once their items are scored and checkpointed
        # What faust may commit: no further than the acks below (faust acks the messages it skips, too).
        self.commit_limit = CommitLimit(self.topics.monitor_input)
        self._lock = asyncio.Lock()
        # Batches are ours, but a foreign producer could still write here.
        self._max_bytes = 2 * BATCH_BYTES + 4 * settings.max_event_bytes
        self.n_checkpoints = 0
        self.n_restored = 0
        self.n_stale_skipped = 0  # events of an earlier consumer generation, left to be read again
        self.n_unhanded = 0  # messages faust skipped, read from the topic instead
        self.written: dict[str, int] = {}  # each model's checkpointed monitor-input offset
        self.written_seen: dict[str, int] = {}  # the labelled examples each model's written state holds
        self._totals = Totals()
        for model in self.monitors.monitors:
            for each in self.performance_monitors(model):
                metrics.performance_threshold.labels(model, each.metric_name).set(each.spec.performance.threshold)
                metrics.performance.labels(model, each.metric_name)

    def performance_monitors(self, model: str) -> list[ModelMonitor]:
        """The model's main monitor and those of its further metrics."""
        return [self.monitors.monitors[model], *self.monitors.metric_monitors_of(model).values()]

    def metric_series(self) -> dict[str, tuple[str, list[str]]]:
        """Each model's metric name and detector names, for :meth:`WorkerMetrics.declare`."""
        return {model: (m.metric_name, [name for each in self.performance_monitors(model)
                                        for name in each.detector_names])
                for model, m in self.monitors.monitors.items()}

    def status(self) -> dict[str, Any]:
        """What the checkpoints hold and what waits, for the worker's ``/checkpoint`` page."""
        return {
            "n_checkpoints": self.n_checkpoints,
            "n_restored": self.n_restored,
            "written": self.written,
            "written_seen": self.written_seen,
            "n_replayed": self.checkpointer.n_replayed,
            "n_duplicates": self.checkpointer.n_duplicates,
            "n_alerts_not_resent": self.replay_guard.n_suppressed,
            "n_stale_skipped": self.n_stale_skipped,
            "n_unhanded": self.n_unhanded,
            "n_commits_held_back": self.commit_limit.n_clamped,
            "n_held": len(self._held),
            "n_held_items": sum(merge.n_held for merge in self._merges.values()) + self._scoring.n_held,
            "n_seen": {model: m.n_seen for model, m in self.monitors.monitors.items()},
            "n_predictions": dict(self.monitors.n_predictions),
        }

    # -- the Faust shell -------------------------------------------------------

    async def consume(self, stream: Any) -> None:
        """The monitor agent: one step per micro-batch of the Faust stream of monitor-input events."""
        idle_task = asyncio.ensure_future(self._checkpoint_while_idle())
        try:
            async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_seconds):
                async with self._lock:
                    await self._batch(events)
        finally:
            idle_task.cancel()

    async def _checkpoint_while_idle(self) -> None:
        # A plain task, not a faust timer: it must keep acking while faust waits for held events at shutdown.
        s = self.settings
        while True:
            await asyncio.sleep(min(1.0, s.checkpoint_seconds / 2, max(s.monitor_batch_wait_seconds / 2, 0.05)))
            async with self._lock:
                # A worker that stopped announcing (it died, or lost its partitions) stops holding items back,
                # and a model with little traffic is scored once its items have waited long enough.
                if self._scoring.n_held or any(merge.n_held for merge in self._merges.values()):
                    await self._score(*self._due(time.time()), events=[])
                if (self._held or self.checkpointer.dirty) and (
                    self.checkpointer.due(time.time()) or self._app.should_stop or self._app.rebalancing
                ):
                    await self._write_checkpoint()

    async def revoke(self, partitions: Collection[int]) -> None:
        """Checkpoint, then drop the merges and state of monitor-input partitions this worker no longer reads."""
        if not partitions:
            return
        async with self._lock:
            if self._held or self.checkpointer.dirty:
                await self._write_checkpoint()
            # Their items go unscored here; the new owner re-reads them from the committed offset.
            for partition in partitions:
                gone = self._merges.pop(partition, None)
                self._late_in_dropped_merges += gone.n_late if gone is not None else 0
            self._held = [e for e in self._held if e.message.partition not in partitions]
            self._scoring.drop(lambda model: self._partition_of_model(model) in partitions)
            for partition in partitions:
                self._next_offsets.pop(partition, None)
            self.commit_limit.forget(partitions)
            for partition in partitions:
                self._restored_partitions.discard(partition)
                self.checkpointer.forget_partition(partition)
                if self._handoff is not None:
                    self._handoff.drop(partition)

    # -- steps -----------------------------------------------------------------

    async def _batch(self, events: Sequence[Any]) -> None:
        dead: list[Dead] = []
        wall = time.time()
        for event in events:
            if event.message.generation_id != self._app.consumer_generation_id:
                # Read before a rebalance, and read again after it from the committed offset: not scored twice,
                # nor held (an ack now would count towards a commit of this generation; see CommitLimit).
                self.n_stale_skipped += 1
                continue
            partition, offset, topic = event.message.partition, event.message.offset, event.message.topic
            if partition not in self._restored_partitions:
                await self._restore_partition(partition)
            expected = self._next_offsets.get(partition)
            start = expected
            if start is None:  # the assignment's first message: it should be at the group's committed offset
                start = await self._group_position(topic, partition)
                # Beside the restored checkpoints' offsets (logged on restore): where reading starts.
                log.warning("%s[%d]: reading from offset %d (the group's committed offset: %s)", topic, partition,
                            offset, start)
            if start is not None and offset > start:
                await self._take_in_unhanded(topic, partition, start, offset, dead, wall)
            elif expected is not None and offset < expected:
                log.warning("%s[%d]: offset %d handed again after %d", topic, partition, offset, expected - 1)
            self._next_offsets[partition] = max(offset + 1, expected or 0)
            # Hold the ack (take_events acks once; this reference is released by _write_checkpoint).
            event.message.incref()
            self._held.append(event)
            decoded = None
            if self._handoff is not None:
                decoded = self._handoff.take(partition, handoff_key(event.message.headers), event.value)
            self._take_in(source_ref(event), event.value, decoded, dead, wall)
        self.metrics.batch_size.labels("monitor").observe(len(events))
        await self._score(*self._due(wall), events=events, dead=dead)
        n_late = self._late_in_dropped_merges + sum(merge.n_late for merge in self._merges.values())
        self._totals.report(self.metrics.late, "monitor", n_late)
        self.metrics.observe_batch("monitor", events, lambda _topic: "monitor-input", self._app.consumer.highwater)

    def _take_in(self, ref: SourceRef, value: bytes | None, decoded: MonitorBatch | None, dead: list[Dead],
                 wall: float) -> None:
        """Decode a monitor-input message (unless the handoff gave it ``decoded``) and merge its items."""
        partition, offset = ref.partition, ref.offset
        how = "handed"
        if decoded is None:
            decoded = decode_monitor_input(value, self._max_bytes, self.settings.partitions)
            # Watermarks apart: "decoded" is the handoff's misses, which cost the stage a decode of every item.
            carries_items = isinstance(decoded, Rejection) or decoded.predictions or decoded.labelled
            how = "decoded" if carries_items else "watermark"
        self.metrics.monitor_input_batches.labels(how).inc()
        if isinstance(decoded, Rejection):
            if self.checkpointer.first_dead_letter(partition, offset):
                dead.append((RawRecord("prediction", value, ref), decoded))
            else:
                log.warning("%s[%d]@%d was dead-lettered already: not again", ref.topic, partition, offset)
            return
        # A message carries the items of every model of its partition: each model's share is judged alone.
        # (map with attrgetter: Counter counts it in C, a generator cost a Python frame step per item.)
        n_items = Counter(map(_MODEL, decoded.predictions))
        n_items.update(map(_EXAMPLE_MODEL, decoded.labelled))
        restored = {model for model, n in n_items.items()
                    if model in self.monitors.monitors and not self.checkpointer.arrive(model, partition, offset, n)}
        self._merge_of(partition).add(decoded, MessageRef(partition, offset), wall, skip=restored)

    async def _group_position(self, topic: str, partition: int) -> int | None:
        """The monitor group's committed offset of the partition: where faust's first message should be."""
        try:
            return await asyncio.to_thread(committed_offset, self.settings, self.settings.faust_app_id, topic,
                                           partition, READ_UNHANDED_SECONDS)
        except TopicError as exc:
            log.warning("%s[%d]: could not read the committed offset (%s): a first message faust skipped "
                        "would go unnoticed", topic, partition, exc)
            return None

    async def _take_in_unhanded(self, topic: str, partition: int, start: int, stop: int, dead: list[Dead],
                                wall: float) -> None:
        """Read from the topic, and take in, the messages ``start`` to ``stop - 1`` faust skipped.

        Our producers write no transactions and the topic is not compacted, so its offsets are dense; yet faust
        at times hands the agent a partition's messages with one missing (seen right after a worker started,
        in test_kill_recovery: "handed offset 60 after 58"), or starts past the committed offset.  Their
        items would go unscored, and once the messages after them were acked the committed offset would pass
        them.  They are not held (faust gave no event to ack); their items wait in the checkpointer like any,
        so nothing after them is acked first.
        """
        while True:
            try:
                records = await asyncio.to_thread(read_partition_from, self.settings, topic, partition, start,
                                                  READ_UNHANDED_SECONDS, stop)
                break
            except TopicError as exc:
                if self._app.should_stop:
                    raise
                log.warning("%s[%d]: could not read offsets %d to %d, which faust did not hand over (%s); trying "
                            "again", topic, partition, start, stop - 1, exc)
                await asyncio.sleep(1.0)
        self.n_unhanded += len(records)
        log.warning("%s[%d]: faust did not hand over offsets %d to %d: %d messages read from the topic instead",
                    topic, partition, start, stop - 1, len(records))
        for offset, key, value in records:
            self._take_in(SourceRef(topic, partition, offset, key), value, None, dead, wall)

    def _merge_of(self, partition: int) -> MonitorInputOrder[MessageRef]:
        if partition not in self._merges:
            s = self.settings
            self._merges[partition] = MonitorInputOrder(s.partitions, s.join_idle_seconds, s.join_max_pending,
                                                        time.time(), s.order_grace_seconds)
        return self._merges[partition]

    def _due(self, wall_time: float) -> tuple[list[Held[MessageRef]], list[Held[MessageRef]]]:
        """What the merges release, gathered per model; the items of the models due for scoring now (those of a
        partition read to its end are: nothing more of theirs is on the way)."""
        for merge in self._merges.values():
            self._scoring.add(*merge.release(wall_time), wall_time=wall_time)
        drained = self._drained_partitions()
        return self._scoring.due(wall_time, lambda model: self._partition_of_model(model) in drained)

    def _drained_partitions(self) -> set[int]:
        """The monitor-input partitions read here up to their high-water mark at the last fetch."""
        drained = set()
        for partition, next_offset in self._next_offsets.items():
            try:
                mark = self._app.consumer.highwater(TP(self.topics.monitor_input, partition))
            # aiokafka asserts the partition is assigned; during a rebalance it may not be (then: not drained).
            except (AssertionError, KeyError, RuntimeError):
                continue
            if mark is not None and mark <= next_offset:
                drained.add(partition)
        return drained

    def _partition_of_model(self, model: str) -> int:
        partition = self._model_partitions.get(model)
        if partition is None:
            partition = self._model_partitions[model] = partition_of(model.encode(), self.settings.partitions)
        return partition

    def _admitted(self, items: Sequence[Held[MessageRef]], prefix: str) -> list[Any]:
        """The released items not already in the state (checkpointed, or re-published by a restarted ingest)."""
        out = []
        for held_item in items:
            item = held_item.item
            pid = item.prediction_id if isinstance(item, PredictionEvent) else item.prediction.prediction_id
            if held_item.model not in self.monitors.monitors or self.checkpointer.admit(
                held_item.model, held_item.ref.offset, prefix + pid
            ):
                out.append(item)
        return out

    async def _score(self, predictions: Sequence[Held[MessageRef]], labelled: Sequence[Held[MessageRef]],
                     events: Sequence[Any], dead: Sequence[Dead] = ()) -> None:
        """Run the monitors on released items, publish what they decide, and checkpoint when it matters."""
        started = time.perf_counter()
        monitors, metrics = self.monitors, self.metrics
        watched: list[PredictionEvent] = self._admitted(predictions, "p:")
        examples: list[LabelledExample] = self._admitted(labelled, "l:")
        result = monitors.observe_predictions(watched)
        metrics.observe_predictions(monitors, watched)
        result.extend(monitors.observe(examples))
        metrics.observe_realized(monitors, {e.prediction.model for e in examples})
        scored = Counter(map(_EXAMPLE_MODEL, examples))
        metrics.count_examples({model: n for model, n in scored.items() if model in monitors.monitors})
        self._publish(result, dead)
        self._refresh_performance_gauges({*scored, *(alert.model for alert in result.alerts)})
        n_alerts_sent = 0
        for sent in await self._outbox.send():
            if sent.topic == self.topics.alerts:
                self.replay_guard.note_end(sent.partition, sent.offset + 1)
                n_alerts_sent += 1
        if n_alerts_sent and self.settings.fault_exit_after_alert:
            log.warning("fault injection (DRIFTLINE_FAULT_EXIT_AFTER_ALERT): exiting after %d alerts were "
                        "acknowledged, before their checkpoint", n_alerts_sent)
            os._exit(EXIT_FAULT_INJECTED)
        metrics.observe_label_delay(examples, monitors.monitors)
        if result.alerts:
            # From the messages the items came in, not this batch's: released items may have waited in the
            # merge, and items released while the input is quiet (events=[]) raise alerts too.
            metrics.observe_alert_latency(result.alerts, self._kafka_timestamps([*predictions, *labelled]))
        if events:
            metrics.batch_seconds.labels("monitor").observe(time.perf_counter() - started)
        if self.checkpointer.due(time.time()):
            await self._write_checkpoint()
        elif result.alerts or result.triggers:
            # Right after alerts, so that a replay after a crash does not re-derive and re-send them.
            await self._write_checkpoint({each.model for each in [*result.alerts, *result.triggers]})

    def _kafka_timestamps(self, items: Sequence[Held[MessageRef]]) -> list[float]:
        """The Kafka timestamps (s) of the held messages ``items`` came in (held until checkpointed, so all are)."""
        refs = {(held_item.ref.partition, held_item.ref.offset) for held_item in items}
        return [e.message.timestamp for e in self._held
                if e.message.timestamp and (e.message.partition, e.message.offset) in refs]

    def _publish(self, result: MonitorResult, dead: Sequence[Dead]) -> None:
        unsent = {id(alert) for alert in self.replay_guard.unsent(result.alerts)}
        names, outbox, metrics = self.topics, self._outbox, self.metrics
        for alert in result.alerts:
            if id(alert) not in unsent:
                log.warning("alert %s %s was published before this worker's restore: not again", alert.status,
                            alert.alert_id)
                continue
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
            outbox.add(names.deadletter, record.ref.key, record.value,
                       dead_letter_headers(record.ref, rejection, "monitor"))
            metrics.internal_dead_lettered.labels("monitor-input", rejection.kind).inc()
        if result.n_unmonitored:
            metrics.examples_unmonitored.inc(result.n_unmonitored)

    def _refresh_performance_gauges(self, models: Collection[str]) -> None:
        """Set the performance and open-alert gauges of ``models`` (those whose monitors just changed) from them.

        Not every model's each batch: with 1,000 models that loop was 5% of the worker.
        """
        for model in models:
            if model not in self.monitors.monitors:
                continue
            performance = self.performance_monitors(model)
            for each in performance:
                self.metrics.performance.labels(model, each.metric_name).set(each.metric_value)
            self.metrics.alerts_open.labels(model).set(sum(len(each.open_alerts) for each in performance))

    # -- checkpoints -----------------------------------------------------------

    async def _restore_partition(self, partition: int) -> None:
        """Install the partition's checkpoints, then read back the alerts published since them (see AlertLog)."""
        alerts_from = self._install_checkpoints(partition)
        await self._alert_log.seed(self.replay_guard)
        await self._alert_log.read_back(self.replay_guard, alerts_from)

    def _install_checkpoints(self, partition: int) -> dict[str, int]:
        """Install the verified checkpoints of ``partition``; where each of its models' alerts are read back from."""
        recorded_ends: dict[str, int | None] = {}
        for checkpoint in self._state.checkpoints(partition):  # verified: refused records are counted there
            current = self.monitors.monitors.get(checkpoint.model)
            if current is None:
                continue
            if checkpoint.monitor.spec != current.spec:
                log.warning("monitor config of %s changed: its checkpoint is not restored", checkpoint.model)
                continue
            self.monitors.install(checkpoint.model, checkpoint.monitor, checkpoint.segments, checkpoint.data,
                                  checkpoint.metrics, checkpoint.n_predictions, checkpoint.estimates, checkpoint.pool)
            self.checkpointer.restore(checkpoint)
            recorded_ends[checkpoint.model] = checkpoint.alerts_end
            self._refresh_performance_gauges([checkpoint.model])
            self.n_restored += 1
            log.warning("restored %s from its checkpoint at monitor-input offset %d (%d examples seen)",
                        checkpoint.model, checkpoint.next_offset, checkpoint.monitor.n_seen)
        self._restored_partitions.add(partition)
        if self._handoff is not None:
            self._handoff.want(partition)
        # Models without a restored checkpoint replay from their first unacked input: all their alerts are read.
        models = [m for m in self.monitors.monitors if partition_of(m.encode(), self.settings.partitions) == partition]
        return read_back_starts(models, recorded_ends)

    async def _write_checkpoint(self, only: set[str] | None = None) -> None:
        """Write the changed models' state, then ack the events it wholly covers (call under the lock).

        With ``only`` (the models that just alerted), write just theirs and ack nothing: encoding every
        model's state after each alert cost a fifth of the worker's time with 1,000 models.
        """
        snapshots = self.checkpointer.snapshot(self.monitors, time.time(), only)
        topic = self._state.topic
        # Encoded before any await: the monitors must not change between snapshot and bytes.
        for c in snapshots:
            alert_partition = self._alert_log.partition_of(c.model)
            c.alerts_end = None if alert_partition is None else self.replay_guard.end_of(alert_partition)
            self._outbox.add(topic, c.model.encode(), self._state.encode(c), partition=c.partition)
        written = {c.model: c.next_offset for c in snapshots}
        seen = {c.model: c.monitor.n_seen for c in snapshots}
        done: list[Any] = []
        if only is None:
            # An event is acked once every item of it is scored (below the partition's oldest waiting
            # message) and every model's state is written.
            waiting = {p: self.checkpointer.oldest_waiting(p) for p in {e.message.partition for e in self._held}}
            still_held: list[Any] = []
            for event in self._held:
                oldest = waiting[event.message.partition]
                (done if oldest is None or event.message.offset < oldest else still_held).append(event)
            self._held = still_held
        await self._outbox.send()
        for event in done:
            event.ack()
            self.commit_limit.advance(event.message.partition, event.message.offset + 1)
        self.n_checkpoints += 1
        self.written.update(written)
        self.written_seen.update(seen)
