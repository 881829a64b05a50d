"""The MLflow registry backend on a real ``mlflow server`` (sqlite, local artifacts; one per session), no broker.

Lineage as run params/metrics/tags, versions and the champion alias, rollback, the same ``driftline models`` output
as the file registry, idempotent replays and reconcile, start-up errors, bring-your-own champions, a ModelServer
following the alias, and a tracking server that is down when a trigger comes.
"""

from __future__ import annotations

import json
import pickle
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retrainer import ChecksumMismatch, OnlineModel, Retrainer, sha256_hex
from retrainer.config import open_registry, open_store
from retrainer.mlflow_registry import CHAMPION_ALIAS, MlflowRegistry
from schemas.events import ModelVersion, RetrainTrigger
from schemas.exceptions import ConfigError
from streams.cli import app
from streams.registries import Backend, open_backend
from streams.serving import ModelServer
from streams.settings import load_settings
from tests.mlflow_server import MlflowServer
from tests.unit.test_retrainer_champions import CHANGE, FAST, _at, _feed, _stream, _trigger

# Not the unit tier: starting the server alone takes 8-20 s on this 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.mlflow]
END = CHANGE + 200


def _name() -> str:
    return f"asr-{uuid.uuid4().hex[:8]}"


def _backend(server: MlflowServer, *models: str, register: bool = True) -> Backend:
    settings = load_settings(registry="mlflow", mlflow_tracking_uri=server.uri, mlflow_request_timeout_seconds=5)
    return open_backend(settings, models, register=register, wait_seconds=10.0)


def _decay(model: str) -> RetrainTrigger:
    # Trigger ids are unique across models (the worker derives them from alert ids); the server is shared.
    return _trigger(model, trigger_id=f"{model}-t1", at=END)


def _retrain(retrainer: Retrainer, model: str) -> list[ModelVersion]:
    """Bootstrap version 1 on the stream, then answer the decay trigger: version 2, promoted."""
    assert [(v.version, v.status) for v in _feed(retrainer, _stream(model, END))] == [("1", "promoted")]
    return retrainer.on_trigger(_decay(model), now=_at(END + 1))


def _versions(backend: Backend, model: str) -> list[Any]:
    return sorted(backend.registry.client.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version))  # type: ignore[attr-defined]


def _cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run = CliRunner().invoke(app, ["models", *args])
    assert run.exit_code == 0, run.output
    return run.output


def _comparable(show_output: str) -> list[dict[str, Any]]:
    # Where the bytes live is the one thing the backends must differ in.
    return [{k: v for k, v in json.loads(line).items() if k != "artifact_uri"} for line in show_output.splitlines()]


def test_challenger_is_a_run_with_lineage_a_version_and_the_alias(mlflow_server: MlflowServer, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = _name()
    backend = _backend(mlflow_server, model)
    retrainer = Retrainer({model: FAST}, backend.store, backend.registry)
    records = _retrain(retrainer, model)
    assert [(r.version, r.status) for r in records] == [("2", "candidate"), ("2", "promoted")]

    client = backend.registry.client  # type: ignore[attr-defined]
    assert client.get_model_version_by_alias(model, CHAMPION_ALIAS).version == "2"
    v2 = client.get_model_version(model, "2")
    assert v2.tags["driftline.trigger_id"] == f"{model}-t1" and v2.run_id and v2.tags["driftline.sha256"] == records[1].sha256
    run = client.get_run(v2.run_id)
    assert run.data.params["learner.kind"] == "logistic_regression"
    assert run.data.metrics["challenger_accuracy"] == records[1].metrics["challenger_accuracy"]
    assert run.data.metrics["champion_accuracy"] == records[1].metrics["champion_accuracy"]
    tags = run.data.tags
    assert (tags["driftline.trigger_id"], tags["driftline.alert_ids"], tags["driftline.parent_version"]) == (f"{model}-t1", "alert-9", "1")
    assert tags["driftline.data_from"] == _at(CHANGE).isoformat() and tags["driftline.lib.river"] == records[1].lineage["river"]
    # The artifact is the run's, and it loads only with the recorded digest.
    loaded = backend.store.load(records[1].artifact_uri, records[1].sha256)  # type: ignore[arg-type]
    probes = [e.prediction.features for e in _stream(model, 50, change_at=0, seed=99)]
    assert isinstance(loaded, OnlineModel)
    assert [loaded.predict(p) for p in probes] == [retrainer.champion(model).predict(p) for p in probes]  # type: ignore[union-attr]
    with pytest.raises(ChecksumMismatch):
        backend.store.load(records[1].artifact_uri, "0" * 64)  # type: ignore[arg-type]

    # The same stream on the file registry: `driftline models list|show` print the same, before and after a rollback.
    file_retrainer = Retrainer({model: FAST}, open_store(tmp_path), open_registry(tmp_path))
    _retrain(file_retrainer, model)
    file_env = {"DRIFTLINE_REGISTRY": "file", "DRIFTLINE_RETRAINER_DATA_DIR": str(tmp_path)}
    mlflow_env = {"DRIFTLINE_REGISTRY": "mlflow", "DRIFTLINE_MLFLOW_TRACKING_URI": mlflow_server.uri}
    for step in ("registered", "rolled back"):
        if step == "rolled back":
            backend.registry.rollback(model, now=_at(END + 5), reason="bad outputs")
            file_retrainer.registry.rollback(model, now=_at(END + 5), reason="bad outputs")
            assert client.get_model_version_by_alias(model, CHAMPION_ALIAS).version == "1"
        assert _cli(monkeypatch, mlflow_env, "list", model) == _cli(monkeypatch, file_env, "list", model), step
        for version in ("1", "2"):
            assert _comparable(_cli(monkeypatch, mlflow_env, "show", model, version)) == \
                _comparable(_cli(monkeypatch, file_env, "show", model, version)), (step, version)


def test_a_restart_reconciles_the_alias_and_a_trigger_read_again_makes_no_second_version(mlflow_server: MlflowServer) -> None:
    model = _name()
    backend = _backend(mlflow_server, model)
    records = _retrain(Retrainer({model: FAST}, backend.store, backend.registry), model)
    client = backend.registry.client  # type: ignore[attr-defined]
    # What a crash between creating version 2 (with its decision) and moving the alias leaves.
    client.set_registered_model_alias(model, CHAMPION_ALIAS, "1")

    # A restarted retrainer (fresh registry, fresh core): reconcile moves the alias to what the records say, once.
    restarted = _backend(mlflow_server, model)
    assert restarted.registry.reconcile(_at(END + 3)) == [model]
    assert client.get_model_version_by_alias(model, CHAMPION_ALIAS).version == "2"
    assert restarted.registry.reconcile(_at(END + 4)) == []
    # It reads the trigger again: handled, by its tag.
    again = Retrainer({model: FAST}, restarted.store, restarted.registry)
    _feed(again, _stream(model, END))
    assert again.champion_version(model) == "2"
    assert again.on_trigger(_decay(model), now=_at(END + 2)) == []
    # And a write for that trigger that raced past the check returns what MLflow already holds.
    assert restarted.registry.record(records, handled_trigger=f"{model}-t1") == records
    assert [v.version for v in _versions(backend, model)] == ["1", "2"]


def test_start_up_fails_naming_an_unreachable_uri_or_a_refused_model_name(mlflow_server: MlflowServer) -> None:
    with pytest.raises(ConfigError) as unreachable:
        settings = load_settings(registry="mlflow", mlflow_tracking_uri="http://127.0.0.1:9")
        open_backend(settings, ["asr"], wait_seconds=0.5)
    assert unreachable.value.problems[0][0] == "DRIFTLINE_MLFLOW_TRACKING_URI"
    assert "http://127.0.0.1:9" in unreachable.value.problems[0][1]
    with pytest.raises(ConfigError) as refused:
        _backend(mlflow_server, "speech/asr")
    assert refused.value.problems[0][0] == "models.speech/asr" and "/" in refused.value.problems[0][1]


def _register_external(backend: Backend, model: str, obj: object, with_digest: bool = True) -> str:
    """What a person does in MLflow, outside Driftline: log a pickle as a run artifact, register it, name it champion."""
    client = backend.registry.client  # type: ignore[attr-defined]
    experiment = client.get_experiment_by_name("byo") or client.get_experiment(client.create_experiment("byo"))
    run = client.create_run(experiment.experiment_id)
    data = pickle.dumps(obj)
    path = Path(backend.store.experiment + "-" + uuid.uuid4().hex)  # type: ignore[attr-defined]
    path.mkdir()
    (path / "model.pkl").write_bytes(data)
    client.log_artifact(run.info.run_id, str(path / "model.pkl"), "model")
    (path / "model.pkl").unlink()
    path.rmdir()
    client.create_registered_model(model)
    mv = client.create_model_version(model, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                     tags={"sha256": sha256_hex(data)} if with_digest else {})
    client.set_registered_model_alias(model, CHAMPION_ALIAS, mv.version)
    return str(mv.version)


def test_an_external_river_champion_is_adopted_loaded_and_challenged(mlflow_server: MlflowServer,
                                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from river import linear_model

    monkeypatch.chdir(tmp_path)
    model = _name()
    trained = linear_model.LogisticRegression()
    for e in _stream(model, 300):
        trained.learn_one({k: float(v) for k, v in e.prediction.features.items() if isinstance(v, float)}, bool(e.outcome.actual))
    version = _register_external(_backend(mlflow_server, model, register=False), model, trained)
    backend = _backend(mlflow_server, model)
    assert backend.registry.reconcile(_at(0)) == [model]
    current = backend.registry.current(model)
    assert current is not None and current.version == version and current.lineage["origin"] == "external"
    retrainer = Retrainer({model: FAST}, backend.store, backend.registry)
    assert retrainer.triggers_only(model) is None and retrainer.champion_version(model) == version
    assert retrainer.champion(model).pipeline.__class__ is linear_model.LogisticRegression  # type: ignore[union-attr]
    # It learns online, is challenged, and the challenger becomes version 2 of the same registered model.
    _feed(retrainer, _stream(model, END))
    records = retrainer.on_trigger(_decay(model), now=_at(END + 1))
    assert [(r.version, r.parent_version) for r in records] == [("2", version), ("2", version)]


@pytest.mark.parametrize("with_digest", [True, False], ids=["not-river", "no-digest"])
def test_an_external_champion_it_cannot_load_is_monitored_with_triggers_only(
        mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, with_digest: bool) -> None:
    monkeypatch.chdir(tmp_path)
    model = _name()
    _register_external(_backend(mlflow_server, model, register=False), model, {"sklearn": "not a river model"},
                       with_digest=with_digest)
    backend = _backend(mlflow_server, model)
    backend.registry.reconcile(_at(0))
    retrainer = Retrainer({model: FAST}, backend.store, backend.registry)
    reason = retrainer.triggers_only(model)
    assert reason is not None and ("river" in reason or "sha256" in reason), reason
    # No bootstrap over the person's model, no challenger, nothing registered.
    assert _feed(retrainer, _stream(model, END)) == []
    assert retrainer.on_trigger(_decay(model), now=_at(END + 1)) == []
    assert [v.version for v in _versions(backend, model)] == ["1"]


def test_a_model_server_following_the_alias_hot_swaps_and_follows_a_rollback(mlflow_server: MlflowServer) -> None:
    model = _name()
    backend = _backend(mlflow_server, model)
    retrainer = Retrainer({model: FAST}, backend.store, backend.registry)
    _feed(retrainer, _stream(model, END))
    swaps: list[tuple[str | None, str]] = []
    server = ModelServer.following_mlflow(model, backend.registry, backend.store, poll_seconds=0.1,
                                          on_swap=lambda old, new: swaps.append((old, new.version))).start(wait_seconds=10)
    try:
        assert server.wait_for_version(lambda r: r.version == "1", timeout=10) is not None
        retrainer.on_trigger(_decay(model), now=_at(END + 1))
        assert server.wait_for_version(lambda r: r.version == "2", timeout=10) is not None
        probe = next(_stream(model, 1, seed=5)).prediction.features
        assert server.predict(probe).version == "2"
        backend.registry.rollback(model, now=_at(END + 2), reason="bad outputs")
        assert server.wait_for_version(lambda r: r.version == "1", timeout=10) is not None
        assert swaps == [(None, "1"), ("1", "2"), ("2", "1")] and server.n_refused == 0
    finally:
        server.stop()


def test_tracking_server_down_at_trigger_time_the_trigger_waits_and_registers_once_when_back(
        mlflow_server: MlflowServer) -> None:
    model = _name()
    backend = _backend(mlflow_server, model)
    assert isinstance(backend.registry, MlflowRegistry)
    retrainer = Retrainer({model: FAST}, backend.store, backend.registry)
    _feed(retrainer, _stream(model, END))
    mlflow_server.stop(signal.SIGKILL)
    try:
        assert retrainer.on_trigger(_decay(model), now=_at(END + 1)) == []
        assert [t.trigger_id for t in retrainer.waiting_triggers(model)] == [f"{model}-t1"]
        learnt = retrainer.champion(model).n_learned  # type: ignore[union-attr]
        _feed(retrainer, _stream(model, END + 50, seed=0))  # it keeps learning meanwhile
        assert retrainer.champion(model).n_learned == learnt + END + 50  # type: ignore[union-attr]
        assert retrainer.poll(_at(END + 2)) == []
    finally:
        mlflow_server.start()
    records = retrainer.poll(_at(END + 3))
    assert [(r.version, r.status, r.trigger_id) for r in records] == [("2", "candidate", f"{model}-t1"), ("2", "promoted", f"{model}-t1")]
    assert retrainer.poll(_at(END + 4)) == [] and retrainer.waiting_triggers(model) == []
    assert [(v.version, v.tags.get("driftline.trigger_id")) for v in _versions(backend, model)] == [("1", None), ("2", f"{model}-t1")]
