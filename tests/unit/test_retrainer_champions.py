"""The Retrainer's champions: bootstrap, decayed streams, lineage, idempotency, restart, memory bound."""

from __future__ import annotations

import importlib.metadata
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from retrainer import (
    REGISTRY_FILENAME,
    LearnerSpec,
    LocalArtifactStore,
    ModelRegistry,
    OnlineModel,
    Retrainer,
    UnknownModel,
)
from schemas.events import LabelledExample, ModelVersion, OutcomeEvent, PredictionEvent, RetrainTrigger

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CHANGE = 1500  # index of the first example after the concept changes


def _at(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def _stream(model: str, n: int, *, change_at: int | None = CHANGE, regression: bool = False, seed: int = 0) -> Iterator[LabelledExample]:
    """Three features and a segment; before ``change_at`` the label follows one rule, after it another."""
    rng = random.Random(seed)
    for i in range(n):
        a, b, c = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1)
        segment = rng.choice(["en-GB", "en-US"])
        after = change_at is not None and i >= change_at
        if regression:
            actual: float | bool = (-3 * a + 1.0) if after else (3 * a + b)
            actual += rng.gauss(0, 0.1)
        else:
            actual = (b - a > 0) if after else (a + 0.5 * c > 0)
        features = {"a": a, "b": b, "c": c, "segment": segment, "flag": rng.random() < 0.5, "missing": None}
        pid = f"{model}-{i}"
        yield LabelledExample(
            prediction=PredictionEvent(prediction_id=pid, model=model, model_version="1", event_time=_at(i), features=features, prediction=0),
            outcome=OutcomeEvent(prediction_id=pid, event_time=_at(i) + timedelta(milliseconds=500), actual=actual),
        )


def _trigger(model: str, trigger_id: str = "t-1", data_from: int = CHANGE, at: int = 2000) -> RetrainTrigger:
    return RetrainTrigger(
        trigger_id=trigger_id, model=model, reason="performance_decay", alert_ids=["alert-9"], data_from=_at(data_from), event_time=_at(at)
    )


def _open(root: Path, specs: dict[str, LearnerSpec], **kw: object) -> Retrainer:
    return Retrainer(specs, LocalArtifactStore(root), ModelRegistry(root / REGISTRY_FILENAME), **kw)  # type: ignore[arg-type]


def _feed(retrainer: Retrainer, examples: Iterator[LabelledExample]) -> list[ModelVersion]:
    published: list[ModelVersion] = []
    for example in examples:
        published += retrainer.learn(example)
    return published


SPEC = LearnerSpec(holdout_size=150, min_training_examples=200, promotion_margin=0.05)


def test_bootstrap_registers_version_1_once(tmp_path: Path) -> None:
    retrainer = _open(tmp_path, {"asr": SPEC})
    published = _feed(retrainer, _stream("asr", 600))
    assert [(v.version, v.status) for v in published] == [("1", "promoted")]
    boot = published[0]
    # It fires on the example that makes the champion's 200th learnt one; 150 are held back.
    assert boot.n_examples == 200 and boot.created_at == _at(349) + timedelta(milliseconds=500)
    assert (boot.data_from, boot.data_to) == (_at(0), _at(199))
    assert boot.parent_version is None and 0.5 < boot.metrics["progressive_accuracy"] <= 1.0
    loaded = retrainer.store.load(boot.artifact_uri, boot.sha256)  # type: ignore[arg-type]
    assert isinstance(loaded, OnlineModel) and loaded.n_learned == 200
    assert retrainer.registry.current("asr") == boot
    assert retrainer.champion_version("asr") == "1"
    # the champion never learns the newest holdout_size examples
    assert retrainer.champion("asr").n_learned == 600 - SPEC.holdout_size  # type: ignore[union-attr]


# Adaptive learners (ARF, HAT, SGD) heal themselves online, so the trigger must
# come soon after the change, as a decay alert does, for the stale champion to lose.
FAST = LearnerSpec(holdout_size=100, min_training_examples=100, promotion_margin=0.05)


@pytest.mark.parametrize("kind", ["logistic_regression", "adaptive_random_forest", "hoeffding_adaptive_tree_classifier"])
def test_decayed_stream_challenger_beats_stale_champion(tmp_path: Path, kind: str) -> None:
    spec = FAST.model_copy(update={"kind": kind})
    retrainer = _open(tmp_path, {"asr": spec})
    end = CHANGE + 200
    _feed(retrainer, _stream("asr", end))
    stale = retrainer.champion("asr")
    records = retrainer.on_trigger(_trigger("asr", at=end), now=_at(end + 1))

    assert [(r.version, r.status) for r in records] == [("2", "candidate"), ("2", "promoted")]
    candidate, decision = records
    for r in records:
        assert r.parent_version == "1" and r.trigger_id == "t-1" and r.alert_ids == ["alert-9"]
        assert r.created_at == _at(end + 1)
        # trained on what came after the change and before the held-out tail
        assert (r.data_from, r.data_to, r.n_examples) == (_at(CHANGE), _at(end - 100 - 1), 100)
        assert r.artifact_uri == candidate.artifact_uri and r.sha256 == candidate.sha256
        assert json.loads(r.lineage["learner"])["kind"] == kind
        assert r.lineage["river"] == importlib.metadata.version("river")
    m = decision.metrics
    assert m["challenger_accuracy"] > m["champion_accuracy"] + spec.promotion_margin
    assert m["challenger_accuracy"] > 0.8 and m["n_holdout"] == 100.0
    assert "promoted" in decision.reason and "t-1" in candidate.reason

    assert retrainer.champion_version("asr") == "2"
    assert retrainer.registry.current("asr") == decision
    assert retrainer.registry.is_trigger_handled("t-1")
    champion = retrainer.champion("asr")
    assert champion is not stale
    loaded = retrainer.store.load(decision.artifact_uri, decision.sha256)  # type: ignore[arg-type]
    probes = [e.prediction.features for e in _stream("asr", 50, change_at=0, seed=99)]
    assert [loaded.predict(p) for p in probes] == [champion.predict(p) for p in probes]  # type: ignore[union-attr]


def test_stationary_stream_challenger_is_rejected_with_reason(tmp_path: Path) -> None:
    retrainer = _open(tmp_path, {"asr": SPEC})
    _feed(retrainer, _stream("asr", 2000, change_at=None))
    champion = retrainer.champion("asr")
    records = retrainer.on_trigger(_trigger("asr", data_from=1400), now=_at(2001))
    assert [(r.version, r.status) for r in records] == [("2", "candidate"), ("2", "rejected")]
    assert records[1].reason.startswith("rejected: challenger accuracy")
    assert "margin 0.0500" in records[1].reason
    assert retrainer.champion_version("asr") == "1" and retrainer.champion("asr") is champion
    assert retrainer.registry.current("asr").version == "1"  # type: ignore[union-attr]
    assert retrainer.registry.get("asr", "2").status == "rejected"


def test_regression_stream_promotes_on_mae(tmp_path: Path) -> None:
    spec = FAST.model_copy(update={"kind": "hoeffding_adaptive_tree_regressor", "promotion_margin": 0.1})
    retrainer = _open(tmp_path, {"price": spec})
    end = CHANGE + 250
    _feed(retrainer, _stream("price", end, regression=True))
    records = retrainer.on_trigger(_trigger("price", at=end), now=_at(end + 1))
    assert records[1].status == "promoted", records[1].reason
    m = records[1].metrics
    assert m["challenger_mae"] + 0.1 < m["champion_mae"] and m["challenger_mae"] < 0.5


def test_warm_start_is_recorded_and_still_adapts(tmp_path: Path) -> None:
    spec = FAST.model_copy(update={"warm_start": True, "kind": "adaptive_random_forest"})
    retrainer = _open(tmp_path, {"asr": spec})
    _feed(retrainer, _stream("asr", CHANGE + 200))
    n_champion = retrainer.champion("asr").n_learned  # type: ignore[union-attr]
    records = retrainer.on_trigger(_trigger("asr"), now=_at(CHANGE + 201))
    # An ARF copy replaces drifted trees by itself; a warm-started logistic
    # regression on this stream stays near the stale champion and is rejected.
    challenger = retrainer.store.load(records[0].artifact_uri, records[0].sha256)  # type: ignore[arg-type]
    assert challenger.n_learned == n_champion + records[0].n_examples
    assert records[0].metrics["warm_start"] == 1.0 and "warm-started from version 1" in records[0].reason
    assert records[1].status == "promoted", records[1].reason


def test_duplicate_trigger_is_ignored_even_after_a_restart(tmp_path: Path) -> None:
    retrainer = _open(tmp_path, {"asr": SPEC})
    _feed(retrainer, _stream("asr", 2000))
    assert len(retrainer.on_trigger(_trigger("asr"), now=_at(2001))) == 2
    assert retrainer.on_trigger(_trigger("asr"), now=_at(2002)) == []

    restarted = _open(tmp_path, {"asr": SPEC})
    _feed(restarted, _stream("asr", 2000, seed=1))
    assert restarted.on_trigger(_trigger("asr"), now=_at(2003)) == []
    assert [v.version for v in restarted.registry.versions("asr")] == ["1", "2"]


def test_restart_resumes_from_the_registered_champion(tmp_path: Path) -> None:
    retrainer = _open(tmp_path, {"asr": SPEC})
    _feed(retrainer, _stream("asr", 2000))
    decision = retrainer.on_trigger(_trigger("asr"), now=_at(2001))[1]

    restarted = _open(tmp_path, {"asr": SPEC})
    assert restarted.champion_version("asr") == "2"
    champion = restarted.champion("asr")
    assert champion is not None and champion.n_learned == decision.n_examples
    # no second bootstrap after the restart, and the next retrain's parent is 2
    assert _feed(restarted, _stream("asr", 1000, change_at=0, seed=3)) == []
    records = restarted.on_trigger(_trigger("asr", "t-2", data_from=0, at=1000), now=_at(3000))
    assert records[0].version == "3" and records[0].parent_version == "2"


def test_trigger_waits_for_data_then_poll_runs_it(tmp_path: Path) -> None:
    retrainer = _open(tmp_path, {"asr": SPEC})
    examples = list(_stream("asr", 2000))
    _feed(retrainer, iter(examples[:1700]))
    # only 1700 - 150 - 1500 = 50 learnt examples since the change
    assert retrainer.on_trigger(_trigger("asr"), now=_at(1700)) == []
    assert [t.trigger_id for t in retrainer.waiting_triggers("asr")] == ["t-1"]
    assert not retrainer.registry.is_trigger_handled("t-1")
    assert retrainer.poll(now=_at(1701)) == []
    _feed(retrainer, iter(examples[1700:1849]))
    assert retrainer.poll(now=_at(1850)) == []  # 199 of 200
    _feed(retrainer, iter(examples[1849:1850]))
    records = retrainer.poll(now=_at(1851))
    assert [r.status for r in records] == ["candidate", "promoted"] and records[0].n_examples == 200
    assert retrainer.waiting_triggers("asr") == []
    assert retrainer.poll(now=_at(1852)) == []


def test_a_trigger_before_bootstrap_waits(tmp_path: Path) -> None:
    retrainer = _open(tmp_path, {"asr": SPEC})
    _feed(retrainer, _stream("asr", 100))
    assert retrainer.on_trigger(_trigger("asr", data_from=0), now=_at(100)) == []
    assert retrainer.champion_version("asr") is None


def test_memory_is_bounded(tmp_path: Path) -> None:
    spec = LearnerSpec(holdout_size=50, min_training_examples=100, buffer_size=300)
    retrainer = _open(tmp_path, {"asr": spec})
    _feed(retrainer, _stream("asr", 2000))
    assert retrainer.n_buffered("asr") == 350
    assert retrainer.champion("asr").n_learned == 1950  # type: ignore[union-attr]
    for i in range(200):
        retrainer.on_trigger(_trigger("asr", f"t-{i}", data_from=10_000), now=_at(2001))
    assert len(retrainer.waiting_triggers("asr")) == 64


def test_unknown_model_and_default_learner(tmp_path: Path) -> None:
    example = next(_stream("other", 1))
    with pytest.raises(UnknownModel) as info:
        _open(tmp_path / "a", {"asr": SPEC}).learn(example)
    assert info.value.model == "other"
    assert _open(tmp_path / "b", {"asr": SPEC}, default_learner=SPEC).learn(example) == []


def test_rollback_restores_the_previous_champion(tmp_path: Path) -> None:
    retrainer = _open(tmp_path, {"asr": SPEC})
    _feed(retrainer, _stream("asr", 2000))
    retrainer.on_trigger(_trigger("asr"), now=_at(2001))
    records = retrainer.rollback("asr", now=_at(2002), reason="operator")
    assert [(r.version, r.status) for r in records] == [("2", "rolled_back"), ("1", "promoted")]
    assert retrainer.champion_version("asr") == "1"
    assert retrainer.champion("asr").n_learned == 200  # type: ignore[union-attr]


def test_a_rollback_by_another_process_is_followed_on_the_next_trigger(tmp_path: Path) -> None:
    retrainer = _open(tmp_path, {"asr": SPEC})
    _feed(retrainer, _stream("asr", 2000))
    retrainer.on_trigger(_trigger("asr"), now=_at(2001))
    ModelRegistry(tmp_path / REGISTRY_FILENAME).rollback("asr", now=_at(2002))  # e.g. `driftline models rollback`
    records = retrainer.on_trigger(_trigger("asr", "t-2", data_from=0), now=_at(2003))
    assert records[0].parent_version == "1"
    assert records[0].version == "3"


def test_same_stream_same_decisions(tmp_path: Path) -> None:
    def run(root: Path) -> list[tuple[str, str, dict[str, float]]]:
        retrainer = _open(root, {"asr": SPEC.model_copy(update={"kind": "adaptive_random_forest"})})
        published = _feed(retrainer, _stream("asr", 2000))
        published += retrainer.on_trigger(_trigger("asr"), now=_at(2001))
        return [(r.version, r.status, r.metrics) for r in published]

    assert run(tmp_path / "one") == run(tmp_path / "two")
