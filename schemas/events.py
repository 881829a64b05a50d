"""Version 1 of the event contract: what apps publish and what Driftline emits.

Every model is frozen and strict: unknown fields are rejected, numbers must be
finite, and strings and maps are bounded so that one bad producer cannot blow up
a worker's memory.  A new optional field may be added within a version; any
other change means a new ``schema_version``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Literal

import re

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import core_schema

__all__ = [
    "Alert",
    "AlertKind",
    "AlertStatus",
    "FeatureValue",
    "LabelledExample",
    "Label",
    "MonitorBatch",
    "ModelVersion",
    "OutcomeEvent",
    "PredictionEvent",
    "RetrainReason",
    "RetrainTrigger",
    "Severity",
    "deterministic_id",
]

MAX_FEATURES = 256
MAX_CLASSES = 1000

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# A pattern's "$" also matches before a final newline in Python's re (which jsonschema uses), not in pydantic's
# Rust regex nor in ECMA-262, which JSON Schema specifies: "not" says so for every validator.
_NO_NEWLINE = {"not": {"pattern": "\n"}}
# Names become Prometheus label values and Kafka keys: keep them short and tame.
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"),
                 Field(json_schema_extra=_NO_NEWLINE)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ShortText = Annotated[str, StringConstraints(max_length=1024)]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
FeatureValue = bool | int | FiniteFloat | ShortText | None
# A label or a regression target: a class name, a class index, a flag or a number.
Label = bool | int | FiniteFloat | Annotated[str, StringConstraints(min_length=1, max_length=256)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

#: RFC 3339's date-time, which JSON Schema's "date-time" format names, its offset required and its letters upper-case
#: (as the rfc3339-validator package that jsonschema uses wants them).  pydantic alone also takes "2026-01-01 09:00Z",
#: "+0000" offsets and times without seconds, which standard validators refuse.
RFC3339_DATE_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
_RFC3339 = re.compile(RFC3339_DATE_TIME)
_NOT_RFC3339 = "not an RFC 3339 date-time with a time zone, e.g. 2026-01-01T09:00:00Z"


def _rfc3339_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not _RFC3339.fullmatch(value):
        raise ValueError(_NOT_RFC3339)
    # Parsed here (C code, a third of a microsecond): past a validator the value is Python, where strict mode
    # takes no str.  Beyond 6 digits, fractions of a second are cut, as Python's datetime holds no more.
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not a valid date-time: {exc}") from None


def _json_integer(value: Any) -> Any:
    # JSON Schema's "integer" is any number with no fractional part (1.0 too), but never true or false; strict
    # pydantic would take true (True == 1 in Python) for Literal[1] and refuse 1.0.
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _RFC3339Text:
    """An aware datetime that JSON gives as RFC 3339 text: checked and parsed in pydantic-core, no Python call.

    From JSON (every event read from Kafka), the text must match :data:`RFC3339_DATE_TIME` and is then parsed by
    pydantic-core: 0.27 µs a timestamp, against 0.98 µs through :func:`_rfc3339_text` (a Python call per
    value, and Python's regex); both accept and refuse the same texts (tests/unit/test_jsonschema_contract.py).
    From Python, :func:`_rfc3339_text` still checks text, and datetimes pass as they are.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        aware = handler(source)
        from_json = core_schema.chain_schema([
            core_schema.custom_error_schema(core_schema.str_schema(pattern=RFC3339_DATE_TIME, strict=True),
                                            custom_error_type="rfc3339", custom_error_message=_NOT_RFC3339),
            # Text, once matched, is parsed (lax: strict takes no text); the pattern leaves no naive time through.
            core_schema.datetime_schema(strict=False, tz_constraint="aware"),
        ])
        return core_schema.json_or_python_schema(
            json_schema=from_json, python_schema=core_schema.no_info_before_validator_function(_rfc3339_text, aware))


#: An event time: timezone-aware, and written in RFC 3339 (as JSON Schema's "date-time" and Python's isoformat()).
Timestamp = Annotated[AwareDatetime, _RFC3339Text, WithJsonSchema(
    {"type": "string", "format": "date-time", "pattern": RFC3339_DATE_TIME, **_NO_NEWLINE})]
Version1 = Annotated[Literal[1], BeforeValidator(_json_integer)]
Count = Annotated[int, Field(ge=0), BeforeValidator(_json_integer)]

#: The two sides of the join: a prediction, and its outcome (the ground truth).
Side = Literal["prediction", "outcome"]
SIDES: tuple[Side, Side] = ("prediction", "outcome")


def other_side(side: Side) -> Side:
    """The side a ``side`` event waits for.

    >>> other_side("prediction")
    'outcome'
    """
    return "outcome" if side == "prediction" else "prediction"


AlertStatus = Literal["fired", "resolved"]
AlertKind = Literal["performance_decay", "drift", "outlier"]
Severity = Literal["info", "warning", "critical"]
RetrainReason = Literal["performance_decay", "drift", "schedule", "volume", "manual"]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class PredictionEvent(_Event):
    """One prediction made by a model in production.

    >>> e = PredictionEvent.model_validate_json(
    ...     '{"prediction_id": "u-1", "model": "asr", "model_version": "3",'
    ...     ' "event_time": "2026-01-01T00:00:00Z", "features": {"snr_db": 21.5},'
    ...     ' "prediction": "hello", "confidence": 0.93, "segment": "en-GB"}')
    >>> e.model, e.features["snr_db"], e.schema_version
    ('asr', 21.5, 1)
    """

    schema_version: Version1 = 1
    prediction_id: Identifier
    model: Name
    model_version: Name
    event_time: Timestamp
    features: Annotated[dict[FeatureName, FeatureValue], Field(max_length=MAX_FEATURES)] = Field(default_factory=dict)
    prediction: Label
    probabilities: Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=256)], Probability], Field(max_length=MAX_CLASSES)] | None = None
    confidence: Probability | None = None
    segment: Name | None = None


class OutcomeEvent(_Event):
    """The ground truth for one earlier prediction, which may arrive first."""

    schema_version: Version1 = 1
    prediction_id: Identifier
    event_time: Timestamp
    actual: Label


class LabelledExample(_Event):
    """A prediction joined with its outcome: what monitors and the retrainer learn from."""

    schema_version: Version1 = 1
    prediction: PredictionEvent
    outcome: OutcomeEvent

    @cached_property
    def completed_at(self) -> datetime:
        """When the example was complete: the later of its prediction's and its outcome's event times.

        Cached: the join, both ordering stages and the monitors ask for it (an example is frozen).
        """
        return max(self.prediction.event_time, self.outcome.event_time)


MAX_BATCH_ITEMS = 1000


class MonitorBatch(_Event):
    """Internal (the monitor-input and labelled topics): one ingest step's items, or a watermark.

    On the monitor-input topic a batch message carries the predictions and
    labelled examples of every model of its partition (``model`` unset; a
    model's partition is the one Kafka's default partitioner gives its name),
    each model's in event-time order.  The labelled topic, which the retrainer
    reads, carries one model's labelled examples a message (``model`` set),
    keyed by the model.  A watermark message (no items) goes to every
    monitor-input partition and says, for each source partition
    ("prediction/3", "outcome/3") its sender reads, that everything up to that
    event time has been sent: the monitor stage merges the batches of several
    ingest workers back into one event-time order with it.  Those it names
    ``settled`` are read to their end and quiet: the merge need not wait for
    them (as it would, ``join_idle_seconds``, for a source that stopped
    announcing).
    """

    schema_version: Version1 = 1
    model: Name | None = None
    predictions: Annotated[list[PredictionEvent], Field(max_length=MAX_BATCH_ITEMS)] = Field(default_factory=list)
    labelled: Annotated[list[LabelledExample], Field(max_length=MAX_BATCH_ITEMS)] = Field(default_factory=list)
    watermarks: Annotated[dict[Annotated[str, StringConstraints(max_length=64)], Timestamp], Field(max_length=10_000)] = Field(default_factory=dict)
    #: Of the watermarks' source partitions, those the sender has read to their end and sent all of: they
    #: hold nothing back until announced again without this.
    settled: Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=10_000)] = Field(default_factory=list)


class Alert(_Event):
    """A monitor's verdict on one model, fired once and resolved once per episode."""

    schema_version: Version1 = 1
    alert_id: Identifier
    status: AlertStatus
    kind: AlertKind
    severity: Severity
    model: Name
    model_version: Name | None = None
    segment: Name | None = None
    monitor: Name
    detector: Name
    feature: FeatureName | None = Field(default=None, description="The feature a drift, outlier or trend alert is about.")
    statistic: FiniteFloat
    threshold: FiniteFloat
    event_time: Timestamp = Field(description="Event time of the event that triggered this status change.")
    episode_id: Identifier = Field(description="Shared by the fired alert and the resolved alert that closes it.")
    message: ShortText


class RetrainTrigger(_Event):
    """A request to the retrainer to train a challenger for one model."""

    schema_version: Version1 = 1
    trigger_id: Identifier
    model: Name
    reason: RetrainReason
    alert_ids: Annotated[list[Identifier], Field(max_length=100)] = Field(default_factory=list)
    data_from: Timestamp = Field(description="Train on examples with event time at or after this.")
    event_time: Timestamp
    message: ShortText = ""


class ModelVersion(_Event):
    """One registered version of a model and its lineage."""

    schema_version: Version1 = 1
    model: Name
    version: Name
    status: Literal["candidate", "promoted", "rejected", "rolled_back"]
    parent_version: Name | None = None
    trigger_id: Identifier | None = None
    alert_ids: Annotated[list[Identifier], Field(max_length=100)] = Field(default_factory=list)
    created_at: Timestamp
    data_from: Timestamp | None = None
    data_to: Timestamp | None = None
    n_examples: Count = 0
    metrics: Annotated[dict[Name, FiniteFloat], Field(max_length=64)] = Field(default_factory=dict)
    artifact_uri: ShortText | None = None
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    reason: ShortText = ""
    lineage: Annotated[dict[Name, ShortText], Field(max_length=64)] = Field(
        default_factory=dict,
        description="How the version was made: learner kind and parameters, library versions.",
    )


def deterministic_id(*parts: Any) -> str:
    """A stable id from the parts, so a replay after a crash reproduces the same id.

    >>> deterministic_id("asr", "accuracy", 42) == deterministic_id("asr", "accuracy", 42)
    True
    >>> len(deterministic_id("x"))
    32
    """
    joined = "\x1f".join(p.isoformat() if isinstance(p, datetime) else str(p) for p in parts)
    return hashlib.sha256(joined.encode()).hexdigest()[:32]
