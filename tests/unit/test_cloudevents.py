"""The CloudEvents Kafka binding (binary mode) headers that alerts, retrain triggers and model versions carry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from streams.cloudevents import cloudevents_headers

EVENT_TIME = datetime(2026, 3, 1, 12, 30, 5, 250_000, tzinfo=timezone(timedelta(hours=2)))


def test_headers_carry_every_required_attribute_once_as_utf8() -> None:
    headers = cloudevents_headers("urn:driftline:worker", "alert-7f3e", "dev.driftline.alert.fired", EVENT_TIME)
    names = [name for name, _ in headers]
    assert len(names) == len(set(names)), "a header repeated is ambiguous to CloudEvents consumers"
    assert dict(headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"alert-7f3e",
        "ce_type": b"dev.driftline.alert.fired",
        "ce_source": b"urn:driftline:worker",
        # RFC 3339, offset kept: the binding carries the time as the event stated it
        "ce_time": b"2026-03-01T12:30:05.250000+02:00",
        "content-type": b"application/json",
    }
    assert all(isinstance(value, bytes) for _, value in headers)


def test_the_time_header_parses_back_to_the_same_instant() -> None:
    headers = dict(cloudevents_headers("urn:x", "id", "dev.driftline.retrain", EVENT_TIME))
    assert datetime.fromisoformat(headers["ce_time"].decode()) == EVENT_TIME


def test_non_ascii_ids_and_sources_are_utf8_encoded() -> None:
    headers = dict(cloudevents_headers("urn:driftline:modèle", "é-1", "dev.driftline.alert.resolved", EVENT_TIME))
    assert headers["ce_id"].decode("utf-8") == "é-1"
    assert headers["ce_source"].decode("utf-8") == "urn:driftline:modèle"
