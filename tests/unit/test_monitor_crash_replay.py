"""The monitor stage across a crash, with no broker: every labelled example ends up scored exactly once.

``MonitorService`` runs its own batch path (merge, scoring batches, checkpoints, acks) over monitor-input
messages handed to it as faust would hand them; faust's consumer, producer and table are stood in for by
the little they are asked here (a high-water mark, acknowledged sends, what recovery read).  The first
service stops dead at a random point, as a kill -9 stops it.  A successor recovers the last record of each
key its predecessor wrote to the state changelog, is handed the messages again from where the worker's faust
consumer would have committed (faust's own ``Consumer._new_offset`` through ``streams.app``'s, over the
service's acks and those of messages faust skipped in a rebalance), and reads to the end.  Then its monitors
must have seen every example once: none lost below a checkpoint, none counted twice above one.  The
integration tests do the same on a real broker (``tests/integration/test_kill_recovery.py``) at a few crash
points; this one tries hundreds, with scoring batches on and off.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import yaml
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st
from intervaltree import IntervalTree

import streams.worker.monitor as monitor_module
from detectors.monitors.signed_state import StateSigner
from schemas.config import MonitorConfig
from schemas.events import LabelledExample, MonitorBatch
from streams.app import _MonitorConsumer
from streams.metrics import WorkerMetrics
from streams.scenarios import SpeechScenario
from streams.settings import Settings, load_settings
from streams.worker.commit_limit import CommitLimit
from streams.worker.monitor import MonitorService
from streams.worker.outbox import Outbox
from streams.worker.state import MonitorState
from tests.speech_monitors import SPEECH_MONITORS

MODEL = "speech-asr"
SIGNER = StateSigner(b"a test key of 32 bytes, no more.")
CHANGELOG = "app-monitor-state-changelog"
N_PAIRS = 400


def _messages(chunk_sizes: list[int]) -> list[bytes]:
    """The monitor-input partition: each chunk of examples in a message, then a watermark past them."""
    pairs = SpeechScenario(n_events=N_PAIRS, change_at=N_PAIRS // 2, seed=11).events()
    examples = [LabelledExample(prediction=p, outcome=o) for p, o in pairs]
    out, start = [], 0
    for size in chunk_sizes:
        chunk = examples[start:start + size]
        if not chunk:
            break
        start += size
        out.append(MonitorBatch(labelled=chunk).model_dump_json().encode())
        mark = max(e.completed_at for e in chunk)
        out.append(MonitorBatch(watermarks={"prediction/0": mark, "outcome/0": mark}).model_dump_json().encode())
    assert start >= N_PAIRS, "the chunks cover the stream"
    return out


@dataclass
class _Broker:
    """What faust's producer was asked to send, acknowledged at once, per topic in order."""

    sent: dict[str, list[tuple[bytes | None, bytes | None]]] = field(default_factory=dict)

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   _timestamp: Any, _headers: Any) -> asyncio.Future[Any]:
        records = self.sent.setdefault(topic, [])
        records.append((key, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(topic=topic, partition=partition or 0, offset=len(records) - 1))
        return done


@dataclass
class _Event:
    """A faust event of the monitor-input partition: its offset, and whether the service acked it."""

    value: bytes
    offset: int
    acked: set[int]
    generation: int = 0  # the consumer generation it was read in

    @property
    def message(self) -> SimpleNamespace:
        return SimpleNamespace(partition=0, offset=self.offset, topic="monitor-input", headers=None, timestamp=0.0,
                               tp=TP("monitor-input", 0), incref=lambda: None, generation_id=self.generation, key=None)

    def ack(self) -> None:
        self.acked.add(self.offset)


class _NoAlertLog:
    """The alert topic is not read back here: alerts are not what this test counts."""

    def partition_of(self, _model: str) -> None:
        return None

    async def seed(self, _guard: Any) -> None:
        return None

    async def read_back(self, _guard: Any, _starts: Any) -> None:
        return None


def _service(s: Settings, broker: _Broker, recovered_from: _Broker | None, high_water: list[int]) -> MonitorService:
    """A monitor stage sending to ``broker``, whose table recovery read the state changelog ``recovered_from`` wrote."""
    metrics = WorkerMetrics()
    state = MonitorState(SIGNER, metrics)
    state.table = SimpleNamespace(data={}, changelog_topic=SimpleNamespace(get_topic_name=lambda: CHANGELOG))
    if recovered_from is not None:
        _recover(state, recovered_from)
    app = SimpleNamespace(producer=broker, should_stop=False, rebalancing=False, consumer_generation_id=0,
                          consumer=SimpleNamespace(highwater=lambda _tp: high_water[0]))
    spec = yaml.safe_load(SPEECH_MONITORS)
    spec["models"][MODEL]["performance"]["window"] = 100
    service = MonitorService(s, MonitorConfig.model_validate(spec), metrics, Outbox(app), app, state)  # type: ignore[arg-type]
    service._alert_log = _NoAlertLog()  # type: ignore[assignment]
    return service


def _committed(acked: set[int], skipped: set[int], limit: CommitLimit | None) -> int:
    """Where the consumer group resumes: what the worker's faust consumer commits, ``limit`` over it (None:
    faust's own commit, as the worker made before CommitLimit).

    Faust committed the service's acks as they came (its acked list holds what came since), and it then acks
    the messages it ``skipped`` too; on a partition never committed (or at 0) it knows no committed offset.
    """
    tp = TP("monitor-input" if limit is None else limit.topic, 0)
    through = max(acked) + 1 if acked else None
    since = sorted(o for o in skipped if through is None or o >= through)
    consumer = object.__new__(_MonitorConsumer)  # only its commit bookkeeping, which _new_offset reads
    consumer._acked = defaultdict(list, {tp: since})
    consumer._acked_index = defaultdict(set, {tp: set(since)})
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset = defaultdict(lambda: None, {tp: through or None})
    consumer.app = SimpleNamespace(driftline_commit_limit=limit)
    offset = consumer._new_offset(tp) if since else None
    return offset if offset is not None else through or 0


def _recover(state: MonitorState, broker: _Broker) -> None:
    """What faust's table recovery reads into ``state``: the last record of each key in the state changelog."""
    for offset, (key, value) in enumerate(broker.sent.get(CHANGELOG, [])):
        state.table.data[key] = value
        state._read_at[key] = (0, offset)


async def _read(service: MonitorService, events: list[_Event], batch_sizes: list[int], clock: list[float],
                steps: int | None = None) -> int:
    """Hand ``events`` to the service in batches (the idle round between them), for ``steps`` batches or all;
    the offset after the last one handed."""
    position, step = 0, 0
    while position < len(events) and (steps is None or step < steps):
        size = batch_sizes[step % len(batch_sizes)]
        batch, position, step = events[position:position + size], position + size, step + 1
        clock[0] += 0.3
        await service._batch(batch)
        # The idle round of _checkpoint_while_idle, once between batches.
        await service._score(*service._due(clock[0]), events=[])
        if service.checkpointer.due(clock[0]):
            await service._write_checkpoint()
    return events[min(position, len(events)) - 1].offset + 1 if position else 0


@given(chunk_sizes=st.lists(st.integers(1, 40), min_size=N_PAIRS // 10, max_size=N_PAIRS // 10),
       batch_sizes=st.lists(st.integers(1, 6), min_size=1, max_size=8),
       crash_after=st.integers(1, 120), batch_items=st.sampled_from([1, 16, 64]),
       backlog=st.booleans(), republished=st.integers(0, 6), rebalance_after=st.none() | st.integers(1, 60),
       skipped=st.builds(lambda start, n: set(range(start, start + n)), st.integers(0, 100), st.integers(0, 30)),
       unhanded=st.none() | st.integers(1, 80), skipped_at_start=st.integers(0, 3))
@settings(max_examples=50, deadline=None)
def test_a_successor_scores_every_example_once(chunk_sizes: list[int], batch_sizes: list[int], crash_after: int,
                                               batch_items: int, backlog: bool, republished: int,
                                               rebalance_after: int | None, skipped: set[int],
                                               unhanded: int | None, skipped_at_start: int) -> None:
    """``skipped``: the messages faust acked itself, as it does the run its streams skip in a rebalance (the
    old generation's buffered messages, those read while flow is suspended); they are read again after it.
    ``unhanded``: a message faust never handed the first service (it reads it from the topic).
    ``skipped_at_start``: messages faust skips at the start of the successor's assignment, past the committed
    offset (the successor reads them from the topic, as it asks the group where it should have started)."""
    s = load_settings(partitions=1, monitor_batch_items=batch_items, monitor_batch_wait_seconds=2.0,
                      checkpoint_seconds=1.0, order_grace_seconds=0.0)
    values = _messages(chunk_sizes + [N_PAIRS])
    acked: set[int] = set()
    events = [_Event(value, offset, acked) for offset, value in enumerate(values)]
    clock = [1_000.0]
    # A backlog: the partition's end lies past everything (scoring batches gather); else it is what was read.
    high_water = [len(events)]
    original_time, original_read = monitor_module.time, monitor_module.read_partition_from
    monitor_module.time = SimpleNamespace(time=lambda: clock[0], perf_counter=original_time.perf_counter)  # type: ignore[assignment]

    def read_from_the_topic(_s: Settings, _topic: str, _partition: int, start: int, _timeout: float,
                            stop: int) -> list[tuple[int, bytes | None, bytes]]:
        return [(offset, None, events[offset].value) for offset in range(start, min(stop, len(events)))]

    monitor_module.read_partition_from = read_from_the_topic  # type: ignore[assignment]
    group_committed: list[int | None] = [None]  # what the group has committed (None: never)
    original_committed = monitor_module.committed_offset
    monitor_module.committed_offset = lambda *_args: group_committed[0]  # type: ignore[assignment]
    handed_to_first = [e for e in events if e.offset != unhanded]
    try:
        broker = _Broker()
        first = _service(s, broker, None, high_water)
        if not backlog:
            high_water[0] = 0
        if rebalance_after is None:
            handed = asyncio.run(_read(first, handed_to_first, batch_sizes, clock, steps=crash_after))
        else:
            async def with_a_rebalance() -> int:
                before = await _read(first, handed_to_first, batch_sizes, clock, steps=rebalance_after)
                # The partition is revoked and assigned back to this worker: faust's recovery reads the state
                # changelog on to its end, and the partition is read again from its committed offset.
                await first.revoke({0})
                first._app.consumer_generation_id = 1
                # The old generation's messages still in faust's take buffer come after it: not read.
                stale = events[before:before + 3]
                await first._batch(stale)
                assert first.n_stale_skipped == len(stale) and not first._held
                _recover(first._state, broker)
                resumed = _committed(acked, skipped, first.commit_limit)
                group_committed[0] = resumed or None
                again = [_Event(e.value, e.offset, acked, generation=1) for e in events[resumed:]]
                return await _read(first, again, batch_sizes, clock, steps=crash_after)

            handed = asyncio.run(with_a_rebalance())
        # kill -9: nothing more is sent or acked.  The group resumes where the worker's consumer committed.
        committed = _committed(acked, skipped, first.commit_limit)
        # The ingest stage restarted too, and sends its last steps' messages again, at the end of the partition:
        # some of them the first worker may have read, and scored.
        item_messages = [e.value for e in events[:max(handed, 1)]][-2 * republished:] if republished else []
        events += [_Event(value, len(events) + i, acked) for i, value in enumerate(item_messages)]
        high_water[0] = len(events)
        successor = _service(s, _Broker(), broker, high_water)
        clock[0] += 10.0

        async def to_the_end() -> None:
            # As on its first event (there may be none left to read): the checkpoints are installed.
            await successor._restore_partition(0)
            group_committed[0] = committed or None
            # faust may start past a committed offset; with none committed it starts at the partition's first.
            await _read(successor, events[committed + (skipped_at_start if committed else 0):], batch_sizes, clock)
            clock[0] += 60.0
            await successor._score(*successor._due(clock[0]), events=[])

        asyncio.run(to_the_end())
    finally:
        monitor_module.time, monitor_module.read_partition_from = original_time, original_read  # type: ignore[assignment]
        monitor_module.committed_offset = original_committed  # type: ignore[assignment]
    status = successor.status()
    assert status["n_held_items"] == 0, status
    assert successor.monitors.monitors[MODEL].n_seen == N_PAIRS, (status, committed)
