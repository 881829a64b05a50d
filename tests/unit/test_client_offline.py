"""PredictionLogger with no broker at all: it must never block and never raise.

These use the real librdkafka pointed at a closed loopback port (127.0.0.1:1).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from schemas.events import OutcomeEvent, PredictionEvent
from streams.client import PredictionLogger

CLOSED = {"bootstrap.servers": "127.0.0.1:1"}
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def prediction(i: int) -> dict[str, object]:
    return {"prediction_id": f"p{i}", "model": "asr", "model_version": "1", "event_time": T0, "prediction": "yes"}


@pytest.fixture
def logger() -> Iterator[PredictionLogger]:
    lg = PredictionLogger(CLOSED, max_buffered=5, delivery_timeout_seconds=0.5)
    yield lg
    # Drop what is still queued so the producer is destroyed at once with an empty queue.
    lg._producer.purge()
    lg.flush(1.0)


def test_full_buffer_drops_and_counts_without_blocking(logger: PredictionLogger) -> None:
    started = time.perf_counter()
    accepted = [logger.log_prediction(prediction(i)) for i in range(200)]
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"logging 200 events with the broker down took {elapsed:.2f}s"
    assert accepted[:5] == [True] * 5
    assert not any(accepted[5:])
    assert logger.stats.n_accepted == 5
    assert logger.stats.n_dropped_buffer_full == 195
    assert logger.stats.n_invalid == 0


def test_outcomes_share_the_bounded_buffer(logger: PredictionLogger) -> None:
    for i in range(3):
        assert logger.log_prediction(PredictionEvent.model_validate(prediction(i)))
    outcomes = [logger.log_outcome(OutcomeEvent(prediction_id=f"p{i}", event_time=T0, actual="yes")) for i in range(5)]
    assert outcomes == [True, True, False, False, False]
    assert (logger.stats.n_accepted, logger.stats.n_dropped_buffer_full) == (5, 3)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {**prediction(0), "confidence": float("nan")},
        {**prediction(0), "confidence": 1.5},
        {**prediction(0), "event_time": datetime(2026, 1, 1)},  # naive
        {**prediction(0), "unknown": 1},
        {**prediction(0), "model": ""},
        "not a dict",
        None,
        42,
    ],
)
def test_invalid_events_are_counted_not_raised(logger: PredictionLogger, bad: object) -> None:
    assert logger.log_prediction(bad) is False  # type: ignore[arg-type]
    assert logger.log_outcome(bad) is False  # type: ignore[arg-type]
    assert logger.stats.n_invalid == 2
    assert logger.stats.n_accepted == 0 and logger.stats.n_dropped_buffer_full == 0


def test_undeliverable_events_fail_after_the_delivery_timeout(logger: PredictionLogger) -> None:
    for i in range(3):
        assert logger.log_prediction(prediction(i))
    assert logger.stats.n_in_flight == 3
    started = time.perf_counter()
    remaining = logger.flush(5.0)
    assert time.perf_counter() - started < 4.0
    assert remaining == 0
    assert (logger.stats.n_failed, logger.stats.n_delivered, logger.stats.n_in_flight) == (3, 0, 0)


def test_close_is_bounded_by_its_timeout() -> None:
    lg = PredictionLogger(CLOSED, max_buffered=10, delivery_timeout_seconds=30.0)
    assert lg.log_prediction(prediction(0))
    started = time.perf_counter()
    lg.close(timeout=0.3)
    assert time.perf_counter() - started < 2.0
    lg._producer.purge()  # so that destroying the producer does not wait on the 30 s timeout
    lg.flush(1.0)


def test_an_oversized_valid_event_does_not_raise(logger: PredictionLogger) -> None:
    big = PredictionEvent(
        prediction_id="big", model="asr", model_version="1", event_time=T0, prediction=1,
        features={f"f{i}": "\x00" * 1024 for i in range(256)},
    )
    assert len(big.model_dump_json()) > 1_000_000
    assert logger.log_prediction(big) is False


def test_a_prediction_given_as_an_outcome_is_invalid(logger: PredictionLogger) -> None:
    assert logger.log_outcome(PredictionEvent.model_validate(prediction(0))) is False  # type: ignore[arg-type]
    assert logger.stats.n_invalid == 1


def test_a_dict_in_wire_format_is_accepted(logger: PredictionLogger) -> None:
    assert logger.log_prediction({**prediction(0), "event_time": "2026-01-01T00:00:00Z"}) is True
