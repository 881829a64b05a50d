"""Checkpoints of monitor state: round trip, replay skipping, duplicate dropping, and a warm resume."""

from __future__ import annotations

import yaml

from detectors.checkpoint import Checkpoint, Checkpointer, RecentIds, decode_checkpoint, encode_checkpoint
from detectors.monitor import MonitorSet
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.events import LabelledExample
from streams.scenarios import SpeechScenario

CONFIG = MonitorConfig.model_validate(yaml.safe_load("""\
models:
  speech-asr:
    task: classification
    performance: {metric: accuracy, window: 500, threshold: 0.85, hysteresis: 0.02}
    detector: {name: bernoulli_glr, params: {false_alarm_horizon: 100000}}
    retrain: {cooldown_seconds: 3600}
"""))


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
    blob = encode_checkpoint(Checkpoint("speech-asr", 2, 300, monitors.monitors["speech-asr"], ["x"]))
    back = decode_checkpoint(blob)
    assert back is not None and (back.model, back.partition, back.next_offset, back.recent_ids) == ("speech-asr", 2, 300, ["x"])
    assert back.monitor.n_seen == 300 and back.monitor.spec == monitors.monitors["speech-asr"].spec
    assert decode_checkpoint(None) is None
    assert decode_checkpoint(b"not a checkpoint") is None
    assert decode_checkpoint(blob[:20]) is None


def test_admit_skips_replayed_offsets_and_duplicate_ids() -> None:
    cp = Checkpointer(interval_seconds=10, dedupe_size=100)
    assert cp.admit("m", 0, 0, "p0") and cp.admit("m", 0, 1, "p1")
    assert not cp.admit("m", 0, 2, "p1"), "re-published duplicate"
    assert cp.n_duplicates == 1
    monitors = MonitorSet(CONFIG, build_detector)
    [snap] = cp.snapshot({"m": monitors.monitors["speech-asr"]}, now=0.0)
    assert (snap.partition, snap.next_offset, snap.recent_ids) == (0, 3, ["p0", "p1"])
    assert not cp.dirty and cp.snapshot({"m": monitors.monitors["speech-asr"]}, now=1.0) == []

    fresh = Checkpointer(interval_seconds=10, dedupe_size=100)
    fresh.restore(snap)
    assert not fresh.admit("m", 0, 1, "p1") and not fresh.admit("m", 0, 2, "p1")
    assert fresh.n_replayed == 2
    assert not fresh.admit("m", 0, 3, "p0"), "a duplicate of an example before the checkpoint"
    assert fresh.admit("m", 0, 4, "p4") and fresh.next_offset("m") == (0, 5)
    fresh.forget_partition(0)
    assert fresh.next_offset("m") is None and not fresh.dirty


def test_due_after_the_interval() -> None:
    cp = Checkpointer(interval_seconds=10, dedupe_size=1)
    assert not cp.due(100.0) and not cp.due(109.0) and cp.due(110.0)
    cp.snapshot({}, now=110.0)
    assert not cp.due(115.0)


def test_a_restored_monitor_alerts_exactly_as_an_uninterrupted_one() -> None:
    """Checkpoint mid-drift, replay from an earlier offset with duplicates: the same alerts, each example once."""
    examples = _examples()
    straight = MonitorSet(CONFIG, build_detector)
    expected = [a.alert_id for i in range(0, len(examples), 100) for a in straight.observe(examples[i:i + 100]).alerts]
    assert expected, "the scenario must alert for this test to mean anything"

    def run(monitors: MonitorSet, cp: Checkpointer, offsets: range) -> list[str]:
        ids = []
        for start in range(offsets.start, offsets.stop, 100):
            batch = [examples[o] for o in range(start, min(start + 100, offsets.stop))
                     if cp.admit("speech-asr", 0, o, examples[o].prediction.prediction_id)]
            ids += [a.alert_id for a in monitors.observe(batch).alerts]
        return ids

    first = MonitorSet(CONFIG, build_detector)
    cp = Checkpointer(10, 5000)
    before = run(first, cp, range(0, 2050))
    [snap] = cp.snapshot(first.monitors, now=0.0)
    blob = encode_checkpoint(snap)
    run(first, cp, range(2050, 2100))  # processed, never checkpointed: lost with the process

    second = MonitorSet(CONFIG, build_detector)
    restored = decode_checkpoint(blob)
    assert restored is not None
    second.monitors["speech-asr"] = restored.monitor
    cp2 = Checkpointer(10, 5000)
    cp2.restore(restored)
    after = run(second, cp2, range(1900, len(examples)))  # the committed offset may lag the checkpoint
    assert cp2.n_replayed == 150
    assert before + after == expected
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
        cp.admit("speech-asr", 0, offset, example.prediction.prediction_id)
    [snap] = cp.snapshot(monitors.monitors, now=0.0, segments=monitors.segment_monitors)
    back = decode_checkpoint(encode_checkpoint(snap))
    assert back is not None and sorted(back.segments) == ["s0", "s1"]
    assert [back.segments[s].n_seen for s in ("s0", "s1")] == [200, 200]
