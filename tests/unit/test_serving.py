"""ModelServer's swap rules without a broker: what it serves, what it refuses, and swaps under load."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

from retrainer import LearnerSpec, LocalArtifactStore, OnlineModel
from schemas.events import ModelVersion
from streams.serving import ModelServer

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Tagged:
    """A stand-in model whose every prediction names the version it was saved as."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def predict(self, features: object) -> str:
        return f"from-{self.tag}"


def _record(store: LocalArtifactStore, version: str, status: str = "promoted", model: str = "asr", obj: object = None) -> ModelVersion:
    stored = store.save(obj if obj is not None else Tagged(version), model, version)
    return ModelVersion(model=model, version=version, status=status, created_at=T0,
                        artifact_uri=stored.uri, sha256=stored.sha256)


def _server(store: LocalArtifactStore, **kwargs: object) -> ModelServer:
    # Never started: offer() is what the consumer thread calls for each announcement.
    return ModelServer("asr", store, {"bootstrap.servers": "127.0.0.1:1"}, **kwargs)  # type: ignore[arg-type]


def test_fallback_until_a_version_is_offered_then_the_version(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    server = _server(store, fallback=lambda f: "shipped", fallback_version="0")
    assert (server.predict({}).prediction, server.predict({}).version, server.version) == ("shipped", "0", None)
    assert server.offer(_record(store, "1"))
    assert (server.predict({}).prediction, server.predict({}).version) == ("from-1", "1")


def test_only_new_promoted_announcements_of_this_model_swap(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    swaps: list[tuple[str | None, str]] = []
    server = _server(store, on_swap=lambda old, new: swaps.append((old, new.version)))
    assert server.offer(_record(store, "1"))
    assert not server.offer(_record(store, "2", status="candidate"))
    assert not server.offer(_record(store, "2", status="rejected"))
    assert not server.offer(_record(store, "9", model="other"))
    assert not server.offer(server.record)  # type: ignore[arg-type]
    assert server.offer(_record(store, "3"))
    assert swaps == [(None, "1"), ("1", "3")] and server.n_swaps == 2


def test_a_wrong_digest_or_a_foreign_file_is_refused_and_the_old_version_keeps_serving(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    server = _server(store)
    server.offer(_record(store, "1"))
    tampered = _record(store, "2")
    Path(tampered.artifact_uri.removeprefix("file://")).write_bytes(b"not what was registered")  # type: ignore[union-attr]
    assert not server.offer(tampered)
    outside = LocalArtifactStore(tmp_path / "elsewhere")
    assert not server.offer(_record(outside, "3"))
    no_artifact = ModelVersion(model="asr", version="4", status="promoted", created_at=T0)
    assert not server.offer(no_artifact)
    assert server.n_refused == 3
    assert (server.version, server.predict({}).prediction) == ("1", "from-1")


def test_predictions_during_swaps_are_never_dropped_and_always_match_their_version(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    server = _server(store)
    server.offer(_record(store, "0"))
    records = [_record(store, str(v)) for v in range(1, 21)]
    stop = threading.Event()
    mismatched: list[tuple[object, str]] = []
    counts = [0] * 2

    def predict_forever(slot: int) -> None:
        while not stop.is_set():
            served = server.predict({})
            if served.prediction != f"from-{served.version}":
                mismatched.append((served.prediction, served.version))
            counts[slot] += 1

    threads = [threading.Thread(target=predict_forever, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for record in records:
        assert server.offer(record)
    stop.set()
    for t in threads:
        t.join()
    assert mismatched == []
    assert all(n > 0 for n in counts)
    assert server.version == "20"


def test_a_real_online_model_is_served_on_raw_features(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    model = OnlineModel(LearnerSpec())
    for i in range(400):
        a = (i % 20) / 10 - 1
        model.learn_one({"a": a}, a > 0)
    server = _server(store)
    server.offer(_record(store, "1", obj=model))
    assert server.predict({"a": 0.9}).prediction is True
    assert server.predict({"a": -0.9}).prediction is False


def test_wait_for_version_times_out_and_returns_the_record(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    server = _server(store)
    assert server.wait_for_version(lambda r: True, 0.05) is None
    record = _record(store, "1")
    timer = threading.Timer(0.05, server.offer, args=(record,))
    timer.start()
    assert server.wait_for_version(lambda r: r.version == "1", 5) == record
