"""Opening the model registry the settings name (``DRIFTLINE_REGISTRY``): the file registry, or MLflow.

Everything that reads or writes versions (the retrainer, ``driftline models``,
a :class:`~streams.serving.ModelServer`) opens them here, so both backends are
chosen, configured and checked at start-up in one place.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

from retrainer.artifacts import ArtifactStore
from retrainer.config import open_registry, open_store
from retrainer.exceptions import RefusedModelName, RegistryUnavailable
from retrainer.registry import VersionJournal
from schemas.exceptions import ConfigError
from streams.settings import Settings

__all__ = ["Backend", "open_backend"]

log = logging.getLogger(__name__)
_PROBE_SECONDS = 1.0


@dataclass(frozen=True)
class Backend:
    """A registry and the artifact store its records point into."""

    registry: VersionJournal
    store: ArtifactStore


def open_backend(settings: Settings, models: Iterable[str] = (), *, register: bool = True,
                 wait_seconds: float | None = None) -> Backend:
    """The registry and artifact store of ``settings.registry``, checked before anything is served.

    For MLflow, the tracking server must answer within ``wait_seconds``
    (default ``startup_wait_seconds``); only ``models`` are read (all of
    Driftline's if none are given), and with ``register`` each must be a name
    its registry accepts (it is registered, tagged as Driftline's).

    Raises
    ------
    ConfigError
        Naming ``DRIFTLINE_MLFLOW_TRACKING_URI`` when no tracking server
        answers there, or ``models.<name>`` when MLflow refuses a model name.
    """
    if settings.registry == "file":
        return Backend(open_registry(settings.retrainer_data_dir), open_store(settings.retrainer_data_dir))
    from retrainer.mlflow_registry import MlflowArtifactStore, MlflowRegistry, connect

    uri = settings.mlflow_tracking_uri
    assert uri is not None  # Settings requires it for registry=mlflow
    # MLflow's client takes these from its environment only; Settings is where Driftline reads them.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(settings.mlflow_request_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.mlflow_request_timeout_seconds)
    client = connect(uri)
    names = list(models)
    registry = _wait_for_server(lambda: MlflowRegistry(client, uri), uri,
                                settings.startup_wait_seconds if wait_seconds is None else wait_seconds)
    # Every name is tried before any is read back: a refused name fails here, naming it, not in a crash loop.
    refused = []
    for name in names if register else ():
        try:
            registry.ensure_model(name)
        except RefusedModelName as exc:
            refused.append((f"models.{name}", f"MLflow at {uri} refuses this model name: {exc.reason}"))
    if refused:
        raise ConfigError(str(settings.monitor_config), refused)
    registry.watched = set(names)
    registry.refresh()
    return Backend(registry, MlflowArtifactStore(client, uri, settings.mlflow_experiment))


def _wait_for_server(open_it, uri: str, wait_seconds: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return open_it()
        except RegistryUnavailable as exc:
            if time.monotonic() >= deadline:
                raise ConfigError("settings", [(
                    "DRIFTLINE_MLFLOW_TRACKING_URI",
                    f"no MLflow tracking server answered at {uri} within {wait_seconds:g} s: {exc}",
                )]) from exc
            log.info("waiting for the MLflow tracking server at %s: %s", uri, exc)
            time.sleep(_PROBE_SECONDS)
