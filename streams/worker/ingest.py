"""The worker's ingest stage: source records in, through :class:`detectors.ingest.stage.JoinStage`, batches out.

Predictions and outcomes (keyed by prediction id, so the two topics are co-partitioned) are decoded and
joined; per model, one message with the step's predictions and labelled examples goes to the internal
monitor-input topic (keyed by model), followed by a watermark message to every partition of it; labelled
examples also go one by one to the labelled topic for the retrainer; rejects go to the dead-letter topic
and expiries to the expired topic.  The events waiting in the join for their partner are logged to the
join's changelog after every step (:mod:`detectors.ingest.join_log`), and read back by whichever worker gets
their partition next, after a crash or a rebalance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from detectors.ingest.join_log import JoinLog, Rebuilt, rebuild
from detectors.ingest.merge import NOTHING_SENT, source_name
from detectors.ingest.stage import IngestResult, JoinStage, RawRecord, Source
from schemas.config import MonitorConfig
from schemas.events import SIDES, MonitorBatch, Side
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.topics import read_partition
from streams.worker.messages import SourceRef, dead_letter_headers, monitor_batches, source_ref
from streams.worker.outbox import Outbox
from streams.worker.progress import SourceProgress
from streams.worker.totals import Totals

__all__ = ["IngestService"]

log = logging.getLogger(__name__)


def _merged(first: IngestResult[SourceRef], second: IngestResult[SourceRef]) -> IngestResult[SourceRef]:
    return IngestResult(first.labelled + second.labelled, first.predictions + second.predictions,
                        first.dead_letters + second.dead_letters, first.expired + second.expired)


class IngestService:
    """Joins the source records this worker reads and sends what the join decides, with its changelog.

    :meth:`step` takes one batch of records, however they were consumed; :meth:`consume` feeds it Faust's
    micro-batches.  One step runs at a time: a batch, the idle :meth:`tick` or a :meth:`revoke`.

    Parameters
    ----------
    settings
        Process settings (topics, join and batch sizes).
    config
        The monitor config: which models' predictions the monitor stage watches.
    metrics
        Where to count.
    outbox
        Where a step's messages go; it is sent, and its acks awaited, before the step ends.
    consumer
        Returns the consumer of the source topics, for its assignment and last fetched high-water marks
        (called at each use: Faust makes its consumer when first asked).
    """

    def __init__(self, settings: Settings, config: MonitorConfig, metrics: WorkerMetrics, outbox: Outbox,
                 consumer: Callable[[], Any]) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.metrics = metrics
        self.side_of_topic: dict[str, Side] = {self.topics.predictions: "prediction", self.topics.outcomes: "outcome"}
        self._topic_of_side = {side: topic for topic, side in self.side_of_topic.items()}
        # Items leave the join at once; the monitor stage puts them in order (hold_for_order=False), so that none
        # waits in this process, where a crash would lose it.
        self.join: JoinStage[SourceRef] = JoinStage(
            settings.join_ttl_seconds, settings.max_event_bytes, settings.join_idle_seconds, settings.join_max_pending,
            settings.order_grace_seconds, hold_for_order=False, log_changes=True,
        )
        self.join_log = JoinLog()
        # Per source partition taken over, where its changelog stood: what is read again below it is skipped.
        self._rebuilt: dict[int, Rebuilt] = {}
        self.progress = SourceProgress(self.side_of_topic)
        self._watched_models = {model for model, spec in config.models.items() if spec.watches_predictions}
        self._outbox = outbox
        self._consumer = consumer
        self._lock = asyncio.Lock()
        self._last_announced: datetime | None = None  # the watermark last announced for every source read here
        self._totals = Totals()

    # -- the Faust shell -------------------------------------------------------

    async def consume(self, stream: Any) -> None:
        """The ingest agent: one :meth:`step` per micro-batch of the Faust stream of source events."""
        # Every partition holds event time back until it delivers, or stays quiet for join_idle_seconds
        # (as partitions assigned to another worker will).
        self.join.expect_partitions(range(self.settings.partitions), time.time())
        async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_seconds):
            started = time.perf_counter()
            await self.step([self.record(e) for e in events])
            self.metrics.batch_size.labels("ingest").observe(len(events))
            self.metrics.batch_seconds.labels("ingest").observe(time.perf_counter() - started)
            self.metrics.observe_batch("ingest", events, self.side_of_topic.get, self._consumer().highwater)

    def record(self, event: Any) -> RawRecord[SourceRef]:
        """The join's record of a Faust event read from a source topic."""
        return RawRecord(self.side_of_topic[event.message.topic], event.value, source_ref(event),
                         event.message.partition)

    # -- steps -----------------------------------------------------------------

    async def step(self, records: Sequence[RawRecord[SourceRef]]) -> None:
        """Join one batch of source records; send what the join decides, then its changelog."""
        for side, n in Counter(r.side for r in records).items():
            self.metrics.events_read.labels(side).inc(n)
        self.progress.note(records)
        async with self._lock:
            wall, busy = time.time(), await self.progress.busy(self._consumer())
            restored = await self._take_over(self._assigned() | {r.partition for r in records}, wall)
            fresh = self._fresh(records)
            self._publish(_merged(restored, self.join.process(fresh, wall_time=wall, busy=busy)), wall, busy)
            await self._send_step(fresh)

    async def tick(self) -> None:
        """Expire, release and announce while the sources are quiet (a timer calls this every second)."""
        async with self._lock:
            wall, busy = time.time(), await self.progress.busy(self._consumer())
            restored = await self._take_over(self._assigned(), wall)
            self._publish(_merged(restored, self.join.idle(wall, busy=busy)), wall, busy)
            await self._send_step([])

    async def revoke(self, partitions: Collection[int]) -> None:
        """Drop the join state of source partitions this worker no longer reads."""
        if not partitions:
            return
        # Under the lock, no step is half-sent: the next owner reads a whole changelog.
        async with self._lock:
            for partition in partitions:
                self.join.forget(partition)
                self.join_log.forget(partition)
                self._rebuilt.pop(partition, None)

    def _owned(self) -> set[Source]:
        return {(self.side_of_topic[tp.topic], tp.partition) for tp in self._consumer().assignment()
                if tp.topic in self.side_of_topic}

    def _assigned(self) -> set[int]:
        return {partition for _, partition in self._owned()}

    # -- the join's changelog --------------------------------------------------

    async def _take_over(self, partitions: set[int], wall: float) -> IngestResult[SourceRef]:
        """Rebuild the join state of source partitions new here from their changelog (call under the lock)."""
        out: IngestResult[SourceRef] = IngestResult()
        for partition in sorted(partitions - set(self._rebuilt)):
            started = time.perf_counter()
            n_records, rebuilt, restored = await asyncio.to_thread(self._read_back, partition, wall)
            self.join_log.resume(partition, rebuilt)
            out = _merged(out, restored)
            if n_records:
                log.warning("source partition %d: %d waiting events restored from %d changelog records in %.1f s; "
                            "records below offsets %s are skipped", partition, len(rebuilt.pending), n_records,
                            time.perf_counter() - started, rebuilt.next_offsets)
            # The events are in the join now; only the offsets are kept, to skip what is read again.
            self._rebuilt[partition] = Rebuilt(next_offsets=rebuilt.next_offsets)
        return out

    def _read_back(self, partition: int, wall: float) -> tuple[int, Rebuilt, IngestResult[SourceRef]]:
        # In a thread: a partition with a million waiting events takes ~30 s to read and decode (measured
        # ~31-36k/s), longer than the event loop may stall without missing its group heartbeats.  The
        # lock keeps every other user of the join out meanwhile.
        records = read_partition(self.settings, self.settings.join_state_topic, partition)
        rebuilt = rebuild(records)
        waiting = [RawRecord(e.side, e.value, SourceRef(self._topic_of_side[e.side], partition, e.offset,
                                                        e.prediction_id.encode()), partition)
                   for e in rebuilt.pending]
        restored = self.join.restore(partition, waiting, rebuilt.clocks, wall)  # type: ignore[arg-type]
        return len(records), rebuilt, restored

    def _fresh(self, records: Sequence[RawRecord[SourceRef]]) -> list[RawRecord[SourceRef]]:
        """The records the join's changelog does not hold yet; those it does (read again) are only counted."""
        fresh, again = [], Counter[str]()
        for record in records:
            rebuilt = self._rebuilt.get(record.partition)
            if rebuilt is not None and rebuilt.is_replayed(record.side, record.ref.offset):
                again[record.side] += 1
            else:
                fresh.append(record)
        for side, n in again.items():
            self.metrics.events_replayed.labels(side).inc(n)
        return fresh

    async def _send_step(self, records: Sequence[RawRecord[SourceRef]]) -> None:
        """Send a step's outputs with its join changes, then, once acknowledged, its positions (join_log's order)."""
        offsets: dict[int, dict[str, int]] = {}
        for record in records:
            moved = offsets.setdefault(record.partition, {})
            moved[record.side] = max(moved.get(record.side, 0), record.ref.offset + 1)
        changes = self.join.take_changes()
        positions = []
        for partition in sorted(set(changes) | set(offsets)):
            added, resolved = changes.get(partition, ([], []))
            entries = [(side, pid, r.ref.offset, r.value or b"") for side, pid, r in added]
            step = self.join_log.step(partition, entries, resolved, offsets.get(partition, {}),
                                      self.join.clocks(partition))  # type: ignore[arg-type]
            for key, value in step.entries:
                self._outbox.add(self.settings.join_state_topic, key, value, partition=partition)
            positions += [(partition, key, value) for key, value in step.position]
        await self._outbox.send()
        for partition, key, value in positions:
            self._outbox.add(self.settings.join_state_topic, key, value, partition=partition)
        await self._outbox.send()

    # -- what a step sends -----------------------------------------------------

    def _publish(self, out: IngestResult[SourceRef], wall_time: float, busy: set[Source]) -> None:
        names, outbox = self.topics, self._outbox
        # Each item is serialised once: a labelled example's JSON goes to the retrainer's topic and into its batch.
        by_model: dict[str, tuple[list[bytes], list[bytes]]] = {}
        for prediction in out.predictions:
            if prediction.model in self._watched_models:
                by_model.setdefault(prediction.model, ([], []))[0].append(prediction.model_dump_json().encode())
        for example in out.labelled:
            blob = example.model_dump_json().encode()
            outbox.add(names.labelled, example.prediction.model.encode(), blob)
            by_model.setdefault(example.prediction.model, ([], []))[1].append(blob)
        for model, (predictions, labelled) in by_model.items():
            for blob in monitor_batches(model, predictions, labelled):
                outbox.add(names.monitor_input, model.encode(), blob)
        self._announce_watermarks(wall_time, busy)
        for dead in out.dead_letters:
            ref = dead.record.ref
            outbox.add(names.deadletter, ref.key, dead.record.value, dead_letter_headers(ref, dead.rejection, "ingest"))
            self.metrics.events_dead_lettered.labels(dead.record.side, dead.rejection.kind).inc()
        for item in out.expired:
            record = {"side": item.side, "prediction_id": item.prediction_id, "event_time": item.event_time.isoformat(),
                      "source_topic": item.ref.topic, "source_partition": item.ref.partition,
                      "source_offset": item.ref.offset, "ttl_seconds": self.settings.join_ttl_seconds}
            outbox.add(names.expired, item.prediction_id.encode(), json.dumps(record).encode())
            self.metrics.events_expired.labels(item.side).inc()
        self._count()

    def _count(self) -> None:
        # Processed means joined (JoinStage.n_processed), so that read + restored = processed + dead-lettered
        # + expired + pending + handed over + replayed holds at every scrape.
        for side in SIDES:
            self._totals.report(self.metrics.events_processed, side, self.join.n_processed[side])
            self._totals.report(self.metrics.join_restored, side, self.join.n_restored[side])
            self._totals.report(self.metrics.join_handed_over, side, self.join.n_handed_over[side])
        self.metrics.join_pending.set(self.join.n_pending)
        self.metrics.join_held.set(self.join.n_held)
        self._totals.report(self.metrics.late, "ingest", self.join.n_late)

    def _announce_watermarks(self, wall_time: float, busy: set[Source]) -> None:
        """Tell every monitor-input partition how far the source partitions this worker reads have been sent.

        Active sources are announced after every batch, even when the watermark stands still (one is behind,
        say), so that the monitor stage keeps waiting for them.  A quiet source is announced only when the
        watermark moves: everything up to it has been sent, so the monitor need not wait out the idle period
        at the end of traffic; and a quiet source never keeps a stale watermark alive there.

        Before this worker has released anything, its active sources are announced as having sent nothing
        (:data:`NOTHING_SENT`): the monitor stage then waits for their first items instead of letting another
        worker's overtake them.
        """
        through = self.join.released_through
        owned = self._owned()
        active = owned & set(self.join.active_sources(wall_time, busy))
        if through is None:
            announced, mark = active, NOTHING_SENT
        else:
            announced, mark = (owned if through != self._last_announced else active), through
            self._last_announced = through
        if not announced:
            return
        blob = MonitorBatch(watermarks={source_name(s): mark for s in sorted(announced)}).model_dump_json().encode()
        for partition in range(self.settings.partitions):
            self._outbox.add(self.topics.monitor_input, None, blob, partition=partition)
