"""Where the worker's messages came from, and the bytes and headers of the ones it writes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

from schemas.decoding import Rejection
from schemas.events import MAX_BATCH_ITEMS

__all__ = [
    "BATCH_BYTES",
    "CLOUDEVENTS_SOURCE",
    "MessageRef",
    "SourceRef",
    "dead_letter_headers",
    "monitor_batches",
    "split_batches",
    "murmur2",
    "partition_of",
    "source_ref",
]

# Monitor-input messages stay well under the producer's 1 MB request limit.
BATCH_BYTES = 512 * 1024
CLOUDEVENTS_SOURCE = "urn:driftline:worker"


class SourceRef(NamedTuple):
    """Where a raw value came from, for its dead-letter headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


def source_ref(event: Any) -> SourceRef:
    """The :class:`SourceRef` of a Faust event."""
    message = event.message
    return SourceRef(message.topic, message.partition, message.offset, message.key)


class MessageRef(NamedTuple):
    """Where a monitor-input message was read: its items are acked and checkpointed by it."""

    partition: int
    offset: int


def monitor_batches(model: str | None, predictions: Sequence[bytes], labelled: Sequence[bytes]) -> list[bytes]:
    """A share of an ingest batch (its items' JSON) as messages, each under ``BATCH_BYTES``: one model's (the
    labelled topic), or, with ``model`` None, those of every model of one monitor-input partition.

    The items' JSON is joined by hand: building a MonitorBatch would validate every item once more.
    """
    return [message for message, _n_predictions, _n_labelled in split_batches(model, predictions, labelled)]


def split_batches(model: str | None, predictions: Sequence[bytes],
                  labelled: Sequence[bytes]) -> list[tuple[bytes, int, int]]:
    """:func:`monitor_batches`, each message with how many predictions and labelled examples it carries, in
    order: the first message has the first items, and so on.

    >>> [(n_p, n_l) for _, n_p, n_l in split_batches("m", [b'{}'] * 3, [b'{}'] * 1500)]
    [(3, 997), (0, 503)]
    """
    head = b"" if model is None else b'"model":%s,' % json.dumps(model).encode()
    messages: list[tuple[bytes, int, int]] = []
    parts: dict[str, list[bytes]] = {"predictions": [], "labelled": []}
    size = 0

    def cut() -> None:
        nonlocal size
        if parts["predictions"] or parts["labelled"]:
            body = b",".join(b'"%s":[%s]' % (name.encode(), b",".join(items)) for name, items in parts.items())
            messages.append((b"{%s%s}" % (head, body), len(parts["predictions"]), len(parts["labelled"])))
        parts["predictions"], parts["labelled"], size = [], [], 0

    for name, items in (("predictions", predictions), ("labelled", labelled)):
        for blob in items:
            if size + len(blob) > BATCH_BYTES or len(parts["predictions"]) + len(parts["labelled"]) >= MAX_BATCH_ITEMS:
                cut()
            parts[name].append(blob)
            size += len(blob)
    cut()
    return messages


def dead_letter_headers(ref: SourceRef, rejection: Rejection, stage: str) -> list[tuple[str, bytes]]:
    """Why and where from a value was dead-lettered, as headers: the value itself goes unchanged."""
    return [
        ("driftline_reason", rejection.reason.encode()),
        ("driftline_reason_kind", rejection.kind.encode()),
        ("driftline_stage", stage.encode()),
        ("driftline_source_topic", ref.topic.encode()),
        ("driftline_source_partition", str(ref.partition).encode()),
        ("driftline_source_offset", str(ref.offset).encode()),
        ("driftline_dead_lettered_at", datetime.now(timezone.utc).isoformat().encode()),
    ]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``Utils.murmur2`` of its Java client), as an unsigned 32-bit number.

    >>> [murmur2(s.encode()) - (1 << 32) * (murmur2(s.encode()) >> 31) for s in ("21", "foobar", "abc")]
    [-973932308, -790332482, 479470107]
    """
    m = 0x5BD1E995
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) // 4
    for i in range(whole):
        k = (int.from_bytes(data[4 * i:4 * i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[4 * whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_of(key: bytes, n_partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's, librdkafka's ``murmur2_random``) gives ``key``.

    >>> partition_of(b"speech-asr", 4) == partition_of(b"speech-asr", 4), partition_of(b"foobar", 1)
    (True, 0)
    """
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions
