"""Our partition of a key is the one librdkafka's murmur2_random partitioner (Java's default) gives it."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.settings import load_settings
from streams.worker.messages import partition_of

pytestmark = pytest.mark.integration


def test_partition_of_matches_the_kafka_partitioner(kafka_bootstrap: str) -> None:
    topic, n_partitions = f"partitioner-{uuid.uuid4().hex[:8]}", 7
    admin = AdminClient(load_settings(kafka_bootstrap=kafka_bootstrap).confluent_config())
    admin.create_topics([NewTopic(topic, n_partitions, 1)])[topic].result()
    producer = Producer({**load_settings(kafka_bootstrap=kafka_bootstrap).confluent_config(), "partitioner": "murmur2_random"})
    placed: dict[bytes, int] = {}
    keys = [f"models1000-{i:04d}".encode() for i in range(200)] + [b"speech-asr", b"a", b"ab", b"abc"]
    for key in keys:
        producer.produce(topic, b"x", key, on_delivery=lambda err, msg: placed.__setitem__(msg.key(), msg.partition()))
    assert producer.flush(30) == 0
    assert len(set(placed.values())) == n_partitions, "the keys should spread over every partition"
    assert placed == {key: partition_of(key, n_partitions) for key in keys}
