"""Checkpoints of monitor state: what one model's monitor knows, and which input it has already seen.

A checkpoint is one model's :class:`~detectors.monitor.ModelMonitor`, pickled,
with the labelled-topic partition its examples come from, the offset of the
next example it has not yet counted, and the prediction ids of its most recent
examples.  After a crash the worker restores the checkpoint and re-reads the
labelled topic from at most that offset (it commits no further), so:

* an example at an offset below ``next_offset`` is already in the state and is
  skipped (a replay must not count twice in the rolling window);
* an example whose prediction id is among the recent ids is a duplicate that
  the ingest stage re-published after its own restart, and is skipped too.

Everything here is pure and has no Kafka in it.
"""

from __future__ import annotations

import pickle
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from detectors.monitor import ModelMonitor

__all__ = ["Checkpoint", "Checkpointer", "RecentIds", "decode_checkpoint", "encode_checkpoint"]

_MAGIC = b"DLC1"


class RecentIds:
    """The last ``size`` ids seen, for dropping re-sent duplicates in bounded memory.

    >>> ids = RecentIds(2)
    >>> ids.add("a"), ids.add("a"), ids.add("b"), ids.add("c"), ids.add("a")
    (True, False, True, True, True)
    """

    def __init__(self, size: int, ids: Iterable[str] = ()) -> None:
        self.size = size
        self._order: deque[str] = deque()
        self._set: set[str] = set()
        for i in ids:
            self.add(i)

    def add(self, item: str) -> bool:
        """Remember ``item``; False if it was already among the recent ones."""
        if item in self._set:
            return False
        self._order.append(item)
        self._set.add(item)
        while len(self._order) > self.size:
            self._set.discard(self._order.popleft())
        return True

    def __contains__(self, item: object) -> bool:
        return item in self._set

    def __len__(self) -> int:
        return len(self._order)

    def to_list(self) -> list[str]:
        return list(self._order)


@dataclass
class Checkpoint:
    model: str
    partition: int
    next_offset: int
    monitor: ModelMonitor
    recent_ids: list[str] = field(default_factory=list)
    #: The model's per-segment monitors, by segment name.
    segments: dict[str, ModelMonitor] = field(default_factory=dict)


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """Bytes for the state table: a format tag and the compressed pickle."""
    return _MAGIC + zlib.compress(pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL))


def decode_checkpoint(blob: bytes | None) -> Checkpoint | None:
    """The checkpoint in ``blob``, or None if it is missing or not in a format this code wrote."""
    if not blob or not blob.startswith(_MAGIC):
        return None
    try:
        checkpoint = pickle.loads(zlib.decompress(blob[len(_MAGIC):]))
    except Exception:  # a corrupt or incompatible checkpoint means a cold start, not a crash loop
        return None
    return checkpoint if isinstance(checkpoint, Checkpoint) else None


class Checkpointer:
    """Per model: the offset up to which its state is valid, its recent ids, and whether it changed.

    Parameters
    ----------
    interval_seconds
        Wall-clock seconds between checkpoints (:meth:`due`).
    dedupe_size
        Prediction ids remembered per model to drop re-published duplicates.
    """

    def __init__(self, interval_seconds: float, dedupe_size: int) -> None:
        self.interval_seconds = interval_seconds
        self.dedupe_size = dedupe_size
        self._next_offset: dict[str, tuple[int, int]] = {}  # model -> (partition, next offset)
        self._recent: dict[str, RecentIds] = {}
        self._dirty: set[str] = set()
        self._last: float | None = None
        self.n_replayed = 0
        self.n_duplicates = 0

    def restore(self, checkpoint: Checkpoint) -> None:
        """Take over a checkpoint's offset and recent ids (the caller installs its monitor)."""
        self._next_offset[checkpoint.model] = (checkpoint.partition, checkpoint.next_offset)
        self._recent[checkpoint.model] = RecentIds(self.dedupe_size, checkpoint.recent_ids)
        self._dirty.discard(checkpoint.model)

    def forget_partition(self, partition: int) -> None:
        """The partition went to another worker: its models' bookkeeping is stale from now on."""
        for model in [m for m, (p, _) in self._next_offset.items() if p == partition]:
            del self._next_offset[model]
            self._recent.pop(model, None)
            self._dirty.discard(model)

    def admit(self, model: str, partition: int, offset: int, prediction_id: str) -> bool:
        """Whether the example at ``offset`` is new to the model's state (and note it if so)."""
        known = self._next_offset.get(model)
        if known is not None and known[0] == partition and offset < known[1]:
            self.n_replayed += 1
            return False
        self._next_offset[model] = (partition, offset + 1)
        self._dirty.add(model)
        recent = self._recent.get(model)
        if recent is None:
            recent = self._recent[model] = RecentIds(self.dedupe_size)
        if not recent.add(prediction_id):
            self.n_duplicates += 1
            return False
        return True

    def next_offset(self, model: str) -> tuple[int, int] | None:
        return self._next_offset.get(model)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def due(self, now: float) -> bool:
        """Whether a checkpoint interval has passed since the last checkpoint (or the first call)."""
        if self._last is None:
            self._last = now
        return now - self._last >= self.interval_seconds

    def snapshot(
        self, monitors: Mapping[str, ModelMonitor], now: float,
        segments: Mapping[tuple[str, str], ModelMonitor] | None = None,
    ) -> list[Checkpoint]:
        """Checkpoints of every model changed since the last snapshot (with its segments); they are then clean."""
        out = []
        for model in sorted(self._dirty):
            if model in monitors:
                partition, next_offset = self._next_offset[model]
                its_segments = {s: m for (owner, s), m in (segments or {}).items() if owner == model}
                out.append(Checkpoint(model, partition, next_offset, monitors[model], self._recent[model].to_list(),
                                      its_segments))
        self._dirty.clear()
        self._last = now
        return out
