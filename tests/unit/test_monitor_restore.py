"""Cold starts the README promises: a checkpoint from an older Driftline, or of a model whose monitor config
changed, is not restored; the model starts cold and the worker goes on.

The monitor stage's own restore path (``MonitorService`` over a ``MonitorState`` whose table holds what
recovery read from the changelog), with no broker: recovery's records are put in the table as faust would.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import zlib
from types import SimpleNamespace
from typing import get_args

import pytest
import yaml

from detectors.monitors.checkpoint import _MAGIC as CURRENT_FORMAT_TAG  # this version's tag, whatever it is now
from detectors.monitors.checkpoint import Checkpointer, encode_checkpoint
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.signed_state import StateSigner
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.decoding import RejectionKind
from schemas.events import LabelledExample
from streams.metrics import WorkerMetrics
from streams.processes import metric_value, registry_samples
from streams.scenarios import SpeechScenario
from streams.settings import load_settings
from streams.worker.monitor import MonitorService
from streams.worker.state import MonitorState
from tests.speech_monitors import SPEECH_MONITORS

MODEL = "speech-asr"
SIGNER = StateSigner(b"a test key of 32 bytes, no more.")
N_SEEN = 300


class _OldCheckpointShape:
    """Stands for a class an older Driftline pickled and this one no longer has."""


def _config(window: int = 500) -> MonitorConfig:
    spec = yaml.safe_load(SPEECH_MONITORS)
    spec["models"][MODEL]["performance"]["window"] = window
    return MonitorConfig.model_validate(spec)


def _checkpoint_blob(config: MonitorConfig) -> bytes:
    """A signed checkpoint of ``N_SEEN`` examples, as this version writes it."""
    monitors = MonitorSet(config, build_detector)
    pairs = SpeechScenario(n_events=N_SEEN, change_at=N_SEEN, seed=3).events()
    monitors.observe([LabelledExample(prediction=p, outcome=o) for p, o in pairs])
    cp = Checkpointer(10, 10)
    cp.arrive(MODEL, 0, 0, 0)
    [snap] = cp.snapshot(monitors, now=0.0)
    return encode_checkpoint(snap, SIGNER)


def _older_format_blob() -> bytes:
    """Signed with the shared key, but in a format tag this version does not read."""
    return SIGNER.sign(MODEL.encode(), b"DLC0" + zlib.compress(pickle.dumps({"model": MODEL, "n_seen": N_SEEN})))


def _older_classes_blob() -> bytes:
    """This version's format tag over a pickle of a class that is gone (renamed or moved since)."""
    pickled = pickle.dumps(_OldCheckpointShape())
    assert b"_OldCheckpointShape" in pickled
    gone = pickled.replace(b"_OldCheckpointShape", b"_RemovedSinceV0xyz_")
    return SIGNER.sign(MODEL.encode(), CURRENT_FORMAT_TAG + zlib.compress(gone))


def _restore(blob: bytes, config: MonitorConfig) -> tuple[MonitorService, WorkerMetrics]:
    """A monitor stage whose changelog recovery read ``blob`` for the model, at partition 0, offset 7."""
    metrics = WorkerMetrics()
    state = MonitorState(SIGNER, metrics)
    state.table = SimpleNamespace(data={MODEL.encode(): blob},
                                  changelog_topic=SimpleNamespace(get_topic_name=lambda: "app-monitor-state-changelog"))
    event = SimpleNamespace(key=MODEL.encode(), message=SimpleNamespace(partition=0, offset=7))
    asyncio.run(state.on_changelog_event(event))
    service = MonitorService(load_settings(), config, metrics, outbox=None, app=None, state=state)  # type: ignore[arg-type]
    metrics.declare(service.metric_series(), get_args(RejectionKind))  # as the app does, before any event
    service._install_checkpoints(0)
    return service, metrics


def test_a_checkpoint_of_the_same_config_restores_warm() -> None:
    """The control: the same path with a current checkpoint does restore, so the cold starts below mean something."""
    service, metrics = _restore(_checkpoint_blob(_config()), _config())
    assert service.n_restored == 1 and service.monitors.monitors[MODEL].n_seen == N_SEEN
    assert service.checkpointer.next_offset(MODEL) == (0, 1), "its offsets come back with it"
    assert metric_value(registry_samples(metrics.registry), "driftline_state_rejected_total") == 0


def test_a_changed_monitor_config_starts_the_model_cold(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streams.worker.monitor"):
        service, metrics = _restore(_checkpoint_blob(_config(window=500)), _config(window=400))
    assert service.n_restored == 0 and service.monitors.monitors[MODEL].n_seen == 0
    assert service.monitors.monitors[MODEL].spec.performance.window == 400, "the new config is the one in force"
    assert service.checkpointer.next_offset(MODEL) is None, "its offsets are not taken from the old state either"
    assert [r.getMessage() for r in caplog.records] == [f"monitor config of {MODEL} changed: its checkpoint is not restored"]
    # A config change is not an attack: nothing is counted as a refused record.
    assert metric_value(registry_samples(metrics.registry), "driftline_state_rejected_total") == 0


@pytest.mark.parametrize(("blob", "reason"), [
    (_older_format_blob(), "signed, but not a checkpoint"),
    (_older_classes_blob(), "signed, but cannot be loaded: AttributeError"),
], ids=["older-format-tag", "older-classes"])
def test_a_checkpoint_of_an_older_version_starts_the_model_cold(blob: bytes, reason: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streams.worker.state"):
        service, metrics = _restore(blob, _config())
    assert service.n_restored == 0 and service.monitors.monitors[MODEL].n_seen == 0
    samples = registry_samples(metrics.registry)
    assert metric_value(samples, "driftline_state_rejected_total", state="monitor", reason="undecodable") == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert "app-monitor-state-changelog[0]@7" in line and reason in line and "starts cold" in line, line
