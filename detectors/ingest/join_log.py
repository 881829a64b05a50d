"""The join's durable state: what the ingest stage logs after each step, and how a restarted worker rebuilds it.

An event waiting in the join for its partner (a prediction whose outcome comes
an hour later) has had its source offset committed long ago: a crash would
lose it, and its partner would then expire unjoined.  So each step of the
ingest stage (a batch, or an idle tick that expires) logs, per source
partition, to a compacted changelog partition of the same number:

* an **entry** for each event that started waiting (key ``side/prediction id``,
  value a JSON header line ``{"seq": s, "offset": o}`` and the event's raw
  bytes);
* the keys the step *resolved* (joined or expired), in records ``resolved/0``,
  ``resolved/1``, ... of up to ``max_resolved_per_record`` keys each, marked
  with the step's ``seq``: their tombstones are written by the next step;
* a **position** record (key ``position``): the step's ``seq``, the next
  source offset per side and both sides' event-time clocks.

A crash can land anywhere in a step, so the order is what makes it harmless
(Kafka keeps the order of one producer's records in one partition):

1. the tombstones the previous step owes, the step's entries and its resolved
   records are sent together with its outputs (labelled examples, dead
   letters, expiries), and acknowledged;
2. then its position record is.

A rebuilt partition (:func:`rebuild`) takes the last position as the truth:
entries logged by a step after it (``seq`` higher) are dropped, since the
source records behind them are read again; the keys its step resolved are
dropped, since their tombstones may be missing.  A source record below the
position's offsets is skipped when read again: its outputs were acknowledged
before the position was written.

Everything here is pure and has no Kafka in it: the worker sends the records
and reads the partition back.

>>> from datetime import datetime, timezone
>>> log = JoinLog()
>>> step = log.step(0, added=[("prediction", "p1", 7, b'{"x": 1}')], resolved=[],
...                 next_offsets={"prediction": 8}, clocks={"prediction": datetime(2026, 1, 1, tzinfo=timezone.utc)})
>>> [key for key, _ in step.entries], [key for key, _ in step.position]
([b'prediction/p1'], [b'position'])
>>> written = step.entries + step.position
>>> step = log.step(0, added=[], resolved=[("prediction", "p1")], next_offsets={"outcome": 3}, clocks={})
>>> [key for key, _ in step.entries]
[b'resolved/0']
>>> state = rebuild(written + step.entries + step.position)
>>> state.pending, state.next_offsets   # p1 was resolved by the last step, though its tombstone is not written
([], {'prediction': 8, 'outcome': 3})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, TypeVar

from pydantic import AwareDatetime, BaseModel, Field, TypeAdapter, ValidationError

from schemas.events import SIDES, Side

__all__ = ["POSITION_KEY", "JoinLog", "PendingEntry", "Rebuilt", "Step", "entry_key", "rebuild"]

T = TypeVar("T")
Key = tuple[Side, str]
Record = tuple[bytes, bytes | None]

POSITION_KEY = b"position"
_RESOLVED_PREFIX = b"resolved/"


def entry_key(side: Side, prediction_id: str) -> bytes:
    """The changelog key of a waiting event.

    >>> entry_key("outcome", "p-9")
    b'outcome/p-9'
    """
    return f"{side}/{prediction_id}".encode()


@dataclass(frozen=True)
class PendingEntry:
    """A waiting event as logged: its side, id, source offset and raw bytes."""

    side: Side
    prediction_id: str
    offset: int
    value: bytes


@dataclass(frozen=True)
class Step:
    """The records of one step of one source partition, in the order they must be sent.

    ``entries`` go with the step's outputs; ``position`` only once those are all acknowledged.
    """

    entries: list[Record]
    position: list[Record]


@dataclass
class Rebuilt:
    """A source partition's join state as its changelog left it."""

    pending: list[PendingEntry] = field(default_factory=list)
    #: Per side, the first source offset not yet reflected in the state (records below it are skipped).
    next_offsets: dict[str, int] = field(default_factory=dict)
    clocks: dict[str, datetime | None] = field(default_factory=dict)
    #: The sequence number of the last complete step (-1: nothing logged).
    seq: int = -1
    #: Keys resolved by that step: the next step writes their tombstones.
    resolved: list[Key] = field(default_factory=list)
    #: Records left out, not written by this code (a foreign producer's): their keys and why.
    refused: list[tuple[bytes | None, str]] = field(default_factory=list)

    def is_replayed(self, side: str, offset: int) -> bool:
        """Whether a source record read again is already reflected in this state (so must be skipped)."""
        return offset < self.next_offsets.get(side, 0)


class JoinLog:
    """Per worker: the records each step writes, per source partition, and the tombstones still owed.

    Parameters
    ----------
    max_resolved_per_record
        Keys one position record lists at most; a step resolving more writes more rounds.
    """

    def __init__(self, max_resolved_per_record: int = 2_000) -> None:
        if max_resolved_per_record < 1:
            raise ValueError("max_resolved_per_record must be at least 1")
        self.max_resolved_per_record = max_resolved_per_record
        self._seq: dict[int, int] = {}
        self._owed: dict[int, list[Key]] = {}  # tombstones of the last position's resolved keys
        self._next_offsets: dict[int, dict[str, int]] = {}

    def resume(self, partition: int, rebuilt: Rebuilt) -> None:
        """Carry on from a rebuilt partition: its sequence, offsets and owed tombstones."""
        self._seq[partition] = rebuilt.seq
        self._owed[partition] = list(rebuilt.resolved)
        self._next_offsets[partition] = dict(rebuilt.next_offsets)

    def seq(self, partition: int) -> int:
        """The sequence number of the last step logged for ``partition`` here (-1: none)."""
        return self._seq.get(partition, -1)

    def forget(self, partition: int) -> None:
        """The partition went to another worker, which rebuilds it from the changelog."""
        for state in (self._seq, self._owed, self._next_offsets):
            state.pop(partition, None)

    def step(self, partition: int, added: Iterable[tuple[Side, str, int, bytes]], resolved: Sequence[Key],
             next_offsets: dict[str, int], clocks: dict[str, datetime | None]) -> Step:
        """The records of one step: ``added`` events started waiting, ``resolved`` keys stopped.

        ``next_offsets`` may name only the sides that moved (the others keep their offsets); ``clocks`` are the
        partition's current clocks (the join's, which a rebuild restores too).
        """
        seq = self._seq.get(partition, -1) + 1
        self._seq[partition] = seq
        offsets = self._next_offsets.setdefault(partition, {})
        for side, offset in next_offsets.items():
            offsets[side] = max(offsets.get(side, 0), offset)
        entries: list[Record] = [(entry_key(*key), None) for key in self._owed.get(partition, [])]
        header = b'{"seq": %d, "offset": %d}\n'
        entries += [(entry_key(side, pid), header % (seq, offset) + value) for side, pid, offset, value in added]
        # Overwriting an earlier step's resolved/i is safe: the tombstones that step owed went first.
        size = self.max_resolved_per_record
        for i in range(0, len(resolved), size):
            chunk = {"seq": seq, "keys": [list(key) for key in resolved[i:i + size]]}
            entries.append((_RESOLVED_PREFIX + str(i // size).encode(), json.dumps(chunk).encode()))
        self._owed[partition] = list(resolved)
        position = {"seq": seq, "next_offsets": offsets,
                    "clocks": {side: c.isoformat() for side, c in clocks.items() if c is not None}}
        return Step(entries, [(POSITION_KEY, json.dumps(position).encode())])


class _Position(BaseModel, frozen=True):
    seq: Annotated[int, Field(ge=0)]
    next_offsets: dict[Side, Annotated[int, Field(ge=0)]]
    clocks: dict[Side, AwareDatetime | None]


class _Resolved(BaseModel, frozen=True):
    seq: int
    keys: list[tuple[Side, str]]


class _EntryHeader(BaseModel, frozen=True):
    seq: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]


_POSITION, _RESOLVED, _HEADER = TypeAdapter(_Position), TypeAdapter(_Resolved), TypeAdapter(_EntryHeader)


class _Refused(ValueError):
    """A changelog record this code did not write: a foreign producer's, or another version's."""


def _parsed(adapter: TypeAdapter[T], blob: bytes, what: str) -> T:
    try:
        return adapter.validate_json(blob)
    except ValidationError as exc:
        raise _Refused(f"{what}: {exc.errors(include_url=False)[0]['msg']}") from exc


def _pending_entry(key: bytes, value: bytes) -> tuple[_EntryHeader, PendingEntry]:
    try:
        side, _, prediction_id = key.decode().partition("/")
    except UnicodeDecodeError as exc:
        raise _Refused("entry key is not UTF-8") from exc
    if side not in SIDES or not prediction_id:
        raise _Refused("key is neither position, resolved/<n> nor <side>/<prediction id>")
    header, _, raw = value.partition(b"\n")
    meta = _parsed(_HEADER, header, "entry header")
    return meta, PendingEntry(side, prediction_id, meta.offset, raw)


def rebuild(records: Iterable[Record]) -> Rebuilt:
    """A partition's state from its changelog records, in offset order (compacted or not).

    Records this code did not write (a foreign producer's garbage) are left out and listed in ``refused``; a
    refused position record leaves nothing to trust, so the partition starts empty.
    """
    latest: dict[bytes, bytes | None] = {}
    refused: list[tuple[bytes | None, str]] = []
    for key, value in records:
        if key is None:
            refused.append((key, "record without a key"))
        else:
            latest[key] = value
    position_blob = latest.pop(POSITION_KEY, None)
    if position_blob is None:
        return Rebuilt(refused=refused)
    try:
        position = _parsed(_POSITION, position_blob, "position")
    except _Refused as exc:
        return Rebuilt(refused=[*refused, (POSITION_KEY, str(exc))])
    resolved: set[Key] = set()
    for key in [k for k in latest if k.startswith(_RESOLVED_PREFIX)]:
        blob = latest.pop(key)
        try:
            chunk = _parsed(_RESOLVED, blob, "resolved keys") if blob else None
        except _Refused as exc:
            refused.append((key, str(exc)))
            continue
        if chunk is not None and chunk.seq == position.seq:  # earlier steps' keys have their tombstones written
            resolved.update(chunk.keys)
    out = Rebuilt(next_offsets={str(side): o for side, o in position.next_offsets.items()},
                  clocks={str(side): c for side, c in position.clocks.items()}, seq=position.seq,
                  resolved=sorted(resolved), refused=refused)
    for key, value in latest.items():
        if value is None:
            continue
        try:
            meta, entry = _pending_entry(key, value)
        except _Refused as exc:
            refused.append((key, str(exc)))
            continue
        if meta.seq <= out.seq and (entry.side, entry.prediction_id) not in resolved:
            out.pending.append(entry)  # else logged by a step the crash cut short, or resolved by the last step
    out.pending.sort(key=lambda e: (e.side, e.offset))
    return out
