"""Checkpoints of monitor state: what one model's monitors know, and which input they have already seen.

A checkpoint is one model's monitors (its :class:`~detectors.monitors.performance_monitor.ModelMonitor`,
its segments' and its versions' :class:`~detectors.monitors.data_monitor.DataMonitor` and
:class:`~detectors.monitors.estimate_monitor.EstimateMonitor`, and the pooled baseline its segments borrow),
pickled together so that they keep sharing one retrain cooldown, with the
monitor-input partition the model's messages come from, the offset of its
first message not wholly in the state, and the ids of its most recently scored
items.  After a crash the worker restores the checkpoint and re-reads the
partition from at most that offset (it commits no further), so:

* a message at an offset below ``next_offset`` is already in the state and is
  skipped whole (a replay must not count twice in a rolling window);
* an item whose id is among the recent ids was scored before the crash (its
  message was only partly scored, or the ingest stage re-published it after
  its own restart), and is skipped too.

Items arrive in messages but are scored later, once the watermarks pass them
(:class:`~detectors.ingest.merge.MonitorInputOrder`); ``next_offset`` stays at the
oldest message with an item still waiting, so a crash never loses one.

Each record is signed (:mod:`detectors.monitors.signed_state`) and its signature checked before it is
unpickled: the changelog is a Kafka topic, and a pickle from anyone else could run code in the worker.

Everything here is pure and has no Kafka in it.
"""

from __future__ import annotations

import pickle
import zlib
from collections import Counter, deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from detectors.exceptions import StaleState
from detectors.monitors.data_monitor import DataMonitor
from detectors.monitors.estimate_monitor import EstimateMonitor
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.performance_monitor import ModelMonitor
from detectors.monitors.signed_state import StateRejection, StateSigner

__all__ = ["Checkpoint", "Checkpointer", "RecentIds", "decode_checkpoint", "encode_checkpoint"]

# DLC2 added the label-free estimates and the pooled segment baseline; a DLC1 record is refused (a cold start).
_MAGIC = b"DLC2"
_OLDER_FORMATS = (b"DLC1",)
# zlib's fastest level: a checkpoint of a thousand models (24 MB pickled) compressed in 0.30 s to 9.2 MB, against
# 0.69 s to 8.7 MB at the default level 6; it is written every checkpoint interval, and read once per restore.
COMPRESSION_LEVEL = 1
# Dead letters from an internal topic come from foreign producers only, so they are rare; this bounds the memory of
# those already sent if a producer floods one with garbage.
DEAD_LETTERS_REMEMBERED = 10_000


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
    #: The model's per-segment performance monitors, by segment name.
    segments: dict[str, ModelMonitor] = field(default_factory=dict)
    #: The model's data monitors, by (version, segment or None).
    data: dict[tuple[str, str | None], DataMonitor] = field(default_factory=dict)
    #: The monitors of the model's further metrics, by metric.
    metrics: dict[str, ModelMonitor] = field(default_factory=dict)
    #: Predictions of the model its data monitors have watched (all versions, retired ones too).
    n_predictions: int = 0
    #: The model's label-free estimate monitors, by version.
    estimates: dict[str, EstimateMonitor] = field(default_factory=dict)
    #: (labelled examples, errors) of the model's pooled baseline, which its segments borrow.
    pool: tuple[int, int] | None = None
    #: Where the model's alert-topic partition ended when this was written, as far as the worker knew: the
    #: alerts it publishes later lie at or past it (:mod:`detectors.monitors.alert_replay`).  None: unknown.
    alerts_end: int | None = None


def encode_checkpoint(checkpoint: Checkpoint, signer: StateSigner) -> bytes:
    """Bytes for the state table: the compressed pickle behind a format tag, signed under the model's name."""
    payload = _MAGIC + zlib.compress(pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL), COMPRESSION_LEVEL)
    return signer.sign(checkpoint.model.encode(), payload)


def decode_checkpoint(blob: bytes | None, signer: StateSigner, record_key: bytes | None) -> Checkpoint | StateRejection:
    """The checkpoint in ``blob`` (the value of ``record_key``), or why it is refused.

    The signature is checked first: the bytes of a record without a valid one are never decompressed,
    let alone unpickled.
    """
    payload = signer.verify(record_key, blob)
    if isinstance(payload, StateRejection):
        return payload
    if payload.startswith(_OLDER_FORMATS):
        return StateRejection("undecodable", "signed, but an older checkpoint format: the model starts cold")
    if not payload.startswith(_MAGIC):
        return StateRejection("undecodable", "signed, but not a checkpoint")
    try:
        checkpoint = pickle.loads(zlib.decompress(payload[len(_MAGIC):]))
    except StaleState as exc:  # an older Driftline's monitors: they kept other state, so the model starts cold
        return StateRejection("undecodable", f"signed, but written by an older Driftline: {exc}")
    except Exception as exc:  # signed by us, yet unreadable (another version's classes): a cold start, not a crash loop
        return StateRejection("undecodable", f"signed, but cannot be loaded: {type(exc).__name__}")
    if not isinstance(checkpoint, Checkpoint) or checkpoint.model.encode() != record_key:
        return StateRejection("undecodable", "signed, but not the checkpoint of its key's model")
    return checkpoint


class Checkpointer:
    """Per model: the offset up to which its state is complete, its recent ids, and whether it changed.

    Parameters
    ----------
    interval_seconds
        Wall-clock seconds between checkpoints (:meth:`due`).
    dedupe_size
        Item ids remembered per model to drop replayed and re-published items.

    Examples
    --------
    >>> cp = Checkpointer(interval_seconds=10, dedupe_size=100)
    >>> cp.arrive("m", partition=0, offset=7, n_items=2)
    True
    >>> cp.admit("m", 7, "p:a"), cp.next_offset("m")   # one item of offset 7 still waits
    (True, (0, 7))
    >>> cp.admit("m", 7, "p:b"), cp.next_offset("m")
    (True, (0, 8))
    >>> cp.arrive("m", 0, 9, 1), cp.admit("m", 9, "p:a")   # a re-published item
    (True, False)
    """

    def __init__(self, interval_seconds: float, dedupe_size: int) -> None:
        self.interval_seconds = interval_seconds
        self.dedupe_size = dedupe_size
        self._partition: dict[str, int] = {}
        self._skip_below: dict[str, tuple[int, int]] = {}  # model -> its restored checkpoint's (partition, offset)
        self._after_last: dict[str, int] = {}  # model -> one past the last message that arrived
        self._waiting: dict[str, Counter[int]] = {}  # model -> offset -> items arrived and not yet scored
        self._recent: dict[str, RecentIds] = {}
        # Kept through forget_partition: a partition that comes back is re-read from its committed offset.
        self._dead_lettered = RecentIds(DEAD_LETTERS_REMEMBERED)
        self._dirty: set[str] = set()
        self._last: float | None = None
        self.n_replayed = 0
        self.n_duplicates = 0

    def restore(self, checkpoint: Checkpoint) -> None:
        """Take over a checkpoint's offset and recent ids (the caller installs its monitors)."""
        model = checkpoint.model
        self._partition[model] = checkpoint.partition
        self._skip_below[model] = (checkpoint.partition, checkpoint.next_offset)
        self._after_last.pop(model, None)
        self._waiting.pop(model, None)
        self._recent[model] = RecentIds(self.dedupe_size, checkpoint.recent_ids)
        self._dirty.discard(model)

    def forget_partition(self, partition: int) -> None:
        """The partition went to another worker: its models' bookkeeping is stale from now on."""
        for model in [m for m, p in self._partition.items() if p == partition]:
            del self._partition[model]
            self._skip_below.pop(model, None)
            self._after_last.pop(model, None)
            self._waiting.pop(model, None)
            self._recent.pop(model, None)
            self._dirty.discard(model)

    def arrive(self, model: str, partition: int, offset: int, n_items: int) -> bool:
        """A message of ``n_items`` items for ``model``: False if it is wholly in the state already (skip it)."""
        restored = self._skip_below.get(model)
        if restored is not None and restored[0] == partition and offset < restored[1]:
            self.n_replayed += 1
            return False
        self._partition[model] = partition
        self._after_last[model] = offset + 1
        self._dirty.add(model)
        if n_items:
            self._waiting.setdefault(model, Counter())[offset] += n_items
        return True

    def first_dead_letter(self, partition: int, offset: int) -> bool:
        """A message at ``offset`` is refused: whether to dead-letter it, False if that was done already.

        It was if this process dead-lettered it before (a rebalance had it read again before its ack was
        committed), or if the restored checkpoint of a model of its partition lies past it: that state was
        written after the message was read, and a refused message's dead letter is acknowledged in the step
        that reads it, before any checkpoint.
        """
        covered = any(p == partition and offset < next_offset for p, next_offset in self._skip_below.values())
        return self._dead_lettered.add(f"{partition}@{offset}") and not covered

    def admit(self, model: str, offset: int, item_id: str) -> bool:
        """An item of an arrived message is due for scoring: False if it was scored before (drop it)."""
        waiting = self._waiting[model]
        waiting[offset] -= 1
        if waiting[offset] <= 0:
            del waiting[offset]
        self._dirty.add(model)
        recent = self._recent.get(model)
        if recent is None:
            recent = self._recent[model] = RecentIds(self.dedupe_size)
        if not recent.add(item_id):
            self.n_duplicates += 1
            return False
        return True

    def next_offset(self, model: str) -> tuple[int, int] | None:
        """(partition, offset of the model's first message not wholly scored), or None if unknown."""
        if model not in self._partition:
            return None
        waiting = self._waiting.get(model)
        if waiting:
            return self._partition[model], min(waiting)
        if model in self._after_last:
            return self._partition[model], self._after_last[model]
        return self._skip_below[model]

    def oldest_waiting(self, partition: int) -> int | None:
        """The smallest offset on ``partition`` with items not yet scored (its messages must not be acked)."""
        offsets = [min(w) for m, w in self._waiting.items() if w and self._partition.get(m) == partition]
        return min(offsets) if offsets else None

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def due(self, now: float) -> bool:
        """Whether a checkpoint interval has passed since the last checkpoint (or the first call)."""
        if self._last is None:
            self._last = now
        return now - self._last >= self.interval_seconds

    def snapshot(self, monitors: MonitorSet, now: float, models: Collection[str] | None = None) -> list[Checkpoint]:
        """Checkpoints of every model changed since the last snapshot (with all its monitors); they are then clean.

        With ``models``, only those of them that changed: the interval (:meth:`due`) keeps running.
        """
        chosen = sorted(self._dirty if models is None else self._dirty.intersection(models))
        out = []
        for model in chosen:
            where = self.next_offset(model)
            if model in monitors.monitors and where is not None:
                segments = {s: m for (owner, s), m in monitors.segment_monitors.items() if owner == model}
                recent = self._recent.get(model)
                out.append(Checkpoint(model, where[0], where[1], monitors.monitors[model],
                                      recent.to_list() if recent else [], segments, monitors.data_monitors_of(model),
                                      monitors.metric_monitors_of(model), monitors.n_predictions[model],
                                      monitors.estimate_monitors_of(model), monitors.pool.get(model)))
        self._dirty.difference_update(chosen)
        if models is None:
            self._last = now
        return out
