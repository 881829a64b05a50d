"""What the local broker's secured mode needs: a private CA and broker certificate, SCRAM users, listeners, ACLs.

Used by :class:`streams.localkafka.LocalKafka` with ``secure=True``: one ``SASL_SSL`` listener on loopback
(SCRAM-SHA-512 over TLS, the certificate signed by a CA made here), Kafka's ``StandardAuthorizer`` with the
``admin`` user as super user, and a ``driftline`` user allowed only what Driftline's processes do: every
operation on the topics and consumer groups whose names start with ``driftline`` (the default topic names and
app id).  Passwords are generated once and kept in files readable by their owner only.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.exceptions import LocalKafkaError

__all__ = ["ADMIN_USER", "CLIENT_USER", "SecureBrokerFiles", "grant_prefix"]

ADMIN_USER = "admin"
CLIENT_USER = "driftline"
MECHANISM = "SCRAM-SHA-512"
# The names the default settings use: topics "driftline.*", app id (groups, changelogs) "driftline".
CLIENT_PREFIX = "driftline"


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise LocalKafkaError(f"{what} failed: {(done.stderr or done.stdout).strip()[-500:]}")


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


@dataclass(frozen=True)
class SecureBrokerFiles:
    """The secured broker's certificates and passwords, under ``directory``, made once and then reused."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) that clients trust."""
        return self.directory / "ca.crt"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.p12"

    def password(self, name: str) -> str:
        """The password of a SCRAM user, or of the keystore: generated on first use, then read back."""
        path = self.directory / f"{name}.password"
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_private(path, secrets.token_urlsafe(24))
        return path.read_text().strip()

    def password_file(self, name: str) -> Path:
        self.password(name)
        return self.directory / f"{name}.password"

    def make_certificates(self, openssl: str) -> None:
        """A self-signed CA, and a broker key and certificate for 127.0.0.1 and localhost in a PKCS12 keystore."""
        if self.keystore.exists() and self.ca_file.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        d = self.directory
        _run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365", "-subj", "/CN=driftline-local-ca",
              "-keyout", str(d / "ca.key"), "-out", str(self.ca_file),
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
             "making the local CA")
        _run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
              "-keyout", str(d / "broker.key"), "-out", str(d / "broker.csr")], "making the broker's key")
        # The extensions strict verifiers (OpenSSL 3, Python's default context) look for in a server certificate.
        extensions = d / "broker.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                              "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                              "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        _run([openssl, "x509", "-req", "-in", str(d / "broker.csr"), "-CA", str(self.ca_file), "-CAkey", str(d / "ca.key"),
              "-CAcreateserial", "-days", "365", "-extfile", str(extensions), "-out", str(d / "broker.crt")],
             "signing the broker's certificate")
        _run([openssl, "pkcs12", "-export", "-in", str(d / "broker.crt"), "-inkey", str(d / "broker.key"),
              "-certfile", str(self.ca_file), "-name", "broker", "-out", str(self.keystore),
              "-passout", f"file:{self.password_file('keystore')}"], "writing the broker's keystore")
        for private in ("ca.key", "broker.key"):
            (d / private).chmod(0o600)

    def scram_arguments(self, users: tuple[str, ...]) -> list[str]:
        """StorageTool's ``--add-scram`` options: the admin and ``users`` exist from the first start (KIP-900)."""
        options = []
        for user in (ADMIN_USER, *users):
            options += ["--add-scram", f"{MECHANISM}=[name={user},password={self.password(user)}]"]
        return options

    def server_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """The broker config for one SASL_SSL listener beside the (loopback, plaintext) controller's."""
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN_USER}" '
                f'password="{self.password(ADMIN_USER)}";')
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            # The broker's own login when it connects to itself; the server side reads SCRAM users from metadata.
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.password("keystore"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # ANONYMOUS is the broker talking to its own controller over the loopback-only CONTROLLER listener,
            # which serves controller requests and nothing a client could use.
            "super.users": f"User:{ADMIN_USER};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def client_settings(self, bootstrap: str, user: str) -> dict[str, str]:
        """Driftline settings (field names) for connecting as ``user``: SASL_SSL, SCRAM, this CA."""
        return {
            "kafka_bootstrap": bootstrap,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": MECHANISM,
            "kafka_sasl_username": user,
            "kafka_sasl_password": self.password(user),
            "kafka_ssl_ca_file": str(self.ca_file),
        }


def grant_prefix(admin_config: dict[str, object], user: str, prefix: str, timeout: float = 30.0) -> None:
    """Allow ``user`` every operation on the topics and consumer groups whose names start with ``prefix``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType,
    )

    bindings = [AclBinding(kind, prefix, ResourcePatternType.PREFIXED, f"User:{user}", "*", AclOperation.ALL,
                           AclPermissionType.ALLOW) for kind in (ResourceType.TOPIC, ResourceType.GROUP)]
    admin = AdminClient(admin_config)
    try:
        for future in admin.create_acls(bindings, request_timeout=timeout).values():
            future.result()
    except KafkaException as exc:
        raise LocalKafkaError(f"granting {user} the prefix {prefix!r}: {exc}") from exc
