"""A crash after alerts are published and before the checkpoint that covers them: each alert id goes out once."""

from __future__ import annotations

import pytest
import yaml

from detectors.monitors.alert_replay import AlertReplayGuard, read_back_starts
from detectors.monitors.checkpoint import Checkpoint, Checkpointer, decode_checkpoint, encode_checkpoint
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.signed_state import StateSigner
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.events import Alert, LabelledExample
from streams.scenarios import SpeechScenario
from tests.speech_monitors import SPEECH_MONITORS

CONFIG = MonitorConfig.model_validate(yaml.safe_load(SPEECH_MONITORS))
MODEL = "speech-asr"
SIGNER = StateSigner(b"a test key of 32 bytes, no more.")
CHECKPOINT_END = 40  # where the alert partition ended when the checkpoint was written


def _messages() -> list[list[LabelledExample]]:
    """40 messages of 100 examples; an uninterrupted monitor fires at messages 21 (GLR) and 23 (threshold)."""
    pairs = SpeechScenario(n_events=4000, change_at=2000, seed=3).events()
    examples = [LabelledExample(prediction=p, outcome=o) for p, o in pairs]
    return [examples[i:i + 100] for i in range(0, len(examples), 100)]


def _run(monitors: MonitorSet, cp: Checkpointer, messages: list[list[LabelledExample]], first: int,
         last: int) -> list[Alert]:
    alerts = []
    for offset in range(first, last):
        if cp.arrive(MODEL, 0, offset, len(messages[offset])):
            batch = [e for e in messages[offset] if cp.admit(MODEL, offset, "l:" + e.prediction.prediction_id)]
            alerts += monitors.observe(batch).alerts
    return alerts


@pytest.mark.parametrize(("crash_after", "n_published_since"), [(22, 1), (30, 2)], ids=["one-alert", "both-alerts"])
def test_alerts_published_after_the_checkpoint_are_not_sent_again_by_the_replay(crash_after: int,
                                                                                n_published_since: int) -> None:
    messages = _messages()
    straight = MonitorSet(CONFIG, build_detector)
    expected = _run(straight, Checkpointer(10, 5000), messages, 0, len(messages))
    assert [(a.status, a.detector) for a in expected] == [("fired", "bernoulli_glr"), ("fired", "threshold")]

    first, cp = MonitorSet(CONFIG, build_detector), Checkpointer(10, 5000)
    assert _run(first, cp, messages, 0, 20) == []
    [live] = cp.snapshot(first, now=0.0)
    live.alerts_end = CHECKPOINT_END
    snap = decode_checkpoint(encode_checkpoint(live, SIGNER), SIGNER, MODEL.encode())  # as written, before going on
    assert isinstance(snap, Checkpoint) and snap.alerts_end == CHECKPOINT_END
    # Published and acked after that checkpoint, then the kill: on the partition, before them an older alert of
    # the model's (below the checkpoint's end) and between them another model's.
    sent = _run(first, cp, messages, 20, crash_after)
    assert len(sent) == n_published_since
    topic = [(CHECKPOINT_END - 1, MODEL, "fired-before-the-checkpoint")]
    topic += [(CHECKPOINT_END + 2 * i, MODEL, a.alert_id) for i, a in enumerate(sent)]
    topic += [(CHECKPOINT_END + 2 * i + 1, "another-model", a.alert_id + "x") for i, a in enumerate(sent)]

    second, cp2, guard = MonitorSet(CONFIG, build_detector), Checkpointer(10, 5000), AlertReplayGuard()
    second.install(MODEL, snap.monitor, snap.segments, snap.data)
    cp2.restore(snap)
    guard.remember_published(sorted(topic), {MODEL: snap.alerts_end})
    assert guard.published_after_checkpoint(MODEL) == sorted(a.alert_id for a in sent)
    rederived = _run(second, cp2, messages, 18, len(messages))  # from a committed offset behind the checkpoint
    resent = guard.unsent(rederived)

    assert [a.alert_id for a in rederived] == [a.alert_id for a in expected], "the replay decides them all again"
    assert [a.alert_id for a in sent + resent] == [a.alert_id for a in expected], "each id published once"
    assert guard.n_suppressed == n_published_since and guard.published_after_checkpoint(MODEL) == []
    assert guard.unsent(rederived) == rederived, "an id suppresses one re-derived alert, not every later one"


def test_alerts_published_before_the_first_checkpoint_are_not_sent_again_by_the_replay() -> None:
    """The crash comes before the model's first checkpoint: nothing to restore, the replay starts at its first
    message, and every alert of the model's on the partition is read back (from offset 0)."""
    messages = _messages()
    first, cp = MonitorSet(CONFIG, build_detector), Checkpointer(10, 5000)
    sent = _run(first, cp, messages, 0, 22)
    assert [a.detector for a in sent] == ["bernoulli_glr"]
    topic = [(0, "another-model", "x"), (1, MODEL, sent[0].alert_id)]

    second, cp2, guard = MonitorSet(CONFIG, build_detector), Checkpointer(10, 5000), AlertReplayGuard()
    starts = read_back_starts([MODEL], {})
    assert starts == {MODEL: 0}
    guard.remember_published(topic, starts)
    rederived = _run(second, cp2, messages, 0, len(messages))
    resent = guard.unsent(rederived)
    assert [a.alert_id for a in rederived][:1] == [sent[0].alert_id], "the replay decides it again"
    assert [a.alert_id for a in sent + resent] == [a.alert_id for a in rederived], "each id published once"
    assert guard.n_suppressed == 1


def test_the_known_end_of_a_partition_only_grows() -> None:
    guard = AlertReplayGuard()
    assert guard.end_of(3) is None
    guard.note_end(3, 17)  # a watermark read at start-up
    guard.note_end(3, 9)  # an ack older than what was read
    guard.note_end(3, 18)  # one past the offset of an alert just acked
    assert guard.end_of(3) == 18 and guard.end_of(0) is None


def test_a_model_restored_again_replaces_what_it_remembered() -> None:
    guard = AlertReplayGuard()
    guard.remember_published([(5, MODEL, "a"), (6, MODEL, "b")], {MODEL: 5})
    guard.remember_published([(6, MODEL, "b")], {MODEL: 6, "other": 0})
    assert guard.published_after_checkpoint(MODEL) == ["b"] and guard.published_after_checkpoint("other") == []
