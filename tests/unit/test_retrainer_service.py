"""The retrainer service's labelled input: batches (MonitorBatch, only ``labelled`` filled), learnt example by example.

No Kafka: messages are handed to :meth:`RetrainerService.handle` as the consumer would, and the producer is a stub.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import streams.retrainer_app as retrainer_app
from retrainer.config import retrainer_config
from schemas.config import parse_monitor_config
from schemas.events import MAX_BATCH_ITEMS, LabelledExample, OutcomeEvent, PredictionEvent
from streams.processes import metric_value, registry_samples
from streams.retrainer_app import LABELLED_BATCH_BYTES, RetrainerMetrics, RetrainerService, replay_start
from streams.settings import load_settings
from streams.worker.messages import BATCH_BYTES, monitor_batches

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
MODELS = """\
models:
  asr: {task: classification, performance: {threshold: 0.85}}
  price: {task: regression, performance: {threshold: 2.0}}
"""


@dataclass
class FakeMessage:
    """What :meth:`RetrainerService.handle` reads of a confluent-kafka message."""

    _topic: str
    _value: bytes | None
    _offset: int
    _partition: int = 0

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value


class StubProducer:
    def __init__(self, _config: dict[str, Any]) -> None:
        pass


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RetrainerService:
    monkeypatch.setattr(retrainer_app, "Producer", StubProducer)
    settings = load_settings(retrainer_data_dir=tmp_path / "retrainer", topic_prefix="unit.")
    return RetrainerService(settings, retrainer_config(parse_monitor_config(MODELS)),
                            RetrainerMetrics(CollectorRegistry()))


def _example(i: int, model: str = "asr", actual: bool | float | str = True, padding: int = 0) -> LabelledExample:
    """An example of ``model``; ``padding`` adds that many 1,000-character features."""
    t = T0 + timedelta(seconds=i)
    prediction = PredictionEvent(prediction_id=f"{model}-{i}", model=model, model_version="1", event_time=t,
                                 features={"a": i / 10, **{f"note{k}": "x" * 1000 for k in range(padding)}},
                                 prediction=actual)
    return LabelledExample(prediction=prediction, outcome=OutcomeEvent(prediction_id=f"{model}-{i}", event_time=t,
                                                                       actual=actual))


def _batches(model: str, examples: list[LabelledExample]) -> list[bytes]:
    """What the worker's ingest writes to the labelled topic for one model and step."""
    return monitor_batches(model, [], [e.model_dump_json().encode() for e in examples])


def _feed(service: RetrainerService, values: list[bytes | None], first_offset: int = 0) -> None:
    topic = service.topics.labelled
    service.handle([FakeMessage(topic, v, first_offset + i) for i, v in enumerate(values)], T0)  # type: ignore[misc]


def _count(service: RetrainerService, name: str, **labels: str) -> float:
    return metric_value(registry_samples(service.metrics.registry), name, **labels)


def _skipped(service: RetrainerService, reason: str) -> float:
    return _count(service, "driftline_retrainer_messages_skipped_total", topic="labelled", reason=reason)


def test_the_limit_covers_what_the_worker_cuts_its_batches_under() -> None:
    assert LABELLED_BATCH_BYTES == BATCH_BYTES


def test_a_batch_of_three_examples_is_learnt_as_three_examples(service: RetrainerService) -> None:
    messages = _batches("asr", [_example(i) for i in range(3)])
    assert len(messages) == 1
    _feed(service, messages, first_offset=41)
    assert _count(service, "driftline_retrainer_examples_total", model="asr") == 3
    assert service.retrainer.n_buffered("asr") == 3
    # Positions stay per message: the next offset to commit is the one after the batch.
    assert service._positions == {(service.topics.labelled, 0): 42}
    # And its metric, what a test waits on before it reads a count as final.
    assert _count(service, "driftline_retrainer_position", topic="labelled", partition="0") == 42


def test_examples_are_learnt_in_order_across_the_batches_a_step_is_cut_into(service: RetrainerService) -> None:
    examples = [_example(i) for i in range(2 * MAX_BATCH_ITEMS + 5)]
    messages = _batches("asr", examples)
    assert len(messages) == 3
    _feed(service, messages)
    assert _count(service, "driftline_retrainer_examples_total", model="asr") == len(examples)
    holdout = service.retrainer._states["asr"].holdout
    assert [e.event_time for e in holdout] == [e.prediction.event_time for e in examples[-len(holdout):]]


def test_a_message_that_does_not_decode_is_skipped_with_its_kind(service: RetrainerService) -> None:
    single = _example(0).model_dump_json().encode()  # one example per message, the format before batches
    _feed(service, [b"\xff\xfe garbage", b'{"model": "asr", "labelled": [{"x": NaN}]}', single, None,
                    *_batches("asr", [_example(1)])])
    assert _skipped(service, "not_json") == 1
    assert _skipped(service, "non_finite") == 1
    assert _skipped(service, "schema") == 2  # the single example, and the tombstone
    assert _count(service, "driftline_retrainer_examples_total", model="asr") == 1, "the next batch is still learnt"
    assert service._positions == {(service.topics.labelled, 0): 5}


def test_an_oversized_message_is_skipped(service: RetrainerService) -> None:
    limit = service._max_batch_bytes
    big = b'{"model": "asr", "labelled": []' + b" " * limit + b"}"
    _feed(service, [big])
    assert _skipped(service, "oversized") == 1
    assert _count(service, "driftline_retrainer_examples_total", model="asr") == 0


def test_a_full_batch_the_worker_writes_is_within_the_limit(service: RetrainerService) -> None:
    examples = [_example(i, padding=2) for i in range(600)]  # ~2.1 kB each: cut by bytes, not by count
    messages = _batches("asr", examples)
    assert len(messages) >= 2 and max(len(m) for m in messages) > BATCH_BYTES * 0.9
    _feed(service, messages)
    # Nothing was skipped: the family is registered (a renamed metric would fail here) and has no series at all.
    families = {family.name: family for family in service.metrics.registry.collect()}
    assert families["driftline_retrainer_messages_skipped"].samples == []
    assert _count(service, "driftline_retrainer_examples_total", model="asr") == 600


def test_unknown_models_and_unlearnable_examples_are_counted_per_example(service: RetrainerService) -> None:
    unknown = _batches("ghost", [_example(i, model="ghost") for i in range(4)])
    # A string cannot be a regression target: the middle example is skipped, the others are learnt.
    price = _batches("price", [_example(0, "price", 1.5), _example(1, "price", "high"), _example(2, "price", 2.5)])
    _feed(service, unknown + price)
    assert _skipped(service, "unknown_model") == 4
    assert _skipped(service, "bad_example") == 1
    assert _count(service, "driftline_retrainer_examples_total", model="price") == 2
    assert service.retrainer.n_buffered("price") == 2


class CountsBetween:
    """``counts_between`` over a partition whose message at offset ``o`` holds ``sizes[o - low]`` examples."""

    def __init__(self, sizes: list[int], low: int = 0) -> None:
        self.sizes, self.low = sizes, low
        self.asked: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> list[tuple[int, int]]:
        self.asked.append((start, end))
        return [(o, self.sizes[o - self.low]) for o in range(start, end)]


def test_replay_finds_the_batch_from_which_enough_examples_follow() -> None:
    dense = CountsBetween([1000] * 50)
    assert replay_start(dense, 0, 50, 5000) == 45  # five batches, not 5,000 messages
    assert dense.asked == [(42, 50)], "one window read"
    assert replay_start(dense, 0, 50, 4500) == 45, "whole batches: up to one batch more"
    sparse = CountsBetween([1] * 10_000, low=100)
    assert replay_start(sparse, 100, 10_100, 5000) == 5100
    assert [end - start for start, end in sparse.asked] == [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    # Messages that do not decode hold no examples; a short partition replays from its first offset.
    mixed = CountsBetween([3, 0, 0, 3, 0, 3], low=7)
    assert replay_start(mixed, 7, 13, 6) == 10
    assert replay_start(mixed, 7, 13, 100) == 7
    assert replay_start(mixed, 7, 13, 0) == 13


def test_an_external_champion_it_cannot_load_makes_the_model_triggers_only(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from retrainer.config import open_registry, open_store
    from schemas.events import ModelVersion, RetrainTrigger

    data_dir = tmp_path / "retrainer"
    stored = open_store(data_dir).save({"sklearn": "not a river model"}, "asr", "1")
    open_registry(data_dir).record([ModelVersion(model="asr", version="1", status="promoted", created_at=T0,
                                                 artifact_uri=stored.uri, sha256=stored.sha256,
                                                 lineage={"origin": "external"})])
    monkeypatch.setattr(retrainer_app, "Producer", StubProducer)
    metrics = RetrainerMetrics(CollectorRegistry())
    service = RetrainerService(load_settings(retrainer_data_dir=data_dir, topic_prefix="unit."),
                               retrainer_config(parse_monitor_config(MODELS)), metrics)
    assert service.retrainer.champion("asr") is None
    service._refresh_gauges()
    trigger = RetrainTrigger(trigger_id="t-1", model="asr", reason="performance_decay", data_from=T0, event_time=T0)
    records = service.handle([FakeMessage(service.topics.labelled, monitor_batches("asr", [], [_example(1).model_dump_json().encode()])[0], 0),
                              FakeMessage(service.topics.retrain, trigger.model_dump_json().encode(), 0)], T0)
    assert records == []
    samples = registry_samples(metrics.registry)
    assert metric_value(samples, "driftline_retrainer_triggers_only", model="asr") == 1
    assert metric_value(samples, "driftline_retrainer_triggers_only", model="price") == 0
    assert metric_value(samples, "driftline_retrainer_messages_skipped_total", topic="retrain", reason="triggers_only") == 1
