"""The worker's ingest stage: source records in, through :class:`detectors.ingest.stage.JoinStage`, batches out.

Predictions and outcomes (keyed by prediction id, so the two topics are co-partitioned) are read in bulk
(:class:`~streams.worker.source.SourceConsumer`), decoded and joined; per monitor-input partition, one message
with the step's predictions and labelled examples of that partition's models goes to the internal monitor-input
topic, followed by a watermark message to every partition of it; per model, the labelled examples go in a batch
to the labelled topic for the retrainer too; rejects go to the dead-letter topic and expiries to the expired
topic.  The events waiting in
the join for their partner are logged to the join's changelog after every step
(:mod:`detectors.ingest.join_log`), and read back by whichever worker gets their partition next, after a
crash or a rebalance.  Everything here runs in the ingest thread (:class:`IngestThread`), never on faust's
event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any
from datetime import datetime

from detectors.ingest.join import IdsWithinHorizon
from detectors.ingest.join_log import JoinLog, Rebuilt, rebuild
from detectors.ingest.merge import NOTHING_SENT, source_name
from detectors.ingest.stage import IngestResult, JoinStage, RawRecord, Source
from schemas.config import MonitorConfig
from schemas.events import SIDES, LabelledExample, MonitorBatch, PredictionEvent
from streams.health.liveness import StageTracker
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.topics import read_partition
from streams.worker.handoff import BatchHandoff
from streams.worker.messages import SourceRef, dead_letter_headers, monitor_batches, partition_of, split_batches
from streams.worker.outbox import OutboxRecord, ProducerOutbox
from streams.worker.source import SourceConsumer
from streams.worker.totals import Totals

__all__ = ["EXIT_STAGE_FAILED", "IngestService", "IngestThread"]

#: The worker's exit status when its ingest stage failed (the watchdog's, for a stuck stage, is 70).
EXIT_STAGE_FAILED = 71

log = logging.getLogger(__name__)


def _json_of(items: Sequence[PredictionEvent | LabelledExample], kept: list[bytes]) -> list[bytes]:
    """Each item's JSON: the source bytes the join kept, or (when it kept none) the item dumped."""
    if len(kept) == len(items):
        return kept
    return [item.model_dump_json().encode() for item in items]


class IngestService:
    """Joins the source records this worker reads and sends what the join decides, with its changelog.

    :meth:`step` takes one batch of records; :meth:`tick` expires and announces while the sources are quiet;
    :meth:`assign` and :meth:`revoke` follow the source consumer's rebalances.  All of them run in one thread,
    one at a time.  Each returns the source records that may now be committed: those whose changelog
    position is acknowledged.

    A step's messages are handed to the producer without waiting for them; the next step (after its own
    bulk read and join, so the round trip overlaps them) waits for their acknowledgement, then sends their
    positions ahead of its own messages.  So outputs and entries are acknowledged before their position is
    sent, as :mod:`detectors.ingest.join_log` asks, each changelog partition sees entries, position, next
    entries in that order, and a step's records are committed two steps later.  At most the two last
    steps' outputs are sent again after a crash, and the monitor stage drops those it has already scored.

    Parameters
    ----------
    settings
        Process settings (topics, join and batch sizes).
    config
        The monitor config: which models' predictions the monitor stage watches.
    metrics
        Where to count.
    outbox
        Where a step's messages go; it is sent, and every message acknowledged, before the step ends.
    """

    def __init__(self, settings: Settings, config: MonitorConfig, metrics: WorkerMetrics,
                 outbox: ProducerOutbox) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.metrics = metrics
        self._topic_of_side = {"prediction": self.topics.predictions, "outcome": self.topics.outcomes}
        # Items leave the join at once; the monitor stage puts them in order (hold_for_order=False), so that none
        # waits in this process, where a crash would lose it.
        self.join: JoinStage[SourceRef] = JoinStage(
            settings.join_ttl_seconds, settings.max_event_bytes, settings.join_idle_seconds, settings.join_max_pending,
            settings.order_grace_seconds, hold_for_order=False, log_changes=True,
            settle_seconds=settings.order_settle_seconds, keep_json=True,
        )
        # Every partition holds event time back until it delivers, or stays quiet for join_idle_seconds
        # (as partitions assigned to another worker will).
        self.join.expect_partitions(range(settings.partitions), time.time())
        self.join_log = JoinLog()
        # Per source partition taken over, where its changelog stood: what is read again below it is skipped.
        self._rebuilt: dict[int, Rebuilt] = {}
        # Assigned source partitions whose changelog is still to be read back (before their next step).
        self._to_take_over: set[int] = set()
        # Per source partition revoked here: the last step it logged, and the ids its join had joined.
        self._left: dict[int, tuple[int, IdsWithinHorizon]] = {}
        self._watched_models = {model for model, spec in config.models.items() if spec.watches_predictions}
        self._outbox = outbox
        self._last_announced: datetime | None = None  # the watermark last announced for every source read here
        self._settled = False  # whether the last announcement said every source read here is settled
        # The last step's positions, to send once its messages are acknowledged, and that step's records.
        self._positions_due: list[OutboxRecord] = []
        self._due: list[RawRecord[SourceRef]] = []
        # The records of the step before it: its positions are sent, not yet acknowledged.
        self._sent: list[RawRecord[SourceRef]] = []
        self._totals = Totals()
        self._model_partitions: dict[str, int] = {}

    # -- steps -----------------------------------------------------------------

    def step(self, records: Sequence[RawRecord[SourceRef]], owned: set[Source],
             busy: set[Source]) -> list[RawRecord[SourceRef]]:
        """Join one batch of source records; send what the join decides, then its changelog.

        ``owned`` are the sources assigned here, ``busy`` those of them with unread messages.  Returns the
        records that may be committed now.
        """
        for side, n in Counter(r.side for r in records).items():
            self.metrics.events_read.labels(side).inc(n)
        wall = time.time()
        restored = self._take_over(wall)
        fresh = self._fresh(records)
        self._publish(restored.extended(self.join.process(fresh, wall_time=wall, busy=busy)), wall, owned, busy)
        return self._send_step(fresh, records)

    def tick(self, owned: set[Source], busy: set[Source], caught_up: bool = False) -> list[RawRecord[SourceRef]]:
        """Expire, release and announce while the sources are quiet (called a few times a second).

        ``caught_up``: every source owned here has been read to its end (the watermark may then pass all of it
        once they have been quiet ``order_settle_seconds``).
        """
        wall = time.time()
        restored = self._take_over(wall)
        self._publish(restored.extended(self.join.idle(wall, busy=busy, caught_up=caught_up)), wall, owned, busy,
                      caught_up)
        return self._send_step([], [])

    def finish(self) -> list[RawRecord[SourceRef]]:
        """Send what is still unsent (the last positions) and wait for it: every record read may be committed."""
        self._outbox.wait()
        self._outbox.dispatch(first=self._positions_due)
        self._outbox.wait()
        confirmed = self._sent + self._due
        self._positions_due, self._due, self._sent = [], [], []
        return confirmed

    def assign(self, partitions: Collection[int]) -> None:
        """Source partitions this worker now reads: their changelog is read back before the next step."""
        self._to_take_over.update(partitions)

    def revoke(self, partitions: Collection[int]) -> list[RawRecord[SourceRef]]:
        """Drop the join state of source partitions this worker no longer reads; returns the records to commit.

        Called between steps, so no step is half-sent, and the last position is acknowledged first: the next
        owner reads a whole changelog, and starts past everything read here.
        """
        confirmed = self.finish()
        for partition in partitions:
            joined = self.join.forget(partition)
            if joined is not None:
                self._left[partition] = (self.join_log.seq(partition), joined)
            self.join_log.forget(partition)
            self._rebuilt.pop(partition, None)
            self._to_take_over.discard(partition)
        self._count()
        return confirmed

    # -- the join's changelog --------------------------------------------------

    def _take_over(self, wall: float) -> IngestResult[SourceRef]:
        """Rebuild the join state of source partitions new here from their changelog."""
        out: IngestResult[SourceRef] = IngestResult()
        for partition in sorted(self._to_take_over - set(self._rebuilt)):
            started = time.perf_counter()
            n_records, rebuilt, restored = self._read_back(partition, wall)
            self.join_log.resume(partition, rebuilt)
            left = self._left.pop(partition, None)
            if left is not None and left[0] == rebuilt.seq:
                # Back here with no step logged by anyone since it left (a broker restart, a rebalance): the ids
                # joined before still count, so a producer's duplicate of one is dead-lettered, not joined again.
                self.join.remember_joined(partition, left[1])
            out = out.extended(restored)
            if n_records:
                log.warning("source partition %d: %d waiting events restored from %d changelog records in %.1f s; "
                            "records below offsets %s are skipped", partition, len(rebuilt.pending), n_records,
                            time.perf_counter() - started, rebuilt.next_offsets)
            # The events are in the join now; only the offsets are kept, to skip what is read again.
            self._rebuilt[partition] = Rebuilt(next_offsets=rebuilt.next_offsets)
        self._to_take_over.clear()
        return out

    def _read_back(self, partition: int, wall: float) -> tuple[int, Rebuilt, IngestResult[SourceRef]]:
        # A partition with a million waiting events takes ~30 s to read and decode (measured ~31-36k/s); this
        # runs in the ingest thread, and librdkafka keeps the group's heartbeats going meanwhile.
        records = read_partition(self.settings, self.settings.join_state_topic, partition)
        rebuilt = rebuild(records)
        if rebuilt.refused:
            self._report_refused(partition, rebuilt.refused)
        waiting = [RawRecord(e.side, e.value, SourceRef(self._topic_of_side[e.side], partition, e.offset,
                                                        e.prediction_id.encode()), partition)
                   for e in rebuilt.pending]
        restored = self.join.restore(partition, waiting, rebuilt.clocks, wall)  # type: ignore[arg-type]
        return len(records), rebuilt, restored

    def _report_refused(self, partition: int, refused: Sequence[tuple[bytes | None, str]]) -> None:
        # One line per rebuild, however many there are: a flood of garbage must not flood the log too.
        self.metrics.state_rejected.labels("join", "undecodable").inc(len(refused))
        key, reason = refused[0]
        log.warning("%s[%d]: %d records not written by Driftline left out of the join's state, e.g. key %.80r: %s",
                    self.settings.join_state_topic, partition, len(refused), key, reason)

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

    def _send_step(self, records: Sequence[RawRecord[SourceRef]],
                   read: Sequence[RawRecord[SourceRef]]) -> list[RawRecord[SourceRef]]:
        """Hand a step's outputs and join changes to the producer, behind the previous step's positions, once
        that step is acknowledged (join_log's order).  ``records`` moved the positions, ``read`` are all the
        step read; returns the records whose positions are now acknowledged."""
        offsets: dict[int, dict[str, int]] = {}
        for record in records:
            moved = offsets.setdefault(record.partition, {})
            moved[record.side] = max(moved.get(record.side, 0), record.ref.offset + 1)
        changes = self.join.take_changes()
        positions: list[OutboxRecord] = []
        for partition in sorted(set(changes) | set(offsets)):
            added, resolved = changes.get(partition, ([], []))
            entries = [(side, pid, r.ref.offset, r.value or b"") for side, pid, r in added]
            step = self.join_log.step(partition, entries, resolved, offsets.get(partition, {}),
                                      self.join.clocks(partition))  # type: ignore[arg-type]
            for key, value in step.entries:
                self._outbox.add(self.settings.join_state_topic, key, value, partition=partition)
            positions += [(self.settings.join_state_topic, key, value, partition, None) for key, value in step.position]
        # The previous step's messages, and the positions sent before them, are acknowledged once this returns.
        self._outbox.wait()
        confirmed, self._sent = self._sent, self._due
        self._outbox.dispatch(first=self._positions_due)
        self._positions_due, self._due = positions, list(read)
        return confirmed

    # -- what a step sends -----------------------------------------------------

    def _publish(self, out: IngestResult[SourceRef], wall_time: float, owned: set[Source], busy: set[Source],
                 caught_up: bool = False) -> None:
        names, outbox = self.topics, self._outbox
        # Each item is written as the source bytes it was validated from (JoinStage keep_json), never dumped again;
        # a labelled example's JSON goes into the retrainer's batch and the monitors'.
        # The monitors get one message per monitor-input partition, not per model: a model's partition is the
        # one its key would be given, and faust's cost per message is paid once for all that partition's models
        # (with a thousand models, a message per model cost the monitor stage about 200 µs an item).
        by_partition: dict[int, tuple[list[bytes], list[bytes]]] = {}
        items_by_partition: dict[int, tuple[list[PredictionEvent], list[LabelledExample]]] = {}
        labelled_by_model: dict[str, list[bytes]] = {}
        for prediction, blob in zip(out.predictions, _json_of(out.predictions, out.predictions_json), strict=True):
            if prediction.model in self._watched_models:
                partition = self._partition_of(prediction.model)
                by_partition.setdefault(partition, ([], []))[0].append(blob)
                items_by_partition.setdefault(partition, ([], []))[0].append(prediction)
        for example, blob in zip(out.labelled, _json_of(out.labelled, out.labelled_json), strict=True):
            model = example.prediction.model
            partition = self._partition_of(model)
            by_partition.setdefault(partition, ([], []))[1].append(blob)
            items_by_partition.setdefault(partition, ([], []))[1].append(example)
            labelled_by_model.setdefault(model, []).append(blob)
        for partition, (predictions, labelled) in sorted(by_partition.items()):
            objects, first_p, first_l = items_by_partition[partition], 0, 0
            for blob, n_p, n_l in split_batches(None, predictions, labelled):
                # The items as built here, for this process's monitor stage to take instead of decoding them.
                batch = MonitorBatch.model_construct(predictions=objects[0][first_p:first_p + n_p],
                                                     labelled=objects[1][first_l:first_l + n_l])
                outbox.add_decoded(names.monitor_input, blob, partition, batch, n_p + n_l)
                first_p, first_l = first_p + n_p, first_l + n_l
        for model, labelled in labelled_by_model.items():
            for blob in monitor_batches(model, [], labelled):
                outbox.add(names.labelled, model.encode(), blob)
        self._announce_watermarks(wall_time, owned, busy, caught_up)
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

    def _partition_of(self, model: str) -> int:
        partition = self._model_partitions.get(model)
        if partition is None:
            partition = self._model_partitions[model] = partition_of(model.encode(), self.settings.partitions)
        return partition

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

    def _announce_watermarks(self, wall_time: float, owned: set[Source], busy: set[Source], caught_up: bool) -> None:
        """Tell every monitor-input partition how far the source partitions this worker reads have been sent.

        Active sources are announced after every batch, even when the watermark stands still (one is behind,
        say), so that the monitor stage keeps waiting for them.  A quiet source is announced only when the
        watermark moves: everything up to it has been sent, so the monitor need not wait out the idle period
        at the end of traffic; and a quiet source never keeps a stale watermark alive there.

        Before this worker has released anything, its active sources are announced as having sent nothing
        (:data:`NOTHING_SENT`): the monitor stage then waits for their first items instead of letting another
        worker's overtake them.

        Once every source read here is read to its end and quiet (the join is settled), all of them are
        announced settled, and stay so in every announcement until traffic comes back: the monitor stage
        then lets the other workers' items through at once.  (It would otherwise wait ``join_idle_seconds``
        for these sources to fall silent, at the end of every burst that more than one worker reads.)
        """
        through = self.join.released_through
        active = owned & set(self.join.active_sources(wall_time, busy))
        settled = caught_up and self.join.settled(wall_time, caught_up)
        newly_settled, self._settled = settled and not self._settled, settled
        if through is None:
            announced, mark = (owned if newly_settled else active), NOTHING_SENT
        else:
            announced, mark = (owned if through != self._last_announced or newly_settled else active), through
            self._last_announced = through
        if not announced:
            return
        names = [source_name(s) for s in sorted(announced)]
        batch = MonitorBatch(watermarks=dict.fromkeys(names, mark), settled=names if settled else [])
        blob = batch.model_dump_json().encode()
        for partition in range(self.settings.partitions):
            self._outbox.add(self.topics.monitor_input, None, blob, partition=partition)


class IngestThread:
    """The ingest stage's loop, in a thread of its own: read a batch in bulk, step, commit; tick a few times a second.

    :meth:`run` is the faust task that starts it and waits for it: it stops the loop when the worker stops,
    and when something stopped the loop early it exits the process with :data:`EXIT_STAGE_FAILED`
    (crash-only recovery: the changelogs make a restart safe; ``exit`` is replaceable for tests).
    """

    # Often enough that the end of a burst is let through about order_settle_seconds after it.
    TICK_SECONDS = 0.2
    # At most this long a wait for the local monitor stage to take the batches handed to it (one read's worth).
    HANDOFF_WAIT_SECONDS = 1.0

    def __init__(self, settings: Settings, config: MonitorConfig, metrics: WorkerMetrics,
                 tracker: StageTracker | None = None, handoff: BatchHandoff | None = None,
                 exit: Callable[[int], Any] = os._exit) -> None:
        self.settings = settings
        self._exit = exit
        self.metrics = metrics
        self._config = config
        self._handoff = handoff
        topics = settings.topics
        self.tracker = tracker or StageTracker("ingest", settings.ingest_group, (topics.predictions, topics.outcomes))
        self._stop = threading.Event()
        self._failure: BaseException | None = None

    async def run(self) -> None:
        thread = threading.Thread(target=self._guarded, name="driftline-ingest", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                await asyncio.sleep(0.2)
        finally:
            self._stop.set()
            # At most one bulk read plus one step: it leaves the group cleanly, its last step acknowledged.
            await asyncio.to_thread(thread.join)
        if self._failure is not None:
            # Crash-only: a failed stage stops the process, whose supervisor restarts it (the changelogs make that
            # safe).  Raising into faust only crashed the app: the process stayed up and consumed nothing.
            log.critical("the ingest stage failed (%s); exiting with status %d", self._failure, EXIT_STAGE_FAILED)
            self._exit(EXIT_STAGE_FAILED)
            raise self._failure

    def _guarded(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # handed to the event loop, which crashes the worker with it
            # The status is named here, with the traceback, as well as at the exit: other threads log in between.
            log.exception("the ingest stage failed; the process exits with status %d", EXIT_STAGE_FAILED)
            self._failure = exc

    def _loop(self) -> None:
        outbox = ProducerOutbox(self.settings, handoff=self._handoff)
        service = IngestService(self.settings, self._config, self.metrics, outbox)
        sides = self.tracker.topics

        def on_assigned(partitions: set[int]) -> None:
            self.tracker.add((topic, p) for topic in sides for p in partitions)
            service.assign(partitions)

        def on_revoked(partitions: set[int]) -> list[RawRecord[SourceRef]]:
            self.tracker.remove((topic, p) for topic in sides for p in partitions)
            return service.revoke(partitions)

        source = SourceConsumer(self.settings, on_assigned, on_revoked)
        next_tick = time.monotonic() + self.TICK_SECONDS
        try:
            while not self._stop.is_set():
                if self._handoff is not None:
                    self._handoff.wait_for_room(self.HANDOFF_WAIT_SECONDS)
                records = source.poll()
                if records:
                    started = time.perf_counter()
                    source.commit(service.step(records, source.owned(), source.busy()))
                    self.metrics.batch_size.labels("ingest").observe(len(records))
                    self.metrics.batch_seconds.labels("ingest").observe(time.perf_counter() - started)
                    self.metrics.observe_lag("ingest", {(source.side_of_topic[t], p): n
                                                        for (t, p), n in source.unread().items()})
                if time.monotonic() >= next_tick:
                    source.commit(service.tick(source.owned(), source.busy(), source.caught_up()))
                    next_tick = time.monotonic() + self.TICK_SECONDS
        finally:
            # Leaving the group revokes every partition: the last position is acknowledged and committed.
            source.close()
