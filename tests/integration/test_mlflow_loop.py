"""The retrain loop on the real broker with the MLflow registry (a real ``mlflow server``), no mocks.

The retrainer runs as a subprocess with ``DRIFTLINE_REGISTRY=mlflow``; the test plays the worker (labelled speech
examples in batches, then a decay trigger) as tests/integration/test_retrain_loop.py does.  v2 must land in MLflow
with its lineage, the champion alias must move and a ModelServer following it must hot-swap; a CLI rollback moves
the alias back; and a retrainer killed with SIGKILL between its MLflow write and its topic write is restarted
without a second version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from retrainer.mlflow_registry import CHAMPION_ALIAS
from schemas.events import LabelledExample, RetrainTrigger
from streams.registries import Backend, open_backend
from streams.scenarios import LearnableSpeechScenario
from streams.serving import ModelServer
from streams.settings import Settings
from tests.integration.harness import read_to_end
from tests.integration.test_retrain_loop import (MODEL, VERSIONS, _fresh_settings, _labelled, _play_worker, _versions,
                                              running_retrainer)
from tests.mlflow_server import MlflowServer

pytestmark = [pytest.mark.integration, pytest.mark.mlflow]

# The retrainer with a SIGKILL at the one point that matters: MLflow holds the decision, the topic does not yet.
CRASH_BEFORE_THE_TOPIC = """
import os, signal, sys
import streams.retrainer_app as app
publish = app.RetrainerService._publish
def crash_before_the_topic(self, records):
    if any(r.status == "promoted" and r.trigger_id for r in records):
        os.kill(os.getpid(), signal.SIGKILL)
    publish(self, records)
app.RetrainerService._publish = crash_before_the_topic
sys.argv = ["driftline", "retrainer"]
from streams.cli import main
main()
"""


def _mlflow_env(server: MlflowServer, settings: Settings) -> dict[str, str]:
    # Each test its own experiment and model name (see _own_model): tests share the server only.
    return {"DRIFTLINE_REGISTRY": "mlflow", "DRIFTLINE_MLFLOW_TRACKING_URI": server.uri,
            "DRIFTLINE_MLFLOW_EXPERIMENT": settings.app_id, "DRIFTLINE_STARTUP_WAIT_SECONDS": "30"}


def _backend(settings: Settings, server: MlflowServer) -> Backend:
    return open_backend(settings.model_copy(update={"registry": "mlflow", "mlflow_tracking_uri": server.uri}))


def _scenario_and_trigger(settings: Settings) -> tuple[LearnableSpeechScenario, RetrainTrigger]:
    scenario = LearnableSpeechScenario(n_events=2000, change_at=1000, seed=9)
    trigger = RetrainTrigger(trigger_id=f"decay-{settings.app_id}", model=MODEL, reason="performance_decay", alert_ids=["a-1"],
                             data_from=scenario.start + timedelta(seconds=scenario.change_at),
                             event_time=scenario.start + timedelta(seconds=1050))
    return scenario, trigger


def _own_model(settings: Settings, config: Path, scenario: LearnableSpeechScenario,
               trigger: RetrainTrigger) -> tuple[str, list[LabelledExample], RetrainTrigger]:
    """The speech model under a name of this test's own (the mlflow server is shared by the session)."""
    model = f"{MODEL}-{settings.app_id[-10:]}"
    config.write_text(config.read_text().replace(MODEL, model))
    examples = [e.model_copy(update={"prediction": e.prediction.model_copy(update={"model": model})}) for e in _labelled(scenario)]
    return model, examples, trigger.model_copy(update={"model": model})


def test_v2_lands_in_mlflow_the_alias_moves_a_follower_swaps_and_a_rollback_moves_it_back(
        kafka_bootstrap: str, tmp_path: Path, mlflow_server: MlflowServer) -> None:
    settings, config = _fresh_settings(kafka_bootstrap, tmp_path)
    env = _mlflow_env(mlflow_server, settings)
    model, examples, trigger = _own_model(settings, config, *_scenario_and_trigger(settings))
    with running_retrainer(settings, config, tmp_path / "data", tmp_path / "retrainer.log", extra_env=env) as retrainer:
        backend = _backend(settings, mlflow_server)
        server = ModelServer.following_mlflow(model, backend.registry, backend.store, poll_seconds=0.2).start()
        _play_worker(settings, iter(examples), trigger, model=model)
        retrainer.wait_for("a promotion", lambda: retrainer.metric("driftline_challengers_total", outcome="promoted") >= 1, 60)
        assert server.wait_for_version(lambda r: r.version == "2", 15) is not None, "the follower hot-swapped to v2"

        client = backend.registry.client  # type: ignore[attr-defined]
        assert client.get_model_version_by_alias(model, CHAMPION_ALIAS).version == "2"
        v2 = client.get_model_version(model, "2")
        run = client.get_run(v2.run_id)
        assert run.data.tags["driftline.trigger_id"] == trigger.trigger_id and run.data.tags["driftline.alert_ids"] == "a-1"
        assert run.data.tags["driftline.parent_version"] == "1" and run.data.tags["driftline.lib.river"]
        assert run.data.tags["driftline.data_from"] >= trigger.data_from.isoformat()
        assert run.data.metrics["challenger_accuracy"] > run.data.metrics["champion_accuracy"]
        assert run.data.params["learner.kind"] == "logistic_regression"
        current = [v for k, v in _versions(kafka_bootstrap, settings, 5) if k == model.encode()]
        assert [v.version for v in current] == ["1", "2"], "the topic announces what MLflow holds"

        # An operator rolls back with the CLI on the MLflow backend: the alias, the follower and the topic follow.
        cli_env = {**os.environ, **env, "DRIFTLINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "DRIFTLINE_TOPIC_PREFIX": settings.topic_prefix}
        done = subprocess.run([sys.executable, "-m", "streams.cli", "models", "rollback", model, "--reason", "test"],
                              env=cli_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert client.get_model_version_by_alias(model, CHAMPION_ALIAS).version == "1"
        assert server.wait_for_version(lambda r: r.version == "1", 15) is not None, "the follower swapped back"
        server.stop()
        assert server.n_refused == 0
    current = [v for k, v in _versions(kafka_bootstrap, settings, 8) if k == model.encode()]
    assert (current[-1].version, current[-1].status) == ("1", "promoted")


def test_kill_9_between_the_mlflow_write_and_the_topic_write_then_a_restart_makes_no_second_version(
        kafka_bootstrap: str, tmp_path: Path, mlflow_server: MlflowServer) -> None:
    settings, config = _fresh_settings(kafka_bootstrap, tmp_path)
    env = _mlflow_env(mlflow_server, settings)
    model, examples, trigger = _own_model(settings, config, *_scenario_and_trigger(settings))
    with running_retrainer(settings, config, tmp_path / "data", tmp_path / "crashed.log", extra_env=env,
                           python_code=CRASH_BEFORE_THE_TOPIC, killed_by_the_test=True) as crashed:
        _play_worker(settings, iter(examples), trigger, model=model)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and crashed.proc is not None and crashed.proc.poll() is None:
            time.sleep(0.3)
        assert crashed.proc is not None and crashed.proc.returncode == -9, crashed.log_path.read_text()[-3000:]
    client = _backend(settings, mlflow_server).registry.client  # type: ignore[attr-defined]
    assert client.get_model_version_by_alias(model, CHAMPION_ALIAS).version == "2", "MLflow was written first"
    # The retrainer is dead, so the topic's end offsets are final: read to them, however few records there are
    # (v1's bootstrap may be in the same loop turn, and so unpublished too).
    announced = [VERSIONS.validate_json(m.value()).version for m in read_to_end(kafka_bootstrap, settings.topics.models)
                 if m.key() == model.encode()]
    assert "2" not in announced, "the topic was not"

    # Restarted (in a new group, so as not to wait out the killed member's 45 s session; it reads everything again,
    # as the old group would the uncommitted trigger): the trigger is found handled by its tag; the topic is repaired.
    with running_retrainer(settings, config, tmp_path / "data", tmp_path / "restarted.log", extra_env=env,
                           group=f"{settings.app_id}-restarted") as restarted:
        restarted.wait_for("the trigger read again", lambda: restarted.metric("driftline_retrain_triggers_duplicate_total") >= 1, 30)
        time.sleep(1.0)  # a few poll cycles in which a wrongly waiting trigger would run
        assert restarted.metric("driftline_challengers_total") == 0
        assert restarted.metric("driftline_model_version_info", model=model, version="2") == 1
    versions = client.search_model_versions(f"name = '{model}'")
    assert sorted(v.version for v in versions) == ["1", "2"], "no duplicate version"
    assert [v.tags.get("driftline.trigger_id") for v in versions if v.version == "2"] == [trigger.trigger_id]
    current = [v for k, v in _versions(kafka_bootstrap, settings, 4) if k == model.encode()]
    assert current[-1].version == "2", "republished from MLflow on restart"
