"""Every process on a secured broker: SASL_SSL with SCRAM-SHA-512, a private CA and ACLs, and nothing else.

The broker is :class:`~streams.localkafka.LocalKafka` with ``secure=True``: its one client listener is
SASL_SSL, so whatever connected in plaintext (as faust did before it took ``broker_credentials``) would fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType
from pydantic import TypeAdapter

from retrainer.config import open_store, retrainer_config
from schemas.config import parse_monitor_config
from schemas.events import Alert, ModelVersion
from streams.client import AlertSubscriber, PredictionLogger
from streams.demo import register_shipped_model
from streams.exceptions import KafkaAuthorizationError
from streams.localkafka import LocalKafka
from streams.processes import free_port, metric_sum
from streams.scenarios import LearnableSpeechScenario
from streams.secure_broker import ADMIN_USER
from streams.serving import ModelServer
from streams.settings import Settings, load_settings
from streams.topics import ensure_topics
from tests.integration.harness import play_the_app, read_to_end_when, running_worker
from tests.integration.test_retrain_loop import MODEL, MONITORS, running_retrainer

pytestmark = pytest.mark.integration

VERSIONS = TypeAdapter(ModelVersion)
LIMITED = "limited"


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    kafka = LocalKafka(data_dir=tmp_path_factory.mktemp("secure-kafka"), port=free_port(), controller_port=free_port(),
                       secure=True, extra_users=(LIMITED,))
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=timeout)


def _environment(fields: dict[str, str]) -> dict[str, str]:
    return {f"DRIFTLINE_{field.upper()}": value for field, value in fields.items()}


def test_the_speech_loop_runs_on_the_secured_listener_and_no_log_holds_the_password(
        secure_kafka: LocalKafka, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    security = secure_kafka.client_settings()
    password = security["kafka_sasl_password"]
    prefix = f"driftline-s{run}."
    created = _cli(["topics", "create"], _environment({**security, "topic_prefix": prefix, "partitions": "2",
                                                       "app_id": f"driftline-test-{run}"}))
    assert created.returncode == 0 and created.stdout.startswith("created: "), created.stderr

    scenario = LearnableSpeechScenario(n_events=3600, change_at=1200, seed=5)
    change_time = scenario.start + timedelta(seconds=scenario.change_at)
    data_dir = tmp_path / "retrainer"
    shipped = register_shipped_model(data_dir, scenario, retrainer_config(parse_monitor_config(MONITORS)).learners[MODEL])
    with running_worker(secure_kafka.bootstrap, tmp_path, MONITORS, partitions="2", topic_prefix=prefix,
                        log_level="INFO", **security) as worker, \
            running_retrainer(worker.settings, worker.settings.monitor_config, data_dir, tmp_path / "retrainer.log") as retrainer:
        client = worker.settings.confluent_config()
        assert worker.settings.kafka_security_protocol == "SASL_SSL"
        subscriber = AlertSubscriber(client, f"driftline-alerts-{run}", worker.topics, from_beginning=True)
        server = ModelServer(MODEL, open_store(data_dir), client, worker.topics).start()
        assert server.wait_for_version(lambda r: r.version == shipped.version, 30) == shipped
        logger = PredictionLogger(client, worker.topics)
        play_the_app(scenario, server, logger)
        assert logger.flush(30) == 0 and logger.stats.n_delivered == 2 * scenario.n_events
        worker.wait_for(lambda m: metric_sum(m, "driftline_events_processed_total") >= 2 * scenario.n_events, 60,
                        "all events processed")
        retrainer.wait_for("a promotion", lambda: retrainer.metric("driftline_challengers_total", outcome="promoted") >= 1, 40)
        fired = _alerts_until(subscriber, lambda alerts: any(a.status == "fired" for a in alerts), 20)
        versions = [VERSIONS.validate_json(m.value())
                    # After the promotion: its records were flushed before it was counted, so they are all there.
                    for m in read_to_end_when(worker.settings.kafka_bootstrap, worker.topics.models,
                                              lambda ms: len(ms) >= 5, 10, client_config=client)
                    if m.key() == MODEL.encode()]
        pages = [_page(worker.web_port), _page(retrainer.web_port)]
        server.stop()
        subscriber.close()

    assert any(a.kind == "performance_decay" and a.event_time >= change_time for a in fired)
    assert [v.version for v in versions if v.status == "promoted"] == ["1", "2"]
    logs = {path.name: path.read_text(errors="replace") for path in (worker.log_path, tmp_path / "retrainer.log")}
    assert all(len(text) > 1000 for text in logs.values()), "the INFO logs were written"
    assert [name for name, text in logs.items() if password in text] == []
    assert all(page and password not in page for page in pages)


def _alerts_until(subscriber: AlertSubscriber, done, timeout: float) -> list[Alert]:  # type: ignore[no-untyped-def]
    alerts: list[Alert] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(alerts):
        alert = subscriber.poll(0.5)
        if alert is not None:
            alerts.append(alert)
    return alerts


def _page(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


@pytest.mark.parametrize("command", ["worker", "retrainer"])
def test_a_wrong_password_stops_the_process_at_once_with_one_line(secure_kafka: LocalKafka, tmp_path: Path,
                                                                   command: str) -> None:
    config = tmp_path / "monitors.yaml"
    config.write_text(MONITORS)
    wrong = {**secure_kafka.client_settings(), "kafka_sasl_password": "not-the-password", "monitor_config": str(config),
             "data_dir": str(tmp_path / "worker"), "retrainer_data_dir": str(tmp_path / "retrainer")}
    started = time.monotonic()
    done = _cli([command], _environment(wrong), timeout=30)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("driftline: Kafka at ") and "refused the credentials of DRIFTLINE_KAFKA_SASL_USERNAME=driftline" in lines[0]
    assert "not-the-password" not in done.stderr + done.stdout
    assert elapsed < 15, f"{elapsed:.1f} s: a retry loop, not a start-up failure"


def test_a_user_allowed_to_produce_predictions_but_not_to_read_alerts_is_told_the_topic(
        secure_kafka: LocalKafka) -> None:
    run = uuid.uuid4().hex[:8]
    settings = load_settings(**secure_kafka.client_settings(LIMITED), topic_prefix=f"driftline-l{run}.")
    _ensure_topics_as_admin(secure_kafka, settings)
    group = f"{LIMITED}-{run}"
    _allow(secure_kafka, LIMITED, [(ResourceType.TOPIC, settings.topics.predictions, AclOperation.WRITE),
                                   (ResourceType.GROUP, group, AclOperation.READ)])
    scenario = LearnableSpeechScenario(n_events=10, change_at=10**9, seed=1)
    logger = PredictionLogger(settings.confluent_config(), settings.topics)
    for u in scenario.utterances():
        assert logger.log_prediction(scenario.prediction(u, "yes", "1"))
    assert logger.flush(20) == 0 and logger.stats.n_delivered == 10

    subscriber = AlertSubscriber(settings.confluent_config(), group, settings.topics, from_beginning=True)
    try:
        with pytest.raises(KafkaAuthorizationError) as refused:
            _alerts_until(subscriber, lambda _alerts: False, 15)
    finally:
        subscriber.close()
    assert refused.value.resource == settings.topics.alerts
    assert settings.topics.alerts in str(refused.value)


def _admin(kafka: LocalKafka) -> AdminClient:
    return AdminClient(load_settings(**kafka.client_settings(ADMIN_USER)).confluent_config())


def _ensure_topics_as_admin(kafka: LocalKafka, settings: Settings) -> None:
    ensure_topics(load_settings(**kafka.client_settings(ADMIN_USER), topic_prefix=settings.topic_prefix))


def _allow(kafka: LocalKafka, user: str, grants: list[tuple[ResourceType, str, AclOperation]]) -> None:
    bindings = [AclBinding(kind, name, ResourcePatternType.LITERAL, f"User:{user}", "*", operation,
                           AclPermissionType.ALLOW) for kind, name, operation in grants]
    admin = _admin(kafka)  # held until the futures are done: a collected client cancels them
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result()
    # The broker's authorizer learns of new ACLs from the metadata log a moment after they are committed; it
    # also answers DescribeAcls, so once it lists them it enforces them.
    user_filter = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}", None,
                                   AclOperation.ANY, AclPermissionType.ANY)
    deadline = time.monotonic() + 10
    while len(admin.describe_acls(user_filter, request_timeout=10).result()) < len(bindings):
        assert time.monotonic() < deadline, "the broker never listed the new ACLs"
        time.sleep(0.1)
