"""The producer side of the worker: what a batch produced, sent together once the batch is decided."""

from __future__ import annotations

import asyncio

import faust

__all__ = ["Outbox"]


class Outbox:
    """Messages a batch produced, sent together once the batch is decided.

    Faust's ``send_soon`` hands messages to its producer one event-loop round
    trip at a time (and logs a warning whenever 100 are waiting); sending a
    batch straight to the transport producer and awaiting the acks once per
    batch is several times cheaper.  The acks are awaited before the batch's
    offsets can be committed, so a failed send stops the worker instead of
    losing the message.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._messages: list[tuple[str, bytes | None, bytes | None, int | None, list[tuple[str, bytes]] | None]] = []
        # Tasks sharing an outbox hand their messages to the producer one after another, in the order they
        # were added: the labelled examples of one model must reach its partition in event-time order.
        self._enqueueing = asyncio.Lock()

    def add(self, topic: str, key: bytes | None, value: bytes | None,
            headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> None:
        self._messages.append((topic, key, value, partition, headers))

    async def send(self) -> None:
        async with self._enqueueing:
            messages, self._messages = self._messages, []
            producer = self._app.producer
            acks = [await producer.send(topic, key, value, partition, None, headers)
                    for topic, key, value, partition, headers in messages]
        await asyncio.gather(*acks)
