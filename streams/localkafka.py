"""A local, single-node Apache Kafka (KRaft) on loopback, run from Kafka's own jars.

For development, the demo and the tests on a machine without Docker: the broker
jars are resolved from Maven Central with Maven into a cache that later runs
reuse, the storage is formatted once, and the broker is started as a detached
JVM whose pid is kept beside its data.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streams.exceptions import LocalKafkaError
from streams.secure_broker import ADMIN_USER, CLIENT_PREFIX, CLIENT_USER, SecureBrokerFiles, grant_prefix
from streams.settings import load_settings

__all__ = ["DEFAULT_KAFKA_VERSION", "LocalKafka"]

DEFAULT_KAFKA_VERSION = "4.1.1"


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LocalKafkaError(f"{tool} not found on PATH: {hint}")
    return path


def _alive(pid: int) -> bool:
    """Whether pid is a running process; reaps it if it is our exited child."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: the broker was started by another process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass(frozen=True)
class LocalKafka:
    """One local broker: where its jars, data and logs live, and which ports it takes.

    Parameters
    ----------
    data_dir
        Holds the formatted storage, the config, the pid file and the broker log.
    port
        The PLAINTEXT listener on 127.0.0.1; the controller takes ``port + 1``
        unless ``controller_port`` is given.
    cache_dir
        Where resolved jars are kept, per Kafka version, across runs.
    secure
        Serve one SASL_SSL listener on ``port`` instead of PLAINTEXT: SCRAM-SHA-512 users, a private CA and
        ACLs (see :mod:`streams.secure_broker`); :meth:`client_settings` says how to connect.
    extra_users
        With ``secure``, SCRAM users made beside ``admin`` and ``driftline``, with no ACLs of their own.
    """

    data_dir: Path
    port: int = 9092
    controller_port: int | None = None
    version: str = DEFAULT_KAFKA_VERSION
    cache_dir: Path = Path.home() / ".cache" / "driftline" / "kafka"
    heap: str = "512m"
    secure: bool = False
    extra_users: tuple[str, ...] = ()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secrets(self) -> SecureBrokerFiles:
        """The secured mode's CA, keystore and passwords."""
        return SecureBrokerFiles(self.data_dir / "secrets")

    def client_settings(self, user: str = CLIENT_USER) -> dict[str, str]:
        """Driftline settings (field names, as for :func:`streams.settings.load_settings`) to connect as ``user``."""
        if not self.secure:
            return {"kafka_bootstrap": self.bootstrap}
        return self.secrets.client_settings(self.bootstrap, user)

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / self.version / "libs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def resolve_jars(self) -> Path:
        """Download the broker's jars with Maven, once per version."""
        done = self.libs_dir / ".complete"
        if done.exists():
            return self.libs_dir
        mvn = _require("mvn", "install Maven (Debian: apt-get install maven)")
        work = self.cache_dir / self.version
        work.mkdir(parents=True, exist_ok=True)
        pom = resources.files("streams.kafka").joinpath("pom.xml").read_text()
        (work / "pom.xml").write_text(pom.replace("@KAFKA_VERSION@", self.version))
        cmd = [mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={self.libs_dir}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise LocalKafkaError(f"Maven could not resolve Kafka {self.version}: " + " | ".join(tail))
        done.write_text(self.version)
        return self.libs_dir

    def _java(self) -> str:
        return _require("java", "install a JDK 17 or later (Debian: apt-get install openjdk-17-jre-headless)")

    def _write_config(self) -> Path:
        cport = self.controller_port or self.port + 1
        logs = self.data_dir / "logs"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "log.dirs": str(logs),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Driftline creates its topics itself, with the partition counts it needs.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
        }
        if self.secure:
            props.update(self.secrets.server_properties(self.port, cport))
        path = self.data_dir / "server.properties"
        path.touch(mode=0o600, exist_ok=True)  # it holds the keystore's and the admin's passwords in secure mode
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _classpath(self) -> str:
        return str(self.resolve_jars() / "*")

    def _log4j(self) -> str:
        target = self.data_dir / "log4j2.xml"
        target.write_text(resources.files("streams.kafka").joinpath("log4j2.xml").read_text())
        return f"-Dlog4j2.configurationFile={target}"

    def pid(self) -> int | None:
        """The broker's pid if it is running."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def is_ready(self, timeout: float = 2.0) -> bool:
        """Whether the broker answers a metadata request."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        # A plain connect first, so that a broker still starting up does not
        # make librdkafka log a connection failure every few milliseconds.
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=timeout).close()
        except OSError:
            return False
        admin = AdminClient({**self._admin_config(), "log_level": 0})
        try:
            return bool(admin.list_topics(timeout=timeout).brokers)
        except KafkaException:
            return False

    def _admin_config(self) -> dict[str, object]:
        return load_settings(**self.client_settings(ADMIN_USER)).confluent_config()

    def start(self, timeout: float = 90.0) -> None:
        """Format storage if needed, start the broker detached, and wait until it answers."""
        if self.pid() is not None:
            if self.is_ready():
                return
            raise LocalKafkaError(f"a broker (pid {self.pid()}) is running from {self.data_dir} but does not answer")
        java = self._java()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.secure:
            self.secrets.make_certificates(_require("openssl", "install OpenSSL (Debian: apt-get install openssl)"))
        config = self._write_config()
        classpath = self._classpath()
        log4j = self._log4j()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self._format(java, classpath, log4j, config)
        cmd = [java, f"-Xms{self.heap}", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
               "-Djava.awt.headless=true", log4j, "-cp", classpath, "kafka.Kafka", str(config)]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        self._wait_until_ready(proc, timeout)
        if self.secure:
            grant_prefix(self._admin_config(), CLIENT_USER, CLIENT_PREFIX)

    def _format(self, java: str, classpath: str, log4j: str, config: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        # SCRAM users go in with the storage (KIP-900), so the broker can authenticate its own first connection.
        users = self.secrets.scram_arguments((CLIENT_USER, *self.extra_users)) if self.secure else []
        # "--cluster-id=" joined: an id that starts with "-" (one in 64) would be read as an option.
        fmt = subprocess.run(
            [java, "-cp", classpath, log4j, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
             "-c", str(config), *users],
            capture_output=True, text=True,
        )
        if fmt.returncode != 0:
            raise LocalKafkaError(f"formatting KRaft storage failed: {fmt.stderr.strip() or fmt.stdout.strip()}")

    def _wait_until_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-5:]
                raise LocalKafkaError(f"broker exited with {proc.returncode}: " + " | ".join(tail))
            if self.is_ready(timeout=1.0):
                return
            time.sleep(0.5)
        self.stop()
        raise LocalKafkaError(f"broker did not answer on {self.bootstrap} within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the broker, SIGKILL it after ``timeout``; False if none was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True
