"""The CloudEvents attributes of the events Driftline publishes (alerts, retrain triggers, model versions)."""

from __future__ import annotations

from datetime import datetime

__all__ = ["cloudevents_headers"]


def cloudevents_headers(source: str, event_id: str, event_type: str, event_time: datetime) -> list[tuple[str, bytes]]:
    """The Kafka headers of one event in the CloudEvents Kafka binding's binary mode.

    The event's JSON travels as the message value and its attributes as ``ce_*`` headers, so that
    CloudEvents consumers route on headers without parsing the value.

    >>> from datetime import timezone
    >>> headers = cloudevents_headers("urn:x", "a1", "dev.x.alert", datetime(2026, 1, 1, tzinfo=timezone.utc))
    >>> dict(headers)["ce_type"], dict(headers)["ce_time"]
    (b'dev.x.alert', b'2026-01-01T00:00:00+00:00')
    """
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_type", event_type.encode()),
        ("ce_source", source.encode()),
        ("ce_time", event_time.isoformat().encode()),
        ("content-type", b"application/json"),
    ]
