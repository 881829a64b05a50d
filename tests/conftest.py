"""Shared fixtures: one real Apache Kafka per test session (or DRIFTLINE_KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker: the configured one, or a local KRaft node started here."""
    configured = os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    from streams.localkafka import LocalKafka
    from streams.processes import free_port

    kafka = LocalKafka(data_dir=Path(tmp_path_factory.mktemp("kafka")), port=free_port(), controller_port=free_port())
    kafka.start()
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()
