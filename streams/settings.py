"""Process settings: read once, from ``DRIFTLINE_*`` environment variables or the constructor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from detectors.monitors.signed_state import MIN_KEY_BYTES
from schemas.exceptions import ConfigError
from schemas.topics import TopicNames
from streams.exceptions import IncompleteSettings
from streams.kafka_security import KafkaAccess

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Everything a Driftline process needs to know about its surroundings."""

    # Inputs are kept out of validation errors: a rejected value may be a password.
    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", frozen=True, extra="forbid", hide_input_in_errors=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # TLS (SSL and SASL_SSL): the CA that signed the brokers' certificates (default: the system's CAs), and a
    # client certificate with its key for brokers that ask for one (mutual TLS).
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    # Whether a broker's certificate must name the host it is reached by: what stops a man in the middle.
    # Turn it off only for brokers reached by an address their certificate does not list.
    kafka_ssl_endpoint_identification: bool = True

    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: Annotated[int, Field(ge=1, le=1024)] = 4
    replication_factor: Annotated[int, Field(ge=1, le=16)] = 1

    app_id: str = Field(default="driftline", pattern=r"^[A-Za-z0-9._-]+$")
    # Which stages a worker runs: both, or one, with the other in more processes of the same app id.
    worker_role: Literal["all", "ingest", "monitor"] = "all"
    monitor_config: Path = Path("monitors.yaml")
    data_dir: Path = Path(".driftline/worker")
    # Where the detectors' simulated thresholds are kept (detectors/calibration.py); unset, the system temp
    # dir's driftline-calibration.  The sets the package ships are served from its table; a fresh container
    # simulates any other set again (up to ~4 s each, in the monitor stage, as warm-ups end): a volume here
    # keeps them across restarts.
    calibration_dir: Path | None = None
    web_port: Annotated[int, Field(ge=1, le=65535)] = 6066
    web_host: str = "127.0.0.1"

    join_ttl_seconds: Annotated[float, Field(gt=0)] = 3600.0
    join_idle_seconds: Annotated[float, Field(gt=0)] = 5.0
    join_max_pending: Annotated[int, Field(ge=1)] = 1_000_000
    # While a source partition is quiet, the join and monitor stages hold what they release this long (wall
    # clock) for it to catch up: when traffic starts, one partition's first fetch may come a batch late.
    order_grace_seconds: Annotated[float, Field(ge=0, le=60)] = 2.0
    # Once a worker has read every source partition it owns to its end and they have all been quiet this long,
    # traffic has stopped: what it joined is let through then, not after join_idle_seconds (a stalled partition).
    order_settle_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    max_event_bytes: Annotated[int, Field(ge=256)] = 64 * 1024
    # Messages handled in one step: source messages per bulk read of the ingest stage, monitor-input messages
    # per micro-batch of the monitor stage.
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    batch_seconds: Annotated[float, Field(gt=0, le=60)] = 0.1
    # The monitor stage scores a model's items once it has this many (predictions and labelled examples), or once
    # the first of them has waited monitor_batch_wait_seconds: with many models, a message's share of each is an
    # item or two, and the monitors' cost per call would be paid per item (detectors.monitors.scoring_batches).
    # EXPERIMENTAL, off (1: everything is scored as it is released): with 64, test_kill_recovery's crash right
    # after an alert left 16 of 2,000 examples unscored in 2 of 3 CI runs.  The likely causes were not batching's
    # and are handled (faust committing past held messages: streams.worker.commit_limit; faust skipping a
    # message: MonitorService._take_in_unhanded); off until CI runs and a repeated benchmark agree.
    monitor_batch_items: Annotated[int, Field(ge=1, le=100_000)] = 1
    monitor_batch_wait_seconds: Annotated[float, Field(ge=0, le=60)] = 2.0
    broker_session_timeout: Annotated[float, Field(gt=0)] = 30.0
    broker_request_timeout: Annotated[float, Field(gt=0)] = 90.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    # Monitor state is checkpointed to a changelog-backed table at most this many seconds apart
    # (and at once after a batch that alerts); labelled offsets are committed only up to a checkpoint.
    checkpoint_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # Prediction ids remembered per model to drop examples re-published by a restarted ingest stage.
    checkpoint_dedupe_ids: Annotated[int, Field(ge=0, le=1_000_000)] = 5000
    # FAULT INJECTION, for tests only (tests/integration/test_kill_recovery.py): the monitor stage ends the
    # process at once (os._exit, status 72) right after the first alerts it publishes are acknowledged, before the
    # checkpoint that covers them: the crash window streams.worker.alert_log reads the alert topic back for.
    fault_exit_after_alert: bool = False
    # Static group membership (group.instance.id) for the ingest stage's and the monitor stage's consumers: a
    # restarted process with the same id gets its partitions back at once, without waiting out the session
    # timeout.  Must be unique per running process and stable across its restarts (a pod's or host's name);
    # two processes with one id fence each other.  Unset: dynamic membership.  EXPERIMENTAL, not adopted:
    # measured with benchmarks/kill_handover.py, a worker restarted after kill -9 with the same id scored
    # nothing within 120 s (dynamic membership: its first batch 30 s after the kill, one session timeout).
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$", max_length=200)
    # Start-up readiness gate: how long to wait for the broker to answer and list every topic the process
    # needs, with its partition count, before failing with the names of what is missing.
    startup_wait_seconds: Annotated[float, Field(gt=0, le=3600)] = 120.0
    # The watchdog: a process with no partitions assigned, or with unread messages on them and no offset
    # committed, for this long exits non-zero for its supervisor to restart it (crash-only recovery; the
    # changelogs make a restart safe).  Default: four session timeouts.  0 turns it off.
    watchdog_seconds: Annotated[float, Field(ge=0, le=86400)] | None = None
    # The secret that signs the monitor-state checkpoints (HMAC-SHA-256): a checkpoint is unpickled only once its
    # signature matches.  Unset, a key is generated into data_dir/state.key (0600) and reused; workers that share
    # an app id must share one key, or each rejects (and cold-starts) the others' checkpoints after a rebalance.
    state_key: Annotated[SecretStr, Field(min_length=MIN_KEY_BYTES)] | None = None

    # The retrainer service (``driftline retrainer``) and the apps that serve its models.
    retrainer_data_dir: Path = Path(".driftline/retrainer")
    retrainer_group_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$")
    retrainer_web_port: Annotated[int, Field(ge=1, le=65535)] = 6067
    # Labelled examples (not messages: the labelled topic carries batches of up to MAX_BATCH_ITEMS) read again
    # on start, per labelled partition, from just before its committed offset, to refill the learners' holdout
    # and history buffers; whole batches are replayed, so it can be up to one batch more (0: no replay).
    retrainer_replay_examples: Annotated[int, Field(ge=0, le=10_000_000)] = 5_000
    retrainer_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    # Where the retrainer registers versions and apps find them: Driftline's own file registry in
    # retrainer_data_dir plus the models topic (the default), or an MLflow tracking server (pip install
    # 'driftline[mlflow]'), whose model registry then holds the versions and whose `champion` alias names the
    # current one; the models topic still announces it.
    registry: Literal["file", "mlflow"] = "file"
    mlflow_tracking_uri: str | None = Field(default=None, max_length=2000)
    mlflow_experiment: str = Field(default="driftline", min_length=1, max_length=500)
    # One HTTP request to the tracking server: its timeout and how often MLflow's client retries it.  Small, so
    # an outage makes a trigger wait (and be retried at the next poll) instead of stalling the retrainer's loop.
    mlflow_request_timeout_seconds: Annotated[int, Field(ge=1, le=600)] = 10
    mlflow_request_retries: Annotated[int, Field(ge=0, le=10)] = 0
    # How often a ModelServer that follows MLflow's champion alias asks where it points.
    serving_poll_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0

    @field_validator("watchdog_seconds")
    @classmethod
    def _watchdog_outlasts_a_rebalance(cls, value: float | None, info: ValidationInfo) -> float | None:
        # A surviving worker legitimately waits a session timeout for a dead peer's partitions, and the monitor
        # stage commits only at checkpoints: a shorter watchdog would restart healthy workers.
        session = info.data.get("broker_session_timeout", 30.0)
        checkpoint = info.data.get("checkpoint_seconds", 10.0)
        floor = 2 * max(session, checkpoint)
        if value and value < floor:
            raise ValueError(f"must be 0 (off) or at least twice the longer of broker_session_timeout and "
                             f"checkpoint_seconds ({floor:g} s), not {value:g}")
        return value

    @model_validator(mode="after")
    def _timeouts_fit(self) -> Settings:
        # faust refuses to start otherwise, with a message that does not name our setting.
        if self.broker_request_timeout < self.broker_session_timeout:
            raise ValueError(
                "broker_request_timeout must be at least broker_session_timeout "
                f"({self.broker_request_timeout} < {self.broker_session_timeout})"
            )
        return self

    @model_validator(mode="after")
    def _registry_complete(self) -> Settings:
        if self.registry == "mlflow":
            # Imported here: the retrainer package imports river's learners, and with them pandas, scikit-learn
            # and SQLAlchemy, which a worker with the file registry never needs (about 100 MiB resident).
            from retrainer.mlflow_registry import tracking_uri_problem

            if not self.mlflow_tracking_uri:
                raise IncompleteSettings([("mlflow_tracking_uri", "is required when DRIFTLINE_REGISTRY=mlflow")])
            problem = tracking_uri_problem(self.mlflow_tracking_uri)
            if problem:
                raise IncompleteSettings([("mlflow_tracking_uri", problem)])
        return self

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        problems = self.kafka_access.problems()
        if problems:
            raise IncompleteSettings(problems)
        return self

    @property
    def kafka_access(self) -> KafkaAccess:
        """How this process's Kafka clients connect: librdkafka config, faust broker URLs and credentials."""
        return KafkaAccess(self)

    @property
    def watchdog_timeout(self) -> float:
        """Seconds the watchdog allows without partitions or progress (0: never trips)."""
        if self.watchdog_seconds is not None:
            return self.watchdog_seconds
        return 4 * max(self.broker_session_timeout, self.checkpoint_seconds)

    @property
    def faust_app_id(self) -> str:
        """The faust app (and consumer group) id: a worker of the ingest role alone takes no part in the monitor
        stage's group."""
        return self.app_id if self.worker_role != "ingest" else f"{self.app_id}-ingest-only"

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def join_state_topic(self) -> str:
        """The join's changelog (see detectors.ingest.join_log): the worker's own, like faust's table changelogs."""
        return f"{self.app_id}-join-state-changelog"

    @property
    def ingest_group(self) -> str:
        """The consumer group of the worker's ingest stage (confluent-kafka, cooperative): apart from faust's."""
        return f"{self.app_id}-ingest"

    @property
    def retrainer_group(self) -> str:
        """The retrainer's consumer group: its own, never the worker's."""
        return self.retrainer_group_id or f"{self.app_id}-retrainer"

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka's connection and security settings for a confluent-kafka client (see :class:`KafkaAccess`)."""
        return self.kafka_access.librdkafka()


def _variable(field: str) -> str:
    return "DRIFTLINE_" + field.upper()


def _problems(error: ErrorDetails) -> list[tuple[str, str]]:
    """The ``(variable, message)`` pairs of one validation error: a rule over several fields names each field."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, IncompleteSettings):
        return [(_variable(field), rule) for field, rule in cause.problems]
    if error["loc"]:
        return [(_variable(".".join(str(part) for part in error["loc"])), error["msg"])]
    return [("settings", error["msg"])]


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning a validation error into a ConfigError naming the field."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError("settings", [p for err in exc.errors() for p in _problems(err)]) from exc
