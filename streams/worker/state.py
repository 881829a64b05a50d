"""The monitor-state table's records: signed on the way out, verified before they are loaded on the way in.

A record that fails verification is never unpickled.  It is counted
(``driftline_state_rejected_total``), logged once with its topic, partition and offset, and its model starts
cold.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detectors.monitors.checkpoint import Checkpoint, decode_checkpoint, encode_checkpoint
from detectors.monitors.signed_state import StateRejection, StateSigner
from streams.exceptions import StreamsError
from streams.metrics import WorkerMetrics
from streams.settings import Settings

__all__ = ["MonitorState", "StateKeyError", "state_signer"]

log = logging.getLogger(__name__)
KEY_FILE = "state.key"


class StateKeyError(StreamsError):
    """The generated state key's file cannot be used (its permissions let others read it, say)."""


def state_signer(settings: Settings) -> StateSigner:
    """The signer of this worker's checkpoints: the configured key, else the one generated into the data dir."""
    if settings.state_key is not None:
        return StateSigner(settings.state_key.get_secret_value().encode())
    return StateSigner(_generated_key(settings.data_dir / KEY_FILE))


def _generated_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of two processes starting on one data dir, one writes the key and the other reads it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise StateKeyError(f"{path} is readable by others (mode {mode:o}): chmod 600 it, "
                                "or set DRIFTLINE_STATE_KEY") from None
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_hex(32).encode())
    log.warning("DRIFTLINE_STATE_KEY is not set: generated a state key into %s. Workers sharing an app id must "
                "share one key (set DRIFTLINE_STATE_KEY), or each cold-starts the models it takes over.", path)
    return path.read_bytes().strip()


class MonitorState:
    """The monitor-state table, with where each record was read in its changelog and what was refused.

    Give :meth:`on_changelog_event` to the table (faust's ``on_changelog_event``), then set :attr:`table`.
    """

    def __init__(self, signer: StateSigner, metrics: WorkerMetrics) -> None:
        self.table: Any = None
        self._signer = signer
        self._metrics = metrics
        self._read_at: dict[Any, tuple[int, int]] = {}  # record key -> (changelog partition, offset) recovery read
        self._rejected: set[tuple[int, int]] = set()

    async def on_changelog_event(self, event: Any) -> None:
        self._read_at[event.key] = (event.message.partition, event.message.offset)

    @property
    def topic(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def encode(self, checkpoint: Checkpoint) -> bytes:
        return encode_checkpoint(checkpoint, self._signer)

    def checkpoints(self, partition: int) -> Iterator[Checkpoint]:
        """The verified checkpoints recovery read from changelog ``partition``; the others are refused."""
        for key, blob in list(self.table.data.items()):
            where = self._read_at.get(key)
            if where is None or where[0] != partition:
                continue
            checkpoint = decode_checkpoint(blob, self._signer, key)
            if isinstance(checkpoint, StateRejection):
                self._refuse(where, key, checkpoint)
            elif checkpoint.partition == partition:
                yield checkpoint

    def _refuse(self, where: tuple[int, int], key: Any, rejection: StateRejection) -> None:
        if where in self._rejected:
            return
        self._rejected.add(where)
        self._metrics.state_rejected.labels("monitor", rejection.kind).inc()
        log.warning("monitor state record %s[%d]@%d (key %.80r) refused, not loaded: %s; its model starts cold",
                    self.topic, where[0], where[1], key, rejection.reason)
