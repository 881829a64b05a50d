"""The alert topic read back on restore, for :class:`detectors.monitors.alert_replay.AlertReplayGuard`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from pydantic import TypeAdapter, ValidationError

from detectors.monitors.alert_replay import AlertReplayGuard
from schemas.events import Alert
from streams.exceptions import TopicError
from streams.settings import Settings
from streams.topics import partition_ends, read_partition_from
from streams.worker.messages import partition_of

__all__ = ["AlertLog"]

log = logging.getLogger(__name__)
_ALERT = TypeAdapter(Alert)
# A read back runs while the monitor stage waits for it: past this, give up and fall back to at least once.
READ_BACK_SECONDS = 10.0


class AlertLog:
    """Where each model's alerts go on the alert topic, its partitions' ends, and what was published there.

    Reads run in a thread: they block on the broker.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topics.alerts
        self._n_partitions: int | None = None

    def partition_of(self, model: str) -> int | None:
        """The alert partition of ``model`` (alerts are keyed by model), None before :meth:`seed`."""
        return None if self._n_partitions is None else partition_of(model.encode(), self._n_partitions)

    async def seed(self, guard: AlertReplayGuard) -> None:
        """Note the alert partitions' ends, once, before this process publishes any alert.

        If they cannot be read, checkpoints record no end until a later restore reads them (a later read is
        still a lower bound of where the alerts sent after it land).
        """
        if self._n_partitions is not None:
            return
        try:
            ends = await asyncio.to_thread(partition_ends, self._settings, self._topic, READ_BACK_SECONDS)
        except TopicError as exc:
            log.warning("could not read the end offsets of %s (%s): checkpoints record none until they are",
                        self._topic, exc)
            return
        for partition, end in ends.items():
            guard.note_end(partition, end)
        self._n_partitions = len(ends)

    async def read_back(self, guard: AlertReplayGuard, starts: Mapping[str, int]) -> None:
        """Give ``guard`` the alerts each model published at or past its checkpoint's recorded end (``starts``).

        If the topic cannot be read, nothing is suppressed: an alert may then go out twice, never zero times.
        """
        by_partition: dict[int, dict[str, int]] = {}
        for model, start in starts.items():
            partition = self.partition_of(model)
            if partition is not None:
                by_partition.setdefault(partition, {})[model] = start
        for partition, models in by_partition.items():
            try:
                records = await asyncio.to_thread(read_partition_from, self._settings, self._topic, partition,
                                                  min(models.values()), READ_BACK_SECONDS)
            except TopicError as exc:
                log.warning("could not read back %s[%d] on restore (%s): alerts published since the checkpoints "
                            "of %s may be sent again", self._topic, partition, exc, sorted(models))
                continue
            published = []
            for offset, _key, value in records:
                try:
                    alert = _ALERT.validate_json(value or b"")
                except ValidationError:
                    continue  # not one of ours: nothing to suppress
                published.append((offset, alert.model, alert.alert_id))
            guard.remember_published(published, models)
