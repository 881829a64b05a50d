"""Process settings: defaults, DRIFTLINE_ environment variables, and errors naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.exceptions import ConfigError
from streams.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)


def _fields(exc: ConfigError) -> list[str]:
    return [field for field, _ in exc.problems]


def test_defaults() -> None:
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.monitor_config == Path("monitors.yaml")
    assert s.confluent_config() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA_BOOTSTRAP", "broker:9093")
    monkeypatch.setenv("DRIFTLINE_PARTITIONS", "12")
    monkeypatch.setenv("DRIFTLINE_JOIN_TTL_SECONDS", "90.5")
    s = load_settings()
    assert (s.kafka_bootstrap, s.partitions, s.join_ttl_seconds) == ("broker:9093", 12, 90.5)
    # The constructor wins over the environment.
    assert load_settings(partitions=3).partitions == 3


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"partitions": 0}, "DRIFTLINE_PARTITIONS"),
        ({"web_port": 70000}, "DRIFTLINE_WEB_PORT"),
        ({"join_ttl_seconds": 0}, "DRIFTLINE_JOIN_TTL_SECONDS"),
        ({"max_event_bytes": 10}, "DRIFTLINE_MAX_EVENT_BYTES"),
        ({"batch_seconds": 61}, "DRIFTLINE_BATCH_SECONDS"),
        ({"log_level": "LOUD"}, "DRIFTLINE_LOG_LEVEL"),
        ({"worker_role": "both"}, "DRIFTLINE_WORKER_ROLE"),
        ({"kafka_security_protocol": "TLS"}, "DRIFTLINE_KAFKA_SECURITY_PROTOCOL"),
        ({"topic_prefix": "bad prefix!"}, "DRIFTLINE_TOPIC_PREFIX"),
        ({"app_id": ""}, "DRIFTLINE_APP_ID"),
        ({"unknown_knob": 1}, "DRIFTLINE_UNKNOWN_KNOB"),
        ({"registry": "postgres"}, "DRIFTLINE_REGISTRY"),
        ({"registry": "mlflow"}, "DRIFTLINE_MLFLOW_TRACKING_URI"),
        ({"registry": "mlflow", "mlflow_tracking_uri": "sqlite:///mlflow.db"}, "DRIFTLINE_MLFLOW_TRACKING_URI"),
        ({"registry": "mlflow", "mlflow_tracking_uri": "http://"}, "DRIFTLINE_MLFLOW_TRACKING_URI"),
        ({"mlflow_request_retries": -1}, "DRIFTLINE_MLFLOW_REQUEST_RETRIES"),
    ],
)
def test_error_names_the_variable(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert _fields(info.value) == [field]
    assert field in str(info.value)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert _fields(info.value) == ["DRIFTLINE_BATCH_SIZE"]


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(broker_session_timeout=60, broker_request_timeout=30)
    assert _fields(info.value) == ["settings"]
    assert "broker_request_timeout" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(kafka_sasl_mechanism="PLAIN")
    assert _fields(info.value) == ["DRIFTLINE_KAFKA_SASL_MECHANISM"]
    assert "SASL_PLAINTEXT or SASL_SSL" in str(info.value)
    assert load_settings(broker_session_timeout=30, broker_request_timeout=30).broker_request_timeout == 30


def test_sasl_config_and_secret_is_not_shown() -> None:
    s = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="hunter2",
    )
    conf = s.confluent_config()
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("svc", "hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


def test_topic_prefix_reaches_topic_names() -> None:
    plain, prefixed = load_settings().topics, load_settings(topic_prefix="staging.").topics
    assert prefixed.predictions != plain.predictions
    assert prefixed.predictions.startswith("staging.") and prefixed.predictions.endswith(plain.predictions)


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError) as info:
        s.partitions = 8  # type: ignore[misc]
    assert [(e["type"], e["loc"]) for e in info.value.errors()] == [("frozen_instance", ("partitions",))]
