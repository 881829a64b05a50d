"""What a demo reads back from Kafka while it runs: alerts, retrain triggers and, for the speech demo, model versions."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, Message
from pydantic import TypeAdapter

from schemas.events import Alert, ModelVersion, RetrainTrigger
from schemas.topics import TopicNames
from streams.retrainer_app import current_key

__all__ = ["DemoWatch"]

_ALERT = TypeAdapter(Alert)
_TRIGGER = TypeAdapter(RetrainTrigger)
_VERSION = TypeAdapter(ModelVersion)


class DemoWatch:
    """Reads a demo run's output topics from the start and hands every record to the demo's narration.

    Alerts and triggers are kept, in the order they were read, for the demo's
    closing report; what is printed, and what else is kept, is the callbacks'
    business, since each demo tells its story in its own words.

    Parameters
    ----------
    client_config
        librdkafka settings (:meth:`streams.settings.Settings.confluent_config`).
    topics
        The run's topic names.
    group_id
        The watch's own consumer group, so that it reads every record from the start.
    on_alert, on_trigger
        Called with each alert and retrain trigger as it is read.
    on_version
        Called with each model version record; the models topic is read only if it is given.
    """

    def __init__(
        self,
        client_config: Mapping[str, str],
        topics: TopicNames,
        group_id: str,
        on_alert: Callable[[Alert], None],
        on_trigger: Callable[[RetrainTrigger], None],
        on_version: Callable[[ModelVersion], None] | None = None,
    ) -> None:
        self.alerts: list[Alert] = []
        self.triggers: list[RetrainTrigger] = []
        self._topics = topics
        self._on_alert = on_alert
        self._on_trigger = on_trigger
        self._on_version = on_version
        self._consumer = Consumer({**client_config, "group.id": group_id, "auto.offset.reset": "earliest"})
        subscribed = [topics.alerts, topics.retrain]
        if on_version is not None:
            subscribed.append(topics.models)
        self._consumer.subscribe(subscribed)

    def poll(self, max_wait: float) -> None:
        """Hand on what arrives within ``max_wait`` seconds, then whatever else is already waiting."""
        deadline = time.monotonic() + max_wait
        while (message := self._consumer.poll(max(0.0, deadline - time.monotonic()))) is not None:
            if not message.error():
                self._dispatch(message)

    def close(self) -> None:
        """Leave the consumer group."""
        self._consumer.close()

    def _dispatch(self, message: Message) -> None:
        value = message.value() or b""
        if message.topic() == self._topics.alerts:
            alert = _ALERT.validate_json(value)
            self.alerts.append(alert)
            self._on_alert(alert)
        elif message.topic() == self._topics.retrain:
            trigger = _TRIGGER.validate_json(value)
            self.triggers.append(trigger)
            self._on_trigger(trigger)
        elif self._on_version is not None and message.key() != b"":
            record = _VERSION.validate_json(value)
            # The same record is also published under the model's own key as its
            # current version; narrating it once, under its version key, is enough.
            if message.key() != current_key(record.model):
                self._on_version(record)
