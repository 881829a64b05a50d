"""The producer side of the worker: what a step produced, sent together once the step is decided.

Two flavours, one ``add``: :class:`Outbox` over faust's producer for the monitor stage (an agent), and
:class:`ProducerOutbox` over a confluent-kafka producer for the ingest stage, which writes most of the
worker's records (aiokafka's producer is pure Python: one record per event cost as much as the rest of the
worker) and runs in a thread of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import faust
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.events import MonitorBatch
from streams.settings import Settings
from streams.worker.handoff import HANDOFF_HEADER, BatchHandoff

__all__ = ["Outbox", "OutboxRecord", "ProducerOutbox"]

Headers = list[tuple[str, bytes]]
#: (topic, key, value, partition or None for the key's, headers)
OutboxRecord = tuple[str, bytes | None, bytes | None, int | None, Headers | None]


class _Pending:
    def __init__(self) -> None:
        self._messages: list[OutboxRecord] = []

    def add(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None,
            partition: int | None = None) -> None:
        self._messages.append((topic, key, value, partition, headers))

    def _take(self) -> list[OutboxRecord]:
        messages, self._messages = self._messages, []
        return messages


class Outbox(_Pending):
    """Messages a batch produced, sent together through faust's producer once the batch is decided.

    Faust's ``send_soon`` hands messages to its producer one event-loop round
    trip at a time (and logs a warning whenever 100 are waiting); sending a
    batch straight to the transport producer and awaiting the acks once per
    batch is several times cheaper.  The acks are awaited before the batch's
    offsets can be committed, so a failed send stops the worker instead of
    losing the message.
    """

    def __init__(self, app: faust.App) -> None:
        super().__init__()
        self._app = app
        # Tasks sharing an outbox hand their messages to the producer one after another, in the order they
        # were added: one model's alerts must reach its partition in the order they were decided.
        self._enqueueing = asyncio.Lock()

    async def send(self) -> list[Any]:
        """Send what was added and await the acks: each one's record metadata (``topic``, ``partition``,
        ``offset``), in the order the messages were added."""
        async with self._enqueueing:
            producer = self._app.producer
            acks = [await producer.send(topic, key, value, partition, None, headers)
                    for topic, key, value, partition, headers in self._take()]
        return list(await asyncio.gather(*acks))


class ProducerOutbox(_Pending):
    """Messages a step produced, handed to librdkafka (which batches them in C) without waiting for them.

    :meth:`dispatch` produces what was added; :meth:`wait` returns once every message dispatched so far is
    acknowledged by the broker, and raises if any was not: the step's source offsets are then never
    committed, and its changelog position never written, so a restart reads the step again instead of
    losing it.  Idempotence keeps each partition in the order the messages were dispatched, through retries.
    """

    def __init__(self, settings: Settings, flush_seconds: float | None = None,
                 handoff: BatchHandoff | None = None) -> None:
        super().__init__()
        self._flush_seconds = flush_seconds or settings.broker_request_timeout
        self._failures: list[KafkaError] = []
        self._handoff = handoff
        self._producer = Producer({
            **settings.confluent_config(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            # A delivery report calls back into Python: per message, that cost the ingest stage as much as the
            # produce call.  Only failures are wanted (flush still waits for every message).
            "delivery.report.only.error": True,
            # Java's partitioner, as faust's producer and apps' Kafka clients use: one model's batches land on
            # one monitor-input partition whichever client wrote them.
            "partitioner": "murmur2_random",
            "logger": logging.getLogger("streams.worker.kafka"),
        })

    def add_decoded(self, topic: str, value: bytes, partition: int, batch: MonitorBatch, n_items: int) -> None:
        """Add a monitor-input message, and leave ``batch``, its decoded form, to the handoff (if any)."""
        key = self._handoff.put(partition, value, batch, n_items) if self._handoff is not None else None
        self.add(topic, None, value, None if key is None else [(HANDOFF_HEADER, key)], partition=partition)

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._failures.append(error)

    def dispatch(self, first: Sequence[OutboxRecord] = ()) -> None:
        """Produce ``first``, then every message added since the last dispatch, in that order."""
        for topic, key, value, partition, headers in [*first, *self._take()]:
            extra = {} if partition is None else {"partition": partition}
            while True:
                try:
                    self._producer.produce(topic, value, key, headers=headers, on_delivery=self._delivered, **extra)
                    break
                except BufferError:
                    # librdkafka's queue is full: let it drain into the broker, then try again.
                    self._producer.poll(0.05)

    def wait(self) -> None:
        """Return once everything dispatched is acknowledged; raise if anything was not."""
        if self._producer.flush(self._flush_seconds) > 0:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "messages not acknowledged in time"))
        if self._failures:
            failures, self._failures = self._failures, []
            raise KafkaException(failures[0])
