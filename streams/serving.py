"""Serving the retrainer's models in an app: load the current version, hot-swap on a new one.

A :class:`ModelServer` reads the compacted models topic from its beginning in a
background thread.  Each record under the model's own key announces its current
version (see :mod:`streams.retrainer_app`); the server loads that version's
artifact from the artifact store, which verifies its SHA-256 before unpickling,
and only then swaps it in with a single reference assignment.  ``predict``
reads that reference once, so it never waits for a load, never sees half a
swap, and a prediction in flight finishes on the version it started with.  An
artifact that fails verification is refused and the old version keeps serving.

With the MLflow registry, a server can follow MLflow's ``champion`` alias
instead (:meth:`ModelServer.following_mlflow`): it asks the tracking server
where the alias points every ``poll_seconds`` and hot-swaps the same way,
verified before the swap, the old version kept on a failed load or while the
server does not answer.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from pydantic import TypeAdapter, ValidationError

from retrainer.artifacts import ArtifactStore
from retrainer.exceptions import ArtifactError, RegistryError
from schemas.events import FeatureValue, Label, ModelVersion
from schemas.topics import TopicNames
from streams.retrainer_app import current_key

__all__ = ["ModelServer", "Served"]

log = logging.getLogger(__name__)
_VERSION = TypeAdapter(ModelVersion)


@dataclass(frozen=True)
class Served:
    """One prediction and the version that made it (``fallback_version`` if none is loaded yet)."""

    prediction: Label | None
    version: str


class ModelServer:
    """The current version of one model, kept current from the models topic.

    Parameters
    ----------
    model
        The model's name.
    store
        The artifact store the retrainer writes to (same root directory).
    kafka_config
        librdkafka settings, at least ``bootstrap.servers``.
    topics
        Topic names (with the deployment's prefix).
    fallback
        Called with the raw features while no version is loaded (e.g. the
        model the app shipped with); without it ``predict`` returns ``None``.
    fallback_version
        The version reported for fallback predictions.
    on_swap
        Called in the consumer thread as ``on_swap(old_version, new_record)``
        after each swap.

    Examples
    --------
    ::

        server = ModelServer("speech-asr", open_store(settings.retrainer_data_dir),
                             settings.confluent_config(), settings.topics, fallback=shipped_model)
        server.start()
        served = server.predict(features)     # never blocks on Kafka or on a load
        log_prediction(..., prediction=served.prediction, model_version=served.version)
    """

    def __init__(
        self,
        model: str,
        store: ArtifactStore,
        kafka_config: Mapping[str, Any] | None,
        topics: TopicNames | None = None,
        *,
        fallback: Callable[[Mapping[str, FeatureValue]], Label | None] | None = None,
        fallback_version: str = "0",
        on_swap: Callable[[str | None, ModelVersion], None] | None = None,
        follow: Callable[[], ModelVersion | None] | None = None,
        poll_seconds: float = 2.0,
    ) -> None:
        if kafka_config is None and follow is None:
            raise ValueError("a ModelServer needs kafka_config (to read the models topic) or follow (to poll a registry)")
        self.model = model
        self.store = store
        self.topics = topics or TopicNames()
        self.fallback = fallback
        self.fallback_version = fallback_version
        self.on_swap = on_swap
        self._kafka_config = dict(kafka_config or {})
        self._follow = follow
        self.poll_seconds = poll_seconds
        # (record, loaded model): replaced as a whole, read once per prediction.
        self._current: tuple[ModelVersion, Any] | None = None
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._swapped = threading.Condition()
        self._thread: threading.Thread | None = None
        self.n_swaps = 0
        self.n_refused = 0

    @classmethod
    def following_mlflow(cls, model: str, registry: Any, store: ArtifactStore, poll_seconds: float = 2.0,
                         **options: Any) -> ModelServer:
        """A server that follows MLflow's ``champion`` alias of ``model`` (``registry`` an
        :class:`~retrainer.mlflow_registry.MlflowRegistry`, ``store`` its artifact store); e.g.
        ``backend = open_backend(settings); ModelServer.following_mlflow(name, backend.registry, backend.store,
        settings.serving_poll_seconds)``."""
        return cls(model, store, None, follow=lambda: registry.champion_record(model), poll_seconds=poll_seconds, **options)

    # -- serving -------------------------------------------------------------

    @property
    def version(self) -> str | None:
        """The version being served, ``None`` before the first load."""
        current = self._current
        return current[0].version if current is not None else None

    @property
    def record(self) -> ModelVersion | None:
        """The registry record of the version being served."""
        current = self._current
        return current[0] if current is not None else None

    def predict(self, features: Mapping[str, FeatureValue]) -> Served:
        """Predict with the current version (or the fallback); safe from any thread."""
        current = self._current
        if current is None:
            prediction = self.fallback(features) if self.fallback is not None else None
            return Served(prediction, self.fallback_version)
        record, model = current
        return Served(model.predict(features), record.version)

    # -- keeping current -----------------------------------------------------

    def start(self, wait_seconds: float = 0.0) -> ModelServer:
        """Start the consumer thread; optionally wait until it has read the topic up to its end."""
        if self._thread is not None:
            raise RuntimeError("ModelServer already started")
        self._thread = threading.Thread(target=self._run, name=f"model-server-{self.model}", daemon=True)
        self._thread.start()
        if wait_seconds > 0:
            self._caught_up.wait(wait_seconds)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the consumer thread; the loaded version keeps serving."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_for_version(self, predicate: Callable[[ModelVersion], bool], timeout: float) -> ModelVersion | None:
        """Block until the served record satisfies ``predicate``; return it, or ``None`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._swapped:
            while True:
                record = self.record
                if record is not None and predicate(record):
                    return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._swapped.wait(remaining)

    def offer(self, record: ModelVersion) -> bool:
        """Load ``record``'s artifact and serve it, if it is a newer announcement for this model.

        Returns whether a swap happened.  A record that is not ``promoted``,
        is for another model, is already served, or whose artifact fails
        verification is not served.
        """
        if record.model != self.model or record.status != "promoted":
            return False
        current = self._current
        if current is not None and current[0].version == record.version and current[0].sha256 == record.sha256:
            return False
        if record.artifact_uri is None or record.sha256 is None:
            log.error("model %s version %s has no artifact; still serving %s", self.model, record.version, self.version)
            self.n_refused += 1
            return False
        try:
            loaded = self.store.load(record.artifact_uri, record.sha256)
        except ArtifactError as exc:
            log.error("refused model %s version %s: %s; still serving %s", self.model, record.version, exc, self.version)
            self.n_refused += 1
            return False
        if not callable(getattr(loaded, "predict", None)):
            log.error("model %s version %s: artifact has no predict(); still serving %s", self.model, record.version, self.version)
            self.n_refused += 1
            return False
        old = self.version
        with self._swapped:
            self._current = (record, loaded)
            self.n_swaps += 1
            self._swapped.notify_all()
        log.info("model %s: now serving version %s (was %s)", self.model, record.version, old)
        if self.on_swap is not None:
            self.on_swap(old, record)
        return True

    def _run(self) -> None:
        if self._follow is not None:
            self._poll_registry(self._follow)
            return
        consumer = Consumer({
            **self._kafka_config,
            "group.id": f"driftline-serving-{self.model}-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })
        key = current_key(self.model)
        try:
            partitions = self._partitions(consumer)
            consumer.assign([TopicPartition(self.topics.models, p, OFFSET_BEGINNING) for p in partitions])
            ends = {p: consumer.get_watermark_offsets(TopicPartition(self.topics.models, p), timeout=10)[1] for p in partitions}
            positions = {p: 0 for p in partitions}
            while not self._stop.is_set():
                messages = consumer.consume(200, timeout=0.2)
                latest: ModelVersion | None = None
                for message in messages:
                    if message.error():
                        continue
                    positions[message.partition()] = message.offset() + 1
                    if message.key() != key:
                        continue
                    try:
                        latest = _VERSION.validate_json(message.value() or b"")
                    except ValidationError as exc:
                        log.warning("undecodable model version on %s: %s", self.topics.models, exc)
                # Catching up, only the last announcement of a batch matters.
                if latest is not None:
                    self.offer(latest)
                if not self._caught_up.is_set() and all(positions[p] >= ends[p] for p in partitions):
                    self._caught_up.set()
        except KafkaException as exc:
            log.error("model server for %s stopped: %s", self.model, exc)
        finally:
            consumer.close()

    def _poll_registry(self, follow: Callable[[], ModelVersion | None]) -> None:
        while not self._stop.is_set():
            try:
                record = follow()
            except RegistryError as exc:
                log.warning("model server for %s: registry not read (%s); still serving %s", self.model, exc, self.version)
            else:
                if record is not None:
                    self.offer(record)
                self._caught_up.set()
            self._stop.wait(self.poll_seconds)

    def _partitions(self, consumer: Consumer) -> list[int]:
        deadline = time.monotonic() + 30
        while not self._stop.is_set():
            topic = consumer.list_topics(self.topics.models, timeout=10).topics.get(self.topics.models)
            if topic is not None and topic.error is None and topic.partitions:
                return sorted(topic.partitions)
            if time.monotonic() > deadline:
                raise KafkaException(f"topic {self.topics.models} does not exist")
            time.sleep(0.5)
        return []
