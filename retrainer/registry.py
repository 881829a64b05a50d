"""The model registry: every version's status history and lineage, in an append-only journal.

:class:`VersionJournal` is what both backends share (the queries and the rollback rule);
:class:`ModelRegistry` keeps the journal in a file, :class:`retrainer.mlflow_registry.MlflowRegistry` in MLflow.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from retrainer.exceptions import RegistryError, RollbackUnavailable, UnknownVersion
from schemas.events import ModelVersion

__all__ = ["ModelRegistry", "REGISTRY_FILENAME", "VersionJournal"]

log = logging.getLogger(__name__)

REGISTRY_FILENAME = "registry.jsonl"


class VersionJournal(ABC):
    """Model versions and the retrain triggers they handled, read back as one ordered journal.

    Each status change of a version (candidate, promoted, rejected,
    rolled_back) is a full :class:`~schemas.events.ModelVersion` record, so the
    journal is the lineage.  The latest record of a version is its status; the
    current version of a model is the most recently promoted one that has not
    been rolled back.  Subclasses say where the journal lives (:meth:`refresh`
    reads it, :meth:`record` appends to it); every query and the rollback rule
    are here, so both backends answer ``driftline models`` alike.
    """

    #: Where the journal lives, for messages (a path or a tracking URI).
    location: str
    #: Whether reading it back costs a round trip to a server (so callers refresh it sparingly).
    remote: bool = False

    def __init__(self) -> None:
        self._records: dict[str, list[ModelVersion]] = {}
        self._latest: dict[tuple[str, str], ModelVersion] = {}
        self._handled: set[str] = set()

    @abstractmethod
    def refresh(self) -> None:
        """Read whatever other processes (e.g. a CLI rollback) wrote since the last read."""

    @abstractmethod
    def record(self, records: Sequence[ModelVersion], handled_trigger: str | None = None) -> list[ModelVersion]:
        """Write ``records`` (and the trigger they handle) as one decision; return them as written."""

    def reconcile(self, now: datetime) -> list[str]:
        """Make what apps follow agree with the journal after a crash; the models that changed.

        Nothing to do for a journal that is its own only copy (the file registry); MLflow's alias is a second one.
        """
        return []

    def _add(self, record: ModelVersion) -> None:
        self._records.setdefault(record.model, []).append(record)
        self._latest[(record.model, record.version)] = record

    def models(self) -> list[str]:
        """Every model with at least one version, sorted."""
        return sorted(self._records)

    def history(self, model: str) -> list[ModelVersion]:
        """Every record of ``model`` in the order it was written (status changes included)."""
        return list(self._records.get(model, []))

    def versions(self, model: str) -> list[ModelVersion]:
        """The latest record of each version of ``model``, oldest version first."""
        seen: dict[str, None] = {}
        for record in self._records.get(model, []):
            seen.setdefault(record.version, None)
        return [self._latest[(model, version)] for version in seen]

    def get(self, model: str, version: str) -> ModelVersion:
        """The latest record of one version."""
        try:
            return self._latest[(model, version)]
        except KeyError:
            raise UnknownVersion(model, version) from None

    def current(self, model: str) -> ModelVersion | None:
        """The version apps should serve: the last promoted one not since rolled back."""
        for record in reversed(self._records.get(model, [])):
            if record.status == "promoted" and self._latest[(model, record.version)].status == "promoted":
                return self._latest[(model, record.version)]
        return None

    def next_version(self, model: str) -> str:
        """One more than the highest numeric version of ``model`` (``"1"`` for a new model)."""
        numbers = [int(v) for (m, v) in self._latest if m == model and v.isdigit()]
        return str(max(numbers, default=0) + 1)

    def is_trigger_handled(self, trigger_id: str) -> bool:
        """Whether a retrain trigger was already acted on (by this or an earlier process)."""
        return trigger_id in self._handled

    def rollback(self, model: str, now: datetime, reason: str = "") -> list[ModelVersion]:
        """Mark the current version rolled back and re-promote the one promoted before it.

        Returns the two records written (``rolled_back``, then ``promoted``),
        which the caller publishes.

        Raises
        ------
        RollbackUnavailable
            ``model`` has no current version, or none was promoted before it.
        """
        self.refresh()
        current = self.current(model)
        if current is None:
            raise RollbackUnavailable(model, "it has no promoted version")
        target = self._previous_promoted(model, current.version)
        if target is None:
            raise RollbackUnavailable(model, f"no version was promoted before {current.version}")
        why = f": {reason}" if reason else ""
        return self.record([
            current.model_copy(update={"status": "rolled_back", "created_at": now, "reason": f"rolled back to {target.version}{why}"}),
            target.model_copy(update={"status": "promoted", "created_at": now, "reason": f"restored by rollback from {current.version}{why}"}),
        ])

    def _previous_promoted(self, model: str, current_version: str) -> ModelVersion | None:
        records = self._records.get(model, [])
        last_current = max(i for i, r in enumerate(records) if r.status == "promoted" and r.version == current_version)
        for record in reversed(records[:last_current]):
            latest = self._latest[(model, record.version)]
            if record.status == "promoted" and record.version != current_version and latest.status == "promoted":
                return latest
        return None

    def __iter__(self) -> Iterator[ModelVersion]:
        for model in self.models():
            yield from self.versions(model)


class ModelRegistry(VersionJournal):
    """Model versions and handled retrain triggers, persisted as JSON lines.

    The embedded default backend: the journal of :class:`VersionJournal` as an
    append-only file.  Reopening the same file restores everything, including
    which triggers were handled.

    Parameters
    ----------
    path
        The journal file, conventionally ``<store root>/registry.jsonl``;
        created with its directory if missing.

    Examples
    --------
    >>> import tempfile
    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> registry = ModelRegistry(Path(tempfile.mkdtemp()) / REGISTRY_FILENAME)
    >>> _ = registry.record([ModelVersion(model="asr", version="1", status="promoted", created_at=t)])
    >>> _ = registry.record([ModelVersion(model="asr", version="2", status="promoted", created_at=t,
    ...                                   parent_version="1", trigger_id="t-1")], handled_trigger="t-1")
    >>> registry.current("asr").version, registry.is_trigger_handled("t-1")
    ('2', True)
    >>> [(v.version, v.status) for v in registry.rollback("asr", now=t, reason="bad outputs")]
    [('2', 'rolled_back'), ('1', 'promoted')]
    >>> ModelRegistry(registry.path).current("asr").version
    '1'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._offset = 0
        self.refresh()

    def refresh(self) -> None:
        """Read whatever other processes (e.g. a CLI rollback) appended since the last read."""
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        if not data:
            return
        # Stop at the last complete line: anything after it is either another
        # process's write in flight or a torn tail, which ``record`` drops.
        end = data.rfind(b"\n") + 1
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if line.strip():
                self._apply(line, number)
        self._offset += end

    def _apply(self, line: bytes, number: int) -> None:
        try:
            entry = json.loads(line)
            if entry["type"] == "version":
                self._add(ModelVersion.model_validate_json(json.dumps(entry["record"])))
            elif entry["type"] == "trigger":
                self._handled.add(str(entry["trigger_id"]))
            else:
                raise ValueError(f"unknown entry type {entry['type']!r}")
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise RegistryError(f"registry {self.path} is corrupt after byte {self._offset} (entry {number}): {exc}") from exc

    def record(self, records: Sequence[ModelVersion], handled_trigger: str | None = None) -> list[ModelVersion]:
        """Append ``records`` (and the trigger they handle) as one write, then fsync.

        All the lines go in a single ``write`` under an exclusive lock, so a
        crash either keeps the whole decision for a trigger or leaves a torn
        tail that the next open drops and the trigger is run again.
        """
        lines = [json.dumps({"type": "version", "record": r.model_dump(mode="json")}, sort_keys=True) for r in records]
        if handled_trigger is not None:
            lines.append(json.dumps({"type": "trigger", "trigger_id": handled_trigger}, sort_keys=True))
        if not lines:
            return []
        payload = ("\n".join(lines) + "\n").encode()
        with self.path.open("ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self.refresh()
                size = os.fstat(f.fileno()).st_size
                if size > self._offset:
                    # Under the lock nobody else is writing, so an unterminated
                    # tail is a crashed append; it was never acknowledged, so
                    # dropping it loses nothing that was promised.
                    log.warning("registry %s: dropping a torn final line (%d bytes)", self.path, size - self._offset)
                    os.ftruncate(f.fileno(), self._offset)
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self.refresh()
        return list(records)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.path)!r})"
