"""Signed monitor state: a forged or altered record is refused before it is unpickled, counted and logged once."""

from __future__ import annotations

import asyncio
import logging
import pickle
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.monitors.checkpoint import Checkpoint, decode_checkpoint, encode_checkpoint
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.signed_state import StateRejection, StateSigner
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from streams.metrics import WorkerMetrics
from streams.settings import load_settings
from streams.worker.state import KEY_FILE, MonitorState, StateKeyError, state_signer
from tests.speech_monitors import SPEECH_MONITORS

SIGNER = StateSigner(b"the worker's own key, 32 bytes!!")
CONFIG = MonitorConfig.model_validate(yaml.safe_load(SPEECH_MONITORS))


class _CreatesFile:
    """Unpickling this opens ``path`` for writing: what a forged checkpoint would do in the worker."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


def _forgeries(path: Path) -> dict[str, bytes]:
    payload = b"DLC1" + zlib.compress(pickle.dumps(_CreatesFile(path)))
    genuine = SIGNER.sign(b"speech-asr", b"DLC1" + b"x" * 40)
    return {
        "bare pickle": pickle.dumps(_CreatesFile(path)),
        "the unsigned format of old": payload,
        "signed with another key": StateSigner(b"an attacker's key, of 32 bytes..").sign(b"speech-asr", payload),
        "a genuine MAC in front of other bytes": genuine[:36] + payload,
        "a genuine record with its payload altered": genuine[:-1] + b"y",
    }


def test_the_payload_is_live_when_loaded(tmp_path: Path) -> None:
    """The control: loading the forged bytes does create the file, so its absence below means they were not loaded."""
    target = tmp_path / "control"
    pickle.loads(pickle.dumps(_CreatesFile(target)))
    assert target.exists()


@pytest.mark.parametrize("forgery", list(_forgeries(Path("/unused"))))
def test_a_forged_or_altered_record_is_refused_without_being_unpickled(tmp_path: Path, forgery: str) -> None:
    target = tmp_path / "owned"
    result = decode_checkpoint(_forgeries(target)[forgery], SIGNER, b"speech-asr")
    assert isinstance(result, StateRejection) and result.kind in {"unsigned", "bad_signature"}, result
    assert not target.exists()


@settings(max_examples=300, deadline=None)
@given(key=st.one_of(st.none(), st.binary(max_size=40)), blob=st.one_of(st.none(), st.binary(max_size=300)),
       signed_prefix=st.booleans())
def test_fuzzed_state_records_are_refused_with_a_reason(key: bytes | None, blob: bytes | None,
                                                        signed_prefix: bool) -> None:
    if blob is not None and signed_prefix:
        blob = b"DLS1" + blob  # past the format tag, to reach the MAC check
    result = decode_checkpoint(blob, SIGNER, key)
    assert isinstance(result, StateRejection) and result.reason


def _state_with(records: dict[bytes, tuple[int, int, bytes]]) -> tuple[MonitorState, WorkerMetrics]:
    """A MonitorState whose table recovery read ``records`` (key -> partition, offset, value)."""
    metrics = WorkerMetrics()
    state = MonitorState(SIGNER, metrics)
    state.table = SimpleNamespace(data={k: v for k, (_, _, v) in records.items()},
                                  changelog_topic=SimpleNamespace(get_topic_name=lambda: "app-monitor-state-changelog"))
    for key, (partition, offset, _) in records.items():
        event = SimpleNamespace(key=key, message=SimpleNamespace(partition=partition, offset=offset))
        asyncio.run(state.on_changelog_event(event))
    return state, metrics


def test_a_refused_record_is_counted_and_logged_once_with_where_it_was(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "owned"
    forged = _forgeries(target)["signed with another key"]
    monitor = MonitorSet(CONFIG, build_detector).monitors["speech-asr"]
    genuine = encode_checkpoint(Checkpoint("other", 2, 5, monitor), SIGNER)
    state, metrics = _state_with({b"speech-asr": (2, 41, forged), b"fraud": (1, 7, forged), b"other": (2, 3, genuine)})
    with caplog.at_level(logging.WARNING, logger="streams.worker.state"):
        for _ in range(3):  # the partition restored again after rebalances
            assert [c.model for c in state.checkpoints(2)] == ["other"]
    assert not target.exists()
    assert metrics.registry.get_sample_value("driftline_state_rejected_total",
                                             {"state": "monitor", "reason": "bad_signature"}) == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert "app-monitor-state-changelog[2]@41" in line and "speech-asr" in line


def test_a_generated_key_is_private_and_reused(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "worker")
    signer = state_signer(settings)
    key_file = tmp_path / "worker" / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert state_signer(settings).sign(b"k", b"v") == signer.sign(b"k", b"v")
    # A configured key wins, and signs differently.
    configured = state_signer(load_settings(data_dir=tmp_path / "worker", state_key="a shared key of 32 characters.."))
    assert configured.sign(b"k", b"v") != signer.sign(b"k", b"v")
    key_file.chmod(0o644)
    with pytest.raises(StateKeyError, match="readable by others"):
        state_signer(settings)


def test_the_state_key_stays_secret() -> None:
    settings = load_settings(state_key="a shared key of 32 characters..")
    assert "a shared key" not in repr(settings) and "a shared key" not in repr(state_signer(settings))
