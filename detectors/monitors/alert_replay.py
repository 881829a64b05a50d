"""Alerts published after a model's last checkpoint: replaying its input re-derives them, and they must not go out twice.

The monitor stage sends a step's alerts, awaits their acks, and only then writes the checkpoint that covers them,
so that no alert is lost.  A crash between the two leaves alerts on the topic that the restored state has not
seen: the restarted worker replays the input since the checkpoint and decides them again, with the same ids
(they are deterministic).  To send each id once, a checkpoint records where the model's alert partition ended
when it was written (as far as the worker knew: every alert published later lies at or past it); on restore the
worker reads that partition from there to its end, and the ids it finds for the model are not sent again when
the replay re-derives them.

A model with no checkpoint to restore (it crashed before its first, or its checkpoint recorded no end) replays
from its first input still unacked, so any alert it ever published may come again: its alerts are read back from
the partition's first offset (:func:`read_back_starts`).

Everything here is pure; the worker reads the topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from schemas.events import Alert

__all__ = ["AlertReplayGuard", "read_back_starts"]


class AlertReplayGuard:
    """The alert partitions' known ends, and per model the ids published after its restored checkpoint.

    Examples
    --------
    >>> guard = AlertReplayGuard()
    >>> guard.note_end(0, 12); guard.note_end(0, 10); guard.end_of(0), guard.end_of(1)
    (12, None)
    >>> # Read back from alert partition 0: (offset, model, alert id); m's checkpoint recorded the end 11.
    >>> guard.remember_published([(10, "m", "a-old"), (11, "m", "a-new"), (12, "other", "b")], {"m": 11})
    >>> guard.published_after_checkpoint("m")
    ['a-new']
    """

    def __init__(self) -> None:
        self._ends: dict[int, int] = {}
        self._published: dict[str, set[str]] = {}
        self.n_suppressed = 0

    def note_end(self, partition: int, end: int) -> None:
        """The alert partition ends at ``end`` or later (a watermark read, or one past an acknowledged offset)."""
        if end > self._ends.get(partition, -1):
            self._ends[partition] = end

    def end_of(self, partition: int) -> int | None:
        """The alert partition's known end (None before any was noted): an alert sent from now on lies past it."""
        return self._ends.get(partition)

    def remember_published(self, records: Iterable[tuple[int, str | None, str]], starts: Mapping[str, int]) -> None:
        """Take the alerts read back from one partition, ``(offset, model, alert id)``, as published after the
        checkpoints of the models in ``starts`` (model -> the end its checkpoint recorded); others are ignored.

        A model's earlier memory is replaced: it was just restored again.
        """
        found: dict[str, set[str]] = {model: set() for model in starts}
        for offset, model, alert_id in records:
            if model in found and offset >= starts[model]:
                found[model].add(alert_id)
        self._published.update(found)

    def published_after_checkpoint(self, model: str) -> list[str]:
        """The ids still to be suppressed for ``model``, sorted."""
        return sorted(self._published.get(model, ()))

    def unsent(self, alerts: Sequence[Alert]) -> list[Alert]:
        """The alerts not published already; each remembered id suppresses one re-derived alert, then is dropped."""
        out = []
        for alert in alerts:
            published = self._published.get(alert.model)
            if published is not None and alert.alert_id in published:
                published.discard(alert.alert_id)
                self.n_suppressed += 1
            else:
                out.append(alert)
        return out


def read_back_starts(models: Iterable[str], recorded_ends: Mapping[str, int | None]) -> dict[str, int]:
    """Where each of ``models`` (those of one restored monitor-input partition) has its alerts read back from:
    the end its restored checkpoint recorded (``recorded_ends``), else the partition's first offset, 0.

    Examples
    --------
    >>> read_back_starts(["restored", "no-end-recorded", "never-checkpointed"], {"restored": 12, "no-end-recorded": None})
    {'restored': 12, 'no-end-recorded': 0, 'never-checkpointed': 0}
    """
    return {model: end if (end := recorded_ends.get(model)) is not None else 0 for model in models}
