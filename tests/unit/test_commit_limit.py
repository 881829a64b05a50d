"""The worker's monitor consumer commits no further than the monitor stage acked, whatever faust acked itself.

Faust's own ``Consumer._new_offset`` runs here over the bookkeeping it keeps (acked offsets, gaps, the
committed offset), through ``streams.app``'s consumer.  The first test pins the faust behaviour the limit is
for: if it fails, faust no longer commits past unacked messages, and ``CommitLimit`` can be reconsidered.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree

from schemas.config import parse_monitor_config
from streams.app import _MonitorConsumer, create_app
from streams.settings import load_settings
from streams.worker.commit_limit import CommitLimit

CONFIG = "models: {m: {task: classification, performance: {threshold: 0.8}}}"
TOPIC = "t.driftline.monitor-input"
TP0 = TP(TOPIC, 0)


def _consumer(acked: list[int], committed: int | None, limit: CommitLimit | None) -> _MonitorConsumer:
    consumer = object.__new__(_MonitorConsumer)  # only the commit bookkeeping _new_offset reads
    consumer._acked = defaultdict(list, {TP0: list(acked)})
    consumer._acked_index = defaultdict(set, {TP0: set(acked)})
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset = defaultdict(lambda: None, {TP0: committed})
    consumer.app = SimpleNamespace(driftline_commit_limit=limit)
    return consumer


def test_faust_alone_commits_past_messages_nobody_acked() -> None:
    # Messages 0-9 are held by the monitor, unscored; faust acked 10-14, which its stream skipped in a rebalance.
    assert faust_aiokafka.Consumer._new_offset(_consumer(list(range(10, 15)), None, None), TP0) == 15
    # With a committed offset it checks the run starts there, but lets one unacked message (offset 20) through.
    assert faust_aiokafka.Consumer._new_offset(_consumer([21, 22], 20, None), TP0) == 23


def test_the_worker_commits_only_what_the_monitor_acked() -> None:
    limit = CommitLimit(TOPIC)
    assert _consumer(list(range(10, 15)), None, limit)._new_offset(TP0) is None
    limit.advance(0, 10)  # the monitor acked 0-9 once they were scored and checkpointed
    assert _consumer(list(range(0, 15)), None, limit)._new_offset(TP0) == 10
    assert _consumer([21, 22], 20, limit)._new_offset(TP0) == 10  # below the committed offset: faust skips it
    limit.advance(0, 23)
    assert _consumer([21, 22], 20, limit)._new_offset(TP0) == 23
    assert limit.n_clamped == 3
    # Other topics (none acks in the worker's app today) are faust's alone.
    other = TP("elsewhere", 0)
    consumer = _consumer([], None, limit)
    consumer._acked[other], consumer._acked_index[other] = [0, 1], {0, 1}
    assert consumer._new_offset(other) == 2


def test_the_worker_app_commits_through_its_monitor_stage_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def build() -> tuple[object, list[int | None]]:
        settings = load_settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, app_id="commit-limit")
        app = create_app(settings, parse_monitor_config(CONFIG))
        consumer = app.consumer  # built, not started: nothing connects
        tp = TP(settings.topics.monitor_input, 0)
        offsets = []
        for acked_by_monitor in (None, 3):
            if acked_by_monitor is not None:
                app.driftline_commit_limit.advance(0, acked_by_monitor)  # type: ignore[attr-defined]
            consumer._acked[tp], consumer._acked_index[tp] = [0, 1, 2, 3, 4], {0, 1, 2, 3, 4}
            offsets.append(consumer._new_offset(tp))
        return consumer, offsets

    consumer, offsets = asyncio.run(build())
    assert isinstance(consumer, _MonitorConsumer)
    assert offsets == [None, 3]  # faust alone: 5 both times
