"""Kafka clients for applications: a prediction/outcome logger and an alert subscriber.

The logger must never hurt the app it runs in: ``log_*`` validates, hands the
event to librdkafka's bounded in-memory queue and returns at once.  When the
broker is slow or down and the queue is full, the event is dropped and counted;
nothing blocks and nothing raises.  Keys are partitioned the Java way (murmur2),
so predictions and outcomes with the same id meet in the same partition whatever
client produced them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.events import Alert, OutcomeEvent, PredictionEvent
from schemas.topics import TopicNames
from streams.exceptions import KafkaAuthorizationError

__all__ = ["AlertSubscriber", "LoggerStats", "PredictionLogger"]

log = logging.getLogger(__name__)


@dataclass
class LoggerStats:
    """What happened to the events given to a logger."""

    n_accepted: int = 0
    n_delivered: int = 0
    n_invalid: int = 0
    n_dropped_buffer_full: int = 0
    n_failed: int = 0

    @property
    def n_in_flight(self) -> int:
        return self.n_accepted - self.n_delivered - self.n_failed


def _wire_value(value: object) -> str:
    # str() of a datetime has a space where RFC 3339 (the contract's date-time) wants a "T".
    return value.isoformat() if isinstance(value, datetime) else str(value)


class PredictionLogger:
    """Publishes prediction and outcome events without ever blocking the caller.

    ``log_prediction`` and ``log_outcome`` take the event model or a dict in the
    wire format (what ``json.loads`` gives) and return whether it was queued.

    Parameters
    ----------
    config
        librdkafka settings, at least ``bootstrap.servers``.
    topics
        Topic names (with the deployment's prefix).
    max_buffered
        Events held in memory while the broker is unreachable; beyond this they are dropped and counted.
    delivery_timeout_seconds
        How long an event may wait for the broker before it counts as failed.
    max_event_bytes
        Larger events are refused as invalid: the worker would dead-letter them (keep the two equal).
    """

    def __init__(
        self,
        config: dict[str, Any],
        topics: TopicNames | None = None,
        max_buffered: int = 100_000,
        delivery_timeout_seconds: float = 30.0,
        max_event_bytes: int = 64 * 1024,
    ) -> None:
        self.topics = topics or TopicNames()
        self.max_event_bytes = max_event_bytes
        self.stats = LoggerStats()
        self._producer = Producer(
            {
                **config,
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": max_buffered,
                "linger.ms": 20,
                "acks": "all",
                "enable.idempotence": True,
                "message.timeout.ms": int(delivery_timeout_seconds * 1000),
                "error_cb": self._on_error,
                # librdkafka's own log lines go through Python logging, not the app's stderr.
                "logger": log,
            }
        )

    def _on_error(self, error: KafkaError) -> None:
        log.warning("prediction logger: %s", error)

    def _on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is None:
            self.stats.n_delivered += 1
        else:
            self.stats.n_failed += 1
            log.warning("prediction logger: delivery failed: %s", error)

    def _send(self, topic: str, event: BaseModel | dict[str, Any], kind: type[BaseModel]) -> bool:
        try:
            if isinstance(event, kind):
                valid = event
            elif isinstance(event, BaseModel):
                raise TypeError(f"expected a {kind.__name__}, got a {type(event).__name__}")
            else:
                # Dicts are read as the wire format (RFC 3339 times as strings), as from json.loads.
                valid = kind.model_validate_json(json.dumps(event, default=_wire_value))
            value = valid.model_dump_json().encode()
            if len(value) > self.max_event_bytes:
                raise ValueError(f"event of {len(value)} bytes exceeds max_event_bytes={self.max_event_bytes}")
        except (ValidationError, TypeError, ValueError) as exc:
            self.stats.n_invalid += 1
            log.warning("prediction logger: invalid event dropped: %s", exc)
            return False
        try:
            self._producer.produce(
                topic, key=valid.prediction_id.encode(), value=value, on_delivery=self._on_delivery  # type: ignore[attr-defined]
            )
        except BufferError:
            self.stats.n_dropped_buffer_full += 1
            return False
        except KafkaException as exc:
            self.stats.n_failed += 1
            log.warning("prediction logger: produce refused: %s", exc)
            return False
        finally:
            # Serve delivery callbacks without waiting.
            self._producer.poll(0)
        self.stats.n_accepted += 1
        return True

    def log_prediction(self, event: PredictionEvent | dict[str, Any]) -> bool:
        """Queue one prediction; False if it was invalid or dropped."""
        return self._send(self.topics.predictions, event, PredictionEvent)

    def log_outcome(self, event: OutcomeEvent | dict[str, Any]) -> bool:
        """Queue one outcome; False if it was invalid or dropped."""
        return self._send(self.topics.outcomes, event, OutcomeEvent)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` for queued events; return how many are still queued."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)


_ALERT: TypeAdapter[Alert] = TypeAdapter(Alert)


class AlertSubscriber:
    """Yields typed alerts from the alert topic.

    Parameters
    ----------
    config
        librdkafka settings, at least ``bootstrap.servers``.
    group_id
        Consumer group; each group gets every alert once.
    topics
        Topic names (with the deployment's prefix).
    from_beginning
        Start at the oldest retained alert when the group has no committed offset.
    """

    def __init__(
        self, config: dict[str, Any], group_id: str, topics: TopicNames | None = None, from_beginning: bool = False
    ) -> None:
        self.topics = topics or TopicNames()
        self.group_id = group_id
        self._consumer = Consumer(
            {**config, "group.id": group_id, "auto.offset.reset": "earliest" if from_beginning else "latest",
             "logger": log}
        )
        self._consumer.subscribe([self.topics.alerts])

    def poll(self, timeout: float = 1.0) -> Alert | None:
        """The next alert, or None if none came within ``timeout``.

        Raises :class:`~streams.exceptions.KafkaAuthorizationError`, naming the topic or group, when the
        broker's ACLs forbid reading: waiting would never bring an alert.
        """
        message = self._consumer.poll(timeout)
        if message is None:
            return None
        error = message.error()
        if error is not None:
            self._raise_if_forbidden(error)
            log.warning("alert subscriber: %s", error)
            return None
        try:
            return _ALERT.validate_json(message.value())
        except ValidationError as exc:
            log.warning("alert subscriber: skipped a malformed alert at offset %s: %s", message.offset(), exc)
            return None

    def _raise_if_forbidden(self, error: KafkaError) -> None:
        if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise KafkaAuthorizationError(self.topics.alerts, f"not authorized to read topic {self.topics.alerts}: {error.str()}")
        if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            raise KafkaAuthorizationError(self.group_id, f"not authorized to use consumer group {self.group_id}: {error.str()}")

    def __iter__(self) -> Iterator[Alert]:
        while True:
            alert = self.poll(1.0)
            if alert is not None:
                yield alert

    def close(self) -> None:
        self._consumer.close()
