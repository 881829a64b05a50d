"""Checkpoints of monitor state: round trip, replay skipping, duplicate dropping, and a warm resume."""

from __future__ import annotations

import pytest
import yaml

from detectors.monitors.checkpoint import Checkpoint, Checkpointer, RecentIds, decode_checkpoint, encode_checkpoint
from detectors.monitors.monitor_set import MonitorSet
from detectors.monitors.signed_state import StateRejection, StateSigner
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.events import Alert, LabelledExample
from streams.scenarios import SpeechScenario
from tests.speech_monitors import SPEECH_MONITORS

CONFIG = MonitorConfig.model_validate(yaml.safe_load(SPEECH_MONITORS))
SIGNER = StateSigner(b"a test key of 32 bytes, no more.")


def _round_trip(snap: Checkpoint) -> Checkpoint:
    back = decode_checkpoint(encode_checkpoint(snap, SIGNER), SIGNER, snap.model.encode())
    assert isinstance(back, Checkpoint), back
    return back


def _examples(n: int = 4000, change_at: int = 2000) -> list[LabelledExample]:
    scenario = SpeechScenario(n_events=n, change_at=change_at, seed=3)
    return [LabelledExample(prediction=p, outcome=o) for p, o in scenario.events()]


def test_recent_ids_are_bounded_and_drop_repeats() -> None:
    ids = RecentIds(3, ["a", "b"])
    assert not ids.add("a") and ids.add("c") and ids.add("d")
    assert len(ids) == 3 and "a" not in ids and ids.to_list() == ["b", "c", "d"]


def test_encode_decode_round_trip_and_garbage() -> None:
    monitors = MonitorSet(CONFIG, build_detector)
    monitors.observe(_examples(300))
    blob = encode_checkpoint(Checkpoint("speech-asr", 2, 300, monitors.monitors["speech-asr"], ["x"]), SIGNER)
    back = decode_checkpoint(blob, SIGNER, b"speech-asr")
    assert isinstance(back, Checkpoint)
    assert (back.model, back.partition, back.next_offset, back.recent_ids) == ("speech-asr", 2, 300, ["x"])
    assert back.monitor.n_seen == 300 and back.monitor.spec == monitors.monitors["speech-asr"].spec
    kinds = [getattr(decode_checkpoint(bad, SIGNER, key), "kind", None) for key, bad in [
        (b"speech-asr", None), (None, blob), (b"speech-asr", b"not a checkpoint"), (b"speech-asr", blob[:20]),
        (b"other-model", blob),  # a valid record replayed under another model's key
        (b"speech-asr", SIGNER.sign(b"speech-asr", b"signed, not a checkpoint")),
    ]]
    assert kinds == ["undecodable", "undecodable", "unsigned", "bad_signature", "bad_signature", "undecodable"]
    assert decode_checkpoint(blob, StateSigner(b"another worker's key, not shared"), b"speech-asr") == \
        StateRejection("bad_signature", "signature does not match (another state key, or forged)")


def test_arrive_skips_replayed_messages_and_admit_drops_duplicate_ids() -> None:
    cp = Checkpointer(interval_seconds=10, dedupe_size=100)
    monitors = MonitorSet(CONFIG, build_detector)
    assert cp.arrive("speech-asr", 0, 0, n_items=2) and cp.arrive("speech-asr", 0, 1, n_items=1)
    assert cp.admit("speech-asr", 0, "l:p0") and cp.admit("speech-asr", 0, "l:p1")
    assert cp.next_offset("speech-asr") == (0, 1), "offset 1 still has an item waiting"
    assert cp.oldest_waiting(0) == 1 and cp.oldest_waiting(3) is None
    assert not cp.admit("speech-asr", 1, "l:p1"), "re-published duplicate"
    assert cp.n_duplicates == 1 and cp.next_offset("speech-asr") == (0, 2)
    [snap] = cp.snapshot(monitors, now=0.0)
    assert (snap.partition, snap.next_offset, snap.recent_ids) == (0, 2, ["l:p0", "l:p1"])
    assert not cp.dirty and cp.snapshot(monitors, now=1.0) == []

    fresh = Checkpointer(interval_seconds=10, dedupe_size=100)
    fresh.restore(snap)
    assert fresh.next_offset("speech-asr") == (0, 2)
    assert not fresh.arrive("speech-asr", 0, 1, 1) and fresh.n_replayed == 1
    assert fresh.arrive("speech-asr", 0, 2, 2)
    assert not fresh.admit("speech-asr", 2, "l:p0"), "a duplicate of an item before the checkpoint"
    assert fresh.admit("speech-asr", 2, "l:p4") and fresh.next_offset("speech-asr") == (0, 3)
    fresh.forget_partition(0)
    assert fresh.next_offset("speech-asr") is None and not fresh.dirty


def test_a_refused_message_is_dead_lettered_once_per_process_and_not_again_below_a_restored_checkpoint() -> None:
    cp = Checkpointer(interval_seconds=10, dedupe_size=0)  # the memory of dead letters is not the ids' one
    assert cp.first_dead_letter(0, 5) and cp.first_dead_letter(1, 5)
    cp.forget_partition(0)  # a rebalance took partition 0 away and gave it back: it is re-read from offset 5
    assert not cp.first_dead_letter(0, 5) and not cp.first_dead_letter(1, 5)
    assert cp.first_dead_letter(0, 6)

    monitors = MonitorSet(CONFIG, build_detector)
    assert cp.arrive("speech-asr", 0, 7, 1) and cp.admit("speech-asr", 7, "l:p0")
    [snap] = cp.snapshot(monitors, now=0.0)
    restarted = Checkpointer(interval_seconds=10, dedupe_size=0)  # after a crash, the memory is gone
    restarted.restore(snap)  # the state was written after offsets 5 and 6 were read, and their dead letters acked
    assert snap.next_offset == 8 and not restarted.first_dead_letter(0, 6)
    assert restarted.first_dead_letter(0, 8), "past the checkpoint: not dead-lettered before"
    assert restarted.first_dead_letter(1, 6), "another partition's checkpoint says nothing of this one"


def test_a_snapshot_of_named_models_leaves_the_others_dirty_and_the_interval_running() -> None:
    config = MonitorConfig.model_validate(yaml.safe_load(SPEECH_MONITORS.replace("speech-asr", "other")
                                                         + SPEECH_MONITORS.removeprefix("models:\n")))
    monitors = MonitorSet(config, build_detector)
    cp = Checkpointer(interval_seconds=10, dedupe_size=10)
    assert not cp.due(100.0)
    for offset, model in enumerate(("speech-asr", "other")):
        assert cp.arrive(model, 0, offset, 1) and cp.admit(model, offset, f"l:{model}")
    assert [c.model for c in cp.snapshot(monitors, now=105.0, models={"other", "absent"})] == ["other"]
    assert cp.dirty and cp.due(110.0), "speech-asr still to write; the partial snapshot did not reset the interval"
    assert [c.model for c in cp.snapshot(monitors, now=110.0)] == ["speech-asr"] and not cp.due(115.0)


def test_due_after_the_interval() -> None:
    cp = Checkpointer(interval_seconds=10, dedupe_size=1)
    assert not cp.due(100.0) and not cp.due(109.0) and cp.due(110.0)
    cp.snapshot(MonitorSet(CONFIG, build_detector), now=110.0)
    assert not cp.due(115.0)


def _alert_facts(alerts: list[Alert]) -> list[tuple[str, str, str, float]]:
    return [(a.alert_id, a.status, a.event_time.isoformat(), a.statistic) for a in alerts]


# Messages of 100 examples; the uninterrupted monitor fires at messages 21 (GLR) and 23 (threshold).
@pytest.mark.parametrize(("checkpoint_message", "n_alerts_before"), [(20, 0), (22, 1), (30, 2)],
                         ids=["before-the-alerts", "between-them", "after-both"])
def test_a_restored_monitor_alerts_exactly_as_an_uninterrupted_one(checkpoint_message: int, n_alerts_before: int) -> None:
    """Checkpoint mid-drift, replay from an earlier offset with duplicates: the same alerts, each once.

    The checkpoint is taken while half of one message is still waiting to be scored: before the first alert,
    between the two, or after both (their facts must then not come again from the replay).
    """
    examples = _examples()
    straight = MonitorSet(CONFIG, build_detector)
    expected = [a for i in range(0, len(examples), 100) for a in straight.observe(examples[i:i + 100]).alerts]
    assert [(a.status, a.detector) for a in expected] == [("fired", "bernoulli_glr"), ("fired", "threshold")]

    def run(monitors: MonitorSet, cp: Checkpointer, first_message: int, last_message: int,
            score_only: int | None = None) -> list[Alert]:
        alerts = []
        for offset in range(first_message, last_message):
            items = examples[offset * 100:(offset + 1) * 100]
            if not cp.arrive("speech-asr", 0, offset, len(items)):
                continue
            due = items if score_only is None or offset < last_message - 1 else items[:score_only]
            batch = [e for e in due if cp.admit("speech-asr", offset, "l:" + e.prediction.prediction_id)]
            alerts += monitors.observe(batch).alerts
        return alerts

    first = MonitorSet(CONFIG, build_detector)
    cp = Checkpointer(10, 5000)
    before = run(first, cp, 0, checkpoint_message + 1, score_only=50)  # the last message half scored
    [snap] = cp.snapshot(first, now=0.0)
    assert snap.next_offset == checkpoint_message
    second = MonitorSet(CONFIG, build_detector)
    restored = _round_trip(snap)
    second.install("speech-asr", restored.monitor, restored.segments, restored.data)
    cp2 = Checkpointer(10, 5000)
    cp2.restore(restored)
    after = run(second, cp2, checkpoint_message - 2, len(examples) // 100)  # the committed offset may lag
    assert cp2.n_replayed == 2 and cp2.n_duplicates == 50
    assert _alert_facts(before + after) == _alert_facts(expected)
    assert len(before) == n_alerts_before
    assert second.monitors["speech-asr"].n_seen == len(examples)


def test_segment_monitors_travel_with_their_model() -> None:
    config = MonitorConfig.model_validate(yaml.safe_load("""\
models:
  speech-asr:
    task: classification
    performance: {metric: accuracy, window: 100, threshold: 0.85, hysteresis: 0.02}
    segments: {max_segments: 4}
"""))
    examples = [e.model_copy(update={"prediction": e.prediction.model_copy(update={"segment": f"s{i % 2}"})})
                for i, e in enumerate(_examples(400))]
    monitors = MonitorSet(config, build_detector)
    monitors.observe(examples)
    cp = Checkpointer(10, 10)
    for offset, example in enumerate(examples):
        cp.arrive("speech-asr", 0, offset, 1)
        cp.admit("speech-asr", offset, example.prediction.prediction_id)
    [snap] = cp.snapshot(monitors, now=0.0)
    back = _round_trip(snap)
    assert sorted(back.segments) == ["s0", "s1"]
    assert [back.segments[s].n_seen for s in ("s0", "s1")] == [200, 200]


def test_data_monitors_travel_with_their_model_and_share_its_retrain_gate() -> None:
    config = MonitorConfig.model_validate(yaml.safe_load("""\
models:
  speech-asr:
    task: classification
    performance: {metric: accuracy, window: 100, threshold: 0.85, hysteresis: 0.02}
    features: {snr_db: {kind: numeric}}
"""))
    pairs = list(SpeechScenario(n_events=300, change_at=200, seed=3).events())
    monitors = MonitorSet(config, build_detector)
    monitors.observe_predictions([p for p, _ in pairs])
    cp = Checkpointer(10, 10)
    cp.arrive("speech-asr", 0, 0, 0)
    [snap] = cp.snapshot(monitors, now=0.0)
    back = _round_trip(snap)
    assert list(back.data) == [("1", None)] and back.data[("1", None)].n_seen == 300
    # Pickled together, the model's monitors still share one cooldown.
    assert back.data[("1", None)].gate is back.monitor.gate
    fresh = MonitorSet(config, build_detector)
    fresh.install("speech-asr", back.monitor, back.segments, back.data, back.metrics, back.n_predictions)
    assert fresh.data_monitors[("speech-asr", "1", None)].gate is fresh.monitors["speech-asr"].gate
    # The count of predictions watched goes on from the checkpoint, not from zero, after a restart or a move.
    assert back.n_predictions == 300 and fresh.n_predictions["speech-asr"] == 300


ESTIMATED_SEGMENTED = """\
models:
  speech-asr:
    task: classification
    performance: {metric: accuracy, window: 200, threshold: 0.5}
    detector: {name: bernoulli_glr, params: {warmup: 500}}
    segments: {max_segments: 4}
    estimated_performance: {threshold: 0.80, window: 300, calibration_size: 400}
"""


def _segmented(n: int) -> tuple[list, list[LabelledExample]]:
    pairs = list(SpeechScenario(n_events=n, change_at=n // 2, seed=5).events())
    examples = [LabelledExample(prediction=p.model_copy(update={"segment": f"s{i % 3}"}), outcome=o)
                for i, (p, o) in enumerate(pairs)]
    return [e.prediction for e in examples], examples


def _feed(monitors: MonitorSet, predictions: list, examples: list[LabelledExample], lo: int, hi: int) -> list:
    alerts = []
    for start in range(lo, hi, 250):
        alerts += monitors.observe_predictions(predictions[start:start + 250]).alerts
        alerts += monitors.observe(examples[start:start + 250]).alerts
    return alerts


def test_estimates_and_the_pooled_baseline_travel_with_their_model_and_resume_warm() -> None:
    config = MonitorConfig.model_validate(yaml.safe_load(ESTIMATED_SEGMENTED))
    predictions, examples = _segmented(4000)
    whole = _feed(MonitorSet(config, build_detector), predictions, examples, 0, 4000)
    first = MonitorSet(config, build_detector)
    before = _feed(first, predictions, examples, 0, 1000)
    cp = Checkpointer(10, 10)
    cp.arrive("speech-asr", 0, 0, 0)
    [snap] = cp.snapshot(first, now=0.0)
    back = _round_trip(snap)
    assert back.estimates["1"].calibrated and back.pool == (500, first.pool["speech-asr"][1])
    fresh = MonitorSet(config, build_detector)
    fresh.install("speech-asr", back.monitor, back.segments, back.data, back.metrics, back.n_predictions,
                  back.estimates, back.pool)
    after = _feed(fresh, predictions, examples, 1000, 4000)
    assert [a.alert_id for a in before + after] == [a.alert_id for a in whole]
    assert any(a.monitor == "estimated_performance" for a in whole)


def test_a_checkpoint_of_the_previous_format_is_refused_for_a_cold_start() -> None:
    monitors = MonitorSet(CONFIG, build_detector)
    blob = encode_checkpoint(Checkpoint("speech-asr", 0, 1, monitors.monitors["speech-asr"]), SIGNER)
    payload = SIGNER.verify(b"speech-asr", blob)
    assert isinstance(payload, bytes)
    older = SIGNER.sign(b"speech-asr", b"DLC1" + payload[4:])
    refused = decode_checkpoint(older, SIGNER, b"speech-asr")
    assert isinstance(refused, StateRejection) and refused.kind == "undecodable" and "older" in refused.reason
