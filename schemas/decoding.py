"""Decoding raw Kafka values at the boundary: an event, or a rejection with its reason."""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

__all__ = ["Rejection", "RejectionKind", "decode"]

T = TypeVar("T")
RejectionKind = Literal["oversized", "not_json", "non_finite", "schema", "duplicate", "unscorable"]


@dataclass(frozen=True)
class Rejection:
    """Why a value was refused: a short kind for metrics and a reason for people."""

    kind: RejectionKind
    reason: str


def decode(adapter: TypeAdapter[T], raw: bytes | None, max_bytes: int) -> T | Rejection:
    """Validate one raw value against the adapter's type.

    >>> from schemas.events import OutcomeEvent
    >>> adapter = TypeAdapter(OutcomeEvent)
    >>> decode(adapter, b'{"prediction_id": "p", "event_time": "2026-01-01T00:00:00Z", "actual": 1}', 1024).actual
    1
    >>> decode(adapter, b'\\xff\\xfe', 1024).kind
    'not_json'
    >>> decode(adapter, b'{"prediction_id": "p", "event_time": "2026-01-01T00:00:00Z", "actual": NaN}', 1024).kind
    'non_finite'
    >>> print(decode(adapter, b'{"prediction_id": "p"}', 1024).reason)
    event_time: Field required; actual: Field required
    """
    if raw is None:
        return Rejection("schema", "empty value (tombstone)")
    if len(raw) > max_bytes:
        return Rejection("oversized", f"value of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        types = {err["type"] for err in errors}
        if "json_invalid" in types or "json_type" in types:
            return Rejection("not_json", f"not valid JSON: {errors[0]['msg']}")
        # A non-finite number fails every branch of a union; report it as such.
        if any("finite" in err["type"] or _non_finite(err.get("input")) for err in errors):
            return Rejection("non_finite", "non-finite number (NaN or infinity): " + _summary(errors))
        return Rejection("schema", _summary(errors))


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _summary(errors: list[Any]) -> str:
    seen: dict[str, str] = {}
    for err in errors:
        # Each member of a union reports the same field with its type's tag
        # appended; drop that one trailing tag and keep the first message per field.
        parts = list(err["loc"])
        if len(parts) > 1 and _is_union_branch(parts[-1]):
            parts.pop()
        loc = ".".join(str(p) for p in parts) or "<root>"
        seen.setdefault(loc, err["msg"])
    text = "; ".join(f"{loc}: {msg}" for loc, msg in seen.items())
    return text[:1000]


def _is_union_branch(part: object) -> bool:
    return isinstance(part, str) and (
        part in {"bool", "int", "float", "str", "none"} or part.startswith(("function-", "constrained-", "list[", "dict["))
    )
