"""A failed ingest stage stops the process (crash-only), instead of leaving a worker up that reads nothing."""

from __future__ import annotations

import asyncio

import pytest

from schemas.config import parse_monitor_config
from streams.metrics import WorkerMetrics
from streams.settings import load_settings
from streams.worker.ingest import EXIT_STAGE_FAILED, IngestThread


def test_a_failure_in_the_ingest_thread_exits_with_its_status() -> None:
    exits: list[int] = []
    thread = IngestThread(load_settings(app_id="unit"), parse_monitor_config("models: {}"), WorkerMetrics(),
                          exit=exits.append)

    def broken_loop() -> None:
        raise RuntimeError("broker gone")

    thread._loop = broken_loop  # type: ignore[method-assign]  # noqa: SLF001
    with pytest.raises(RuntimeError, match="broker gone"):
        asyncio.run(thread.run())
    assert exits == [EXIT_STAGE_FAILED]
