"""Shared fixtures: one real Apache Kafka per test session (or DRIFTLINE_KAFKA_BOOTSTRAP), one real MLflow server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.mlflow_server import MlflowServer


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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["MlflowServer"]:
    """A real ``mlflow server`` (sqlite backend, local artifacts) on a free loopback port, shared by the session."""
    pytest.importorskip("mlflow.server", reason="the test extra installs mlflow: pip install -e '.[test]'")
    from tests.mlflow_server import MlflowServer

    server = MlflowServer(Path(tmp_path_factory.mktemp("mlflow"))).start()
    try:
        yield server
    finally:
        server.stop()
