"""How every Driftline process reaches Kafka: the one place the settings become each client's connection config.

The confluent-kafka clients (the worker's ingest consumer and outbox producer, the retrainer, topic
administration, the app client and the model server) take :meth:`KafkaAccess.librdkafka`; the faust app takes
:meth:`KafkaAccess.faust_broker` and :meth:`KafkaAccess.faust_credentials`, which carry the same TLS and SASL
settings to aiokafka.  Nothing else builds a client's security config, so a secured cluster is reached the same
way by every process or by none.

Examples
--------
>>> from streams.settings import load_settings
>>> access = KafkaAccess(load_settings(kafka_bootstrap="b1:9093,b2:9093"))
>>> access.librdkafka()
{'bootstrap.servers': 'b1:9093,b2:9093', 'security.protocol': 'PLAINTEXT'}
>>> access.faust_broker(), access.faust_credentials()
(['kafka://b1:9093', 'kafka://b2:9093'], None)
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from streams.exceptions import KafkaSecurityError

__all__ = ["KafkaAccess", "KafkaSettings"]

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


class KafkaSettings(Protocol):
    """The settings :class:`KafkaAccess` reads (:class:`streams.settings.Settings` has them all)."""

    @property
    def kafka_bootstrap(self) -> str: ...
    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str | None: ...
    @property
    def kafka_sasl_username(self) -> str | None: ...
    @property
    def kafka_sasl_password(self) -> SecretStr | None: ...
    @property
    def kafka_ssl_ca_file(self) -> Path | None: ...
    @property
    def kafka_ssl_cert_file(self) -> Path | None: ...
    @property
    def kafka_ssl_key_file(self) -> Path | None: ...
    @property
    def kafka_ssl_key_password(self) -> SecretStr | None: ...
    @property
    def kafka_ssl_endpoint_identification(self) -> bool: ...


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


@dataclass(frozen=True)
class KafkaAccess:
    """One process's way into Kafka: its bootstrap servers, TLS and SASL settings, for each kind of client."""

    settings: KafkaSettings

    @property
    def uses_sasl(self) -> bool:
        return self.settings.kafka_security_protocol in SASL_PROTOCOLS

    @property
    def uses_tls(self) -> bool:
        return self.settings.kafka_security_protocol in TLS_PROTOCOLS

    def problems(self) -> list[tuple[str, str]]:
        """``(settings field, the rule it breaks)`` for each incomplete or contradictory setting; empty if none.

        Called when the settings are built, so that a process fails at start-up naming the field, not at its
        first connection with a broker's error that names none.
        """
        return self._sasl_problems() + self._tls_problems()

    def _sasl_problems(self) -> list[tuple[str, str]]:
        s = self.settings
        given = {"kafka_sasl_mechanism": s.kafka_sasl_mechanism is not None,
                 "kafka_sasl_username": bool(s.kafka_sasl_username),
                 "kafka_sasl_password": bool(_secret(s.kafka_sasl_password))}
        if self.uses_sasl:
            return [(field, f"required when DRIFTLINE_KAFKA_SECURITY_PROTOCOL is {s.kafka_security_protocol}")
                    for field, present in given.items() if not present]
        return [(field, f"only used with SASL_PLAINTEXT or SASL_SSL (DRIFTLINE_KAFKA_SECURITY_PROTOCOL is "
                        f"{s.kafka_security_protocol})") for field, present in given.items() if present]

    def _tls_problems(self) -> list[tuple[str, str]]:
        s = self.settings
        files = {"kafka_ssl_ca_file": s.kafka_ssl_ca_file, "kafka_ssl_cert_file": s.kafka_ssl_cert_file,
                 "kafka_ssl_key_file": s.kafka_ssl_key_file}
        if not self.uses_tls:
            given = [field for field, path in files.items() if path is not None]
            if s.kafka_ssl_key_password is not None:
                given.append("kafka_ssl_key_password")
            return [(field, f"only used with SSL or SASL_SSL (DRIFTLINE_KAFKA_SECURITY_PROTOCOL is "
                            f"{s.kafka_security_protocol})") for field in given]
        problems = [(field, f"no such file: {path}") for field, path in files.items()
                    if path is not None and not path.is_file()]
        # A client certificate is only usable with its private key, and the other way round.
        if s.kafka_ssl_cert_file is not None and s.kafka_ssl_key_file is None:
            problems.append(("kafka_ssl_key_file", "required with DRIFTLINE_KAFKA_SSL_CERT_FILE"))
        if s.kafka_ssl_key_file is not None and s.kafka_ssl_cert_file is None:
            problems.append(("kafka_ssl_cert_file", "required with DRIFTLINE_KAFKA_SSL_KEY_FILE"))
        if s.kafka_ssl_key_password is not None and s.kafka_ssl_key_file is None:
            problems.append(("kafka_ssl_key_password", "only used with DRIFTLINE_KAFKA_SSL_KEY_FILE"))
        return problems

    # -- confluent-kafka (librdkafka) -------------------------------------------

    def librdkafka(self) -> dict[str, Any]:
        """The connection and security part of a confluent-kafka client's config; callers add their own keys."""
        s = self.settings
        conf: dict[str, Any] = {"bootstrap.servers": s.kafka_bootstrap, "security.protocol": s.kafka_security_protocol}
        if self.uses_sasl:
            conf.update({"sasl.mechanism": s.kafka_sasl_mechanism, "sasl.username": s.kafka_sasl_username,
                         "sasl.password": _secret(s.kafka_sasl_password)})
        if self.uses_tls:
            conf["ssl.endpoint.identification.algorithm"] = "https" if s.kafka_ssl_endpoint_identification else "none"
            optional = {"ssl.ca.location": s.kafka_ssl_ca_file, "ssl.certificate.location": s.kafka_ssl_cert_file,
                        "ssl.key.location": s.kafka_ssl_key_file}
            conf.update({key: str(path) for key, path in optional.items() if path is not None})
            if s.kafka_ssl_key_password is not None:
                conf["ssl.key.password"] = _secret(s.kafka_ssl_key_password)
        return conf

    # -- faust (aiokafka) -------------------------------------------------------

    def faust_broker(self) -> list[str]:
        """faust's broker URLs: one ``kafka://`` URL per bootstrap server."""
        return [f"kafka://{server.strip()}" for server in self.settings.kafka_bootstrap.split(",") if server.strip()]

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context aiokafka connects with (None without TLS): the CA file, or the system's CAs."""
        if not self.uses_tls:
            return None
        s = self.settings
        try:
            context = ssl.create_default_context(cafile=str(s.kafka_ssl_ca_file) if s.kafka_ssl_ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(f"DRIFTLINE_KAFKA_SSL_CA_FILE {s.kafka_ssl_ca_file} is not a CA file: {exc}") from exc
        # The certificate is still checked against the CA either way; only the host name check is optional.
        context.check_hostname = s.kafka_ssl_endpoint_identification
        if s.kafka_ssl_cert_file is not None:
            self._load_client_certificate(context)
        return context

    def _load_client_certificate(self, context: ssl.SSLContext) -> None:
        s = self.settings
        try:
            context.load_cert_chain(str(s.kafka_ssl_cert_file), str(s.kafka_ssl_key_file),
                                    password=_secret(s.kafka_ssl_key_password) or None)
        except (OSError, ssl.SSLError) as exc:
            # ssl's message names no file: say which settings to look at (the password itself is never in it).
            raise KafkaSecurityError(
                f"cannot load the client certificate DRIFTLINE_KAFKA_SSL_CERT_FILE {s.kafka_ssl_cert_file} with "
                f"DRIFTLINE_KAFKA_SSL_KEY_FILE {s.kafka_ssl_key_file} (is DRIFTLINE_KAFKA_SSL_KEY_PASSWORD right?): "
                f"{exc}"
            ) from exc

    def faust_credentials(self) -> Any:
        """faust's ``broker_credentials``: SASL (over TLS for SASL_SSL), TLS alone, or None for plaintext."""
        import faust

        context = self.ssl_context()
        s = self.settings
        if self.uses_sasl:
            return faust.SASLCredentials(username=s.kafka_sasl_username, password=_secret(s.kafka_sasl_password),
                                         mechanism=s.kafka_sasl_mechanism, ssl_context=context)
        if context is not None:
            return faust.SSLCredentials(context)
        return None
