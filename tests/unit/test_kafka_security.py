"""The one place settings become Kafka client configs (librdkafka, faust), and the start-up errors that name the field.

No broker: certificates come from the local broker's own CA maker (openssl), and librdkafka is asked to build
clients from the configs, which loads the CA and key files without connecting.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from confluent_kafka import KafkaError, Producer

from schemas.exceptions import ConfigError
from streams.exceptions import KafkaSecurityError
from streams.secure_broker import SecureBrokerFiles
from streams.settings import load_settings
from streams.topics import AdminConnection

PASSWORD = "s3cret-sasl-pw"
KEY_PASSWORD = "s3cret-key-pw"
SASL = {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "svc", "kafka_sasl_password": PASSWORD}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA (made as the secured local broker makes its own), and a client key (encrypted) and certificate it signed."""
    files = SecureBrokerFiles(tmp_path_factory.mktemp("pki"))
    files.make_certificates("openssl")
    d = files.directory
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-newkey", "rsa:2048", "-subj", "/CN=driftline-client", "-keyout", str(d / "client.key"),
        "-passout", f"pass:{KEY_PASSWORD}", "-out", str(d / "client.csr"))
    run("x509", "-req", "-in", str(d / "client.csr"), "-CA", str(files.ca_file), "-CAkey", str(d / "ca.key"),
        "-CAcreateserial", "-days", "2", "-out", str(d / "client.crt"))
    return {"ca": files.ca_file, "cert": d / "client.crt", "key": d / "client.key"}


def _mutual_tls(pki: dict[str, Path], **overrides: object) -> dict[str, object]:
    return {**SASL, "kafka_ssl_ca_file": pki["ca"], "kafka_ssl_cert_file": pki["cert"], "kafka_ssl_key_file": pki["key"],
            "kafka_ssl_key_password": KEY_PASSWORD, **overrides}


def test_plaintext_is_the_bare_bootstrap_and_no_faust_credentials() -> None:
    access = load_settings().kafka_access
    assert access.librdkafka() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}
    assert access.faust_broker() == ["kafka://127.0.0.1:9092"] and access.faust_credentials() is None


def test_sasl_ssl_with_mutual_tls_reaches_every_librdkafka_key(pki: dict[str, Path]) -> None:
    conf = load_settings(**_mutual_tls(pki)).confluent_config()
    assert conf == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc", "sasl.password": PASSWORD, "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(pki["ca"]), "ssl.certificate.location": str(pki["cert"]),
        "ssl.key.location": str(pki["key"]), "ssl.key.password": KEY_PASSWORD,
    }
    # librdkafka reads the CA, the certificate and the (encrypted) key when a client is built: they load.
    Producer(conf).flush(0)


def test_endpoint_identification_can_be_turned_off_for_both_kinds_of_client(pki: dict[str, Path]) -> None:
    access = load_settings(**SASL, kafka_ssl_ca_file=pki["ca"], kafka_ssl_endpoint_identification=False).kafka_access
    assert access.librdkafka()["ssl.endpoint.identification.algorithm"] == "none"
    context = access.ssl_context()
    assert context is not None and not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_faust_gets_sasl_over_tls_with_the_ca_and_the_client_certificate(pki: dict[str, Path]) -> None:
    credentials = load_settings(**_mutual_tls(pki)).kafka_access.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password, credentials.mechanism.value) == ("svc", PASSWORD, "SCRAM-SHA-512")
    assert credentials.protocol.value == "SASL_SSL"
    context = credentials.ssl_context
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [dict(part[0] for part in ca["subject"])["commonName"] for ca in context.get_ca_certs()] == ["driftline-local-ca"]
    assert PASSWORD not in repr(credentials)


def test_faust_gets_tls_alone_for_ssl_and_sasl_alone_for_sasl_plaintext(pki: dict[str, Path]) -> None:
    tls = load_settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki["ca"]).kafka_access
    assert isinstance(tls.faust_credentials(), faust.SSLCredentials)
    assert "sasl.mechanism" not in tls.librdkafka()
    sasl = load_settings(**{**SASL, "kafka_security_protocol": "SASL_PLAINTEXT"}).kafka_access
    credentials = sasl.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials) and credentials.ssl_context is None
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert not any(key.startswith("ssl.") for key in sasl.librdkafka())


def test_a_wrong_key_password_fails_naming_the_settings_and_not_the_password(pki: dict[str, Path]) -> None:
    access = load_settings(**_mutual_tls(pki, kafka_ssl_key_password="wrong-key-pw")).kafka_access
    with pytest.raises(KafkaSecurityError) as info:
        access.faust_credentials()
    assert "DRIFTLINE_KAFKA_SSL_KEY_PASSWORD" in str(info.value)
    assert "wrong-key-pw" not in str(info.value) and PASSWORD not in str(info.value)


def test_a_file_that_is_no_ca_fails_naming_the_setting(tmp_path: Path) -> None:
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("hello")
    with pytest.raises(KafkaSecurityError, match="DRIFTLINE_KAFKA_SSL_CA_FILE"):
        load_settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=not_a_ca).kafka_access.ssl_context()


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"kafka_security_protocol": "SASL_SSL"},
         ["DRIFTLINE_KAFKA_SASL_MECHANISM", "DRIFTLINE_KAFKA_SASL_USERNAME", "DRIFTLINE_KAFKA_SASL_PASSWORD"]),
        ({**SASL, "kafka_sasl_mechanism": None}, ["DRIFTLINE_KAFKA_SASL_MECHANISM"]),
        ({**SASL, "kafka_sasl_password": ""}, ["DRIFTLINE_KAFKA_SASL_PASSWORD"]),
        ({**SASL, "kafka_security_protocol": "PLAINTEXT"},
         ["DRIFTLINE_KAFKA_SASL_MECHANISM", "DRIFTLINE_KAFKA_SASL_USERNAME", "DRIFTLINE_KAFKA_SASL_PASSWORD"]),
        ({**SASL, "kafka_ssl_ca_file": "/no/such/ca.pem"}, ["DRIFTLINE_KAFKA_SSL_CA_FILE"]),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_ca_file": "/etc/hostname", **{k: v for k, v in SASL.items() if k != "kafka_security_protocol"}},
         ["DRIFTLINE_KAFKA_SSL_CA_FILE"]),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "/etc/hostname"}, ["DRIFTLINE_KAFKA_SSL_KEY_FILE"]),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_key_file": "/etc/hostname"}, ["DRIFTLINE_KAFKA_SSL_CERT_FILE"]),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_key_password": KEY_PASSWORD}, ["DRIFTLINE_KAFKA_SSL_KEY_PASSWORD"]),
        ({"kafka_sasl_mechanism": "GSSAPI"}, ["DRIFTLINE_KAFKA_SASL_MECHANISM"]),
    ],
)
def test_an_incomplete_combination_fails_at_start_up_naming_each_field(overrides: dict[str, object], fields: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert [field for field, _ in info.value.problems] == fields
    for secret in (PASSWORD, KEY_PASSWORD):
        assert secret not in str(info.value) and secret not in str(info.value.__cause__)


def test_a_rejected_password_value_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**{**SASL, "kafka_sasl_password": 73914562})
    assert [field for field, _ in info.value.problems] == ["DRIFTLINE_KAFKA_SASL_PASSWORD"]
    assert "73914562" not in str(info.value) and "73914562" not in str(info.value.__cause__)


def test_secrets_stay_out_of_repr_and_dumps(pki: dict[str, Path]) -> None:
    settings = load_settings(**_mutual_tls(pki))
    shown = [repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json(), repr(settings.kafka_access)]
    assert [text for text in shown if PASSWORD in text or KEY_PASSWORD in text] == []


def test_secrets_come_from_the_environment_too(monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]) -> None:
    for field, value in _mutual_tls(pki).items():
        monkeypatch.setenv(f"DRIFTLINE_{field.upper()}", str(value))
    conf = load_settings().confluent_config()
    assert (conf["sasl.password"], conf["ssl.key.password"]) == (PASSWORD, KEY_PASSWORD)


def test_refused_credentials_are_told_once_without_the_password() -> None:
    connection = AdminConnection(load_settings(**SASL))
    assert connection.refusal() is None
    connection.errors.append(KafkaError(KafkaError._TRANSPORT, "connection refused"))
    assert connection.refusal() is None, "an unreachable broker is retried until the timeout"
    connection.errors.append(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials"))
    refused = connection.refusal()
    assert refused is not None and "DRIFTLINE_KAFKA_SASL_USERNAME=svc" in str(refused)
    assert "\n" not in str(refused) and PASSWORD not in str(refused)


def test_the_secured_broker_gets_a_certificate_its_ca_verifies_for_loopback_and_private_passwords(
        pki: dict[str, Path]) -> None:
    files = SecureBrokerFiles(pki["ca"].parent)
    broker_cert = files.directory / "broker.crt"
    verified = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-verify_ip", "127.0.0.1",
                               "-CAfile", str(files.ca_file), str(broker_cert)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    for secret in ("keystore.password", "ca.key", "broker.key"):
        assert (files.directory / secret).stat().st_mode & 0o077 == 0, secret
    props = files.server_properties(9094, 9095)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert files.client_settings("127.0.0.1:9094", "driftline")["kafka_ssl_ca_file"] == str(files.ca_file)
