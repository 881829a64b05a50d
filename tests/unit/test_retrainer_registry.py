"""Artifact store checksum refusal and the model registry's persistence and rollback."""

from __future__ import annotations

import os
import pickle
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from retrainer import (
    REGISTRY_FILENAME,
    ArtifactError,
    ArtifactOutsideStore,
    ArtifactStore,
    ChecksumMismatch,
    LocalArtifactStore,
    ModelRegistry,
    RegistryError,
    RollbackUnavailable,
    UnknownVersion,
    sha256_hex,
)
from schemas.events import ModelVersion

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class _Booby:
    """Unpickling this creates a marker file: proof that pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.marker), "unpickled"))  # type: ignore[return-value]


# -- artifact store ----------------------------------------------------------


def test_store_round_trip_and_protocol(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    assert isinstance(store, ArtifactStore)
    stored = store.save({"w": [1.5, 2.5]}, model="team/asr:v2", version="7")
    path = store.path_for("team/asr:v2", "7")
    assert path.parent.parent == store.root and path.exists()
    assert stored.sha256 == sha256_hex(path.read_bytes())
    assert store.load(stored.uri, stored.sha256) == {"w": [1.5, 2.5]}
    assert not list(path.parent.glob(".tmp-*"))


def test_tampered_artifact_is_refused_before_unpickling(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    stored = store.save({"w": 1}, model="m", version="1")
    marker = tmp_path / "pwned"
    Path(store.path_for("m", "1")).write_bytes(pickle.dumps(_Booby(str(marker))))
    with pytest.raises(ChecksumMismatch) as info:
        store.load(stored.uri, stored.sha256)
    assert info.value.expected == stored.sha256 and info.value.uri == stored.uri
    assert not marker.exists()
    assert isinstance(info.value, ValueError)


def test_a_file_outside_the_store_is_refused_even_with_the_right_digest(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    marker = tmp_path / "pwned"
    outside = tmp_path / "evil.pkl"
    outside.write_bytes(pickle.dumps(_Booby(str(marker))))
    digest = sha256_hex(outside.read_bytes())
    for uri in [
        outside.as_uri(),
        (store.root / ".." / "evil.pkl").as_uri(),
        f"{store.root.as_uri()}/%2E%2E/evil.pkl",
        str(outside),
        "http://example.com/evil.pkl",
        f"file://otherhost{outside}",
    ]:
        with pytest.raises(ArtifactOutsideStore):
            store.load(uri, digest)
    assert not marker.exists()


def test_a_symlink_out_of_the_store_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    outside = tmp_path / "evil.pkl"
    outside.write_bytes(pickle.dumps({"x": 1}))
    (store.root / "m").mkdir()
    link = store.root / "m" / "1.pkl"
    os.symlink(outside, link)
    with pytest.raises(ArtifactOutsideStore):
        store.load(link.as_uri(), sha256_hex(outside.read_bytes()))


def test_missing_file_and_missing_digest_are_errors(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    stored = store.save(1, model="m", version="1")
    with pytest.raises(ArtifactError):
        store.load(stored.uri, None)  # type: ignore[arg-type]
    with pytest.raises(ArtifactError):
        store.load(stored.uri, "ABC")
    store.path_for("m", "1").unlink()
    with pytest.raises(ArtifactError, match="cannot read"):
        store.load(stored.uri, stored.sha256)


def test_a_name_cannot_escape_the_store(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    assert store.path_for("a/../../b", "..x").resolve().is_relative_to(store.root)
    with pytest.raises(ArtifactError):
        store.save(1, model="..", version="1")


# -- registry ----------------------------------------------------------------


def _v(version: str, status: str, model: str = "asr", **kw: object) -> ModelVersion:
    return ModelVersion(model=model, version=version, status=status, created_at=T0 + timedelta(minutes=int(version)), **kw)  # type: ignore[arg-type]


def test_registry_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_FILENAME
    registry = ModelRegistry(path)
    registry.record([_v("1", "promoted")])
    registry.record([_v("2", "candidate", parent_version="1", trigger_id="t-1", alert_ids=["a-1"]), _v("2", "rejected", parent_version="1", trigger_id="t-1", alert_ids=["a-1"], reason="worse")], handled_trigger="t-1")
    registry.record([_v("1", "promoted", model="fraud")])

    reopened = ModelRegistry(path)
    assert reopened.models() == ["asr", "fraud"]
    assert [(v.version, v.status) for v in reopened.versions("asr")] == [("1", "promoted"), ("2", "rejected")]
    assert [r.status for r in reopened.history("asr")] == ["promoted", "candidate", "rejected"]
    assert reopened.get("asr", "2") == registry.get("asr", "2")
    assert reopened.get("asr", "2").alert_ids == ["a-1"]
    assert reopened.current("asr") == _v("1", "promoted")
    assert reopened.is_trigger_handled("t-1") and not reopened.is_trigger_handled("t-2")
    assert reopened.next_version("asr") == "3" and reopened.next_version("new") == "1"
    with pytest.raises(UnknownVersion):
        reopened.get("asr", "9")


def test_rollback_walks_back_through_promotions(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / REGISTRY_FILENAME)
    with pytest.raises(RollbackUnavailable):
        registry.rollback("asr", now=T0)
    for v in ("1", "2", "3"):
        registry.record([_v(v, "promoted")])
    registry.record([_v("4", "rejected")])
    assert registry.current("asr").version == "3"  # type: ignore[union-attr]

    first = registry.rollback("asr", now=T0, reason="bad outputs")
    assert [(r.version, r.status) for r in first] == [("3", "rolled_back"), ("2", "promoted")]
    assert "bad outputs" in first[0].reason and first[0].created_at == T0
    assert registry.current("asr").version == "2"  # type: ignore[union-attr]

    second = registry.rollback("asr", now=T0)
    assert [(r.version, r.status) for r in second] == [("2", "rolled_back"), ("1", "promoted")]
    with pytest.raises(RollbackUnavailable):
        registry.rollback("asr", now=T0)
    assert ModelRegistry(registry.path).current("asr").version == "1"  # type: ignore[union-attr]


def test_another_process_sees_appends_after_refresh(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_FILENAME
    service, cli = ModelRegistry(path), ModelRegistry(path)
    service.record([_v("1", "promoted"), _v("2", "promoted")])
    cli.refresh()
    cli.rollback("asr", now=T0)
    assert service.current("asr").version == "2"  # type: ignore[union-attr]
    service.refresh()
    assert service.current("asr").version == "1"  # type: ignore[union-attr]


def test_a_torn_final_line_is_dropped_and_the_journal_stays_usable(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_FILENAME
    ModelRegistry(path).record([_v("1", "promoted")])
    with path.open("ab") as f:
        f.write(b'{"type": "version", "record": {"model": "asr", "vers')
    registry = ModelRegistry(path)
    assert [v.version for v in registry.versions("asr")] == ["1"]
    registry.record([_v("2", "promoted")], handled_trigger="t-9")
    reopened = ModelRegistry(path)
    assert reopened.current("asr").version == "2" and reopened.is_trigger_handled("t-9")  # type: ignore[union-attr]


def test_a_corrupt_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_FILENAME
    ModelRegistry(path).record([_v("1", "promoted")])
    with path.open("ab") as f:
        f.write(b"not json\n")
    with pytest.raises(RegistryError, match="corrupt"):
        ModelRegistry(path)
