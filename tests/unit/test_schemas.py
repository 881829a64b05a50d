"""Event contract: round trips, rejections, boundary decoding and the checked-in JSON Schema."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.decoding import Rejection, decode
from schemas.events import (
    MAX_FEATURES,
    Alert,
    LabelledExample,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    RetrainTrigger,
    deterministic_id,
)
from schemas.jsonschema_export import SCHEMA_MODELS, export_json_schemas, render_json_schemas, stale_json_schemas

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"
PREDICTION = TypeAdapter(PredictionEvent)
OUTCOME = TypeAdapter(OutcomeEvent)

# ---------------------------------------------------------------- strategies

_NAME_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
names = st.builds(
    lambda a, b: a + b,
    st.sampled_from(_NAME_FIRST),
    st.text(alphabet=_NAME_FIRST + "._:/-", max_size=127),
)
identifiers = st.text(min_size=1, max_size=256)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
aware = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
)
finite = st.floats(allow_nan=False, allow_infinity=False)
labels = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), finite, st.text(min_size=1, max_size=256))
feature_values = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), finite, st.text(max_size=1024), st.none()
)
probabilities = st.floats(0.0, 1.0)

predictions = st.builds(
    PredictionEvent,
    prediction_id=identifiers,
    model=names,
    model_version=names,
    event_time=aware,
    features=st.dictionaries(st.text(min_size=1, max_size=128), feature_values, max_size=20),
    prediction=labels,
    probabilities=st.none() | st.dictionaries(st.text(min_size=1, max_size=256), probabilities, max_size=10),
    confidence=st.none() | probabilities,
    segment=st.none() | names,
)
outcomes = st.builds(OutcomeEvent, prediction_id=identifiers, event_time=aware, actual=labels)
labelled = st.builds(LabelledExample, prediction=predictions, outcome=outcomes)
alerts = st.builds(
    Alert,
    alert_id=identifiers,
    status=st.sampled_from(["fired", "resolved"]),
    kind=st.sampled_from(["performance_decay", "drift", "outlier"]),
    severity=st.sampled_from(["info", "warning", "critical"]),
    model=names,
    model_version=st.none() | names,
    segment=st.none() | names,
    monitor=names,
    detector=names,
    statistic=finite,
    threshold=finite,
    event_time=aware,
    episode_id=identifiers,
    message=st.text(max_size=1024),
)
triggers = st.builds(
    RetrainTrigger,
    trigger_id=identifiers,
    model=names,
    reason=st.sampled_from(["performance_decay", "drift", "schedule", "volume", "manual"]),
    alert_ids=st.lists(identifiers, max_size=5),
    data_from=aware,
    event_time=aware,
    message=st.text(max_size=1024),
)
versions = st.builds(
    ModelVersion,
    model=names,
    version=names,
    status=st.sampled_from(["candidate", "promoted", "rejected", "rolled_back"]),
    parent_version=st.none() | names,
    trigger_id=st.none() | identifiers,
    alert_ids=st.lists(identifiers, max_size=5),
    created_at=aware,
    data_from=st.none() | aware,
    data_to=st.none() | aware,
    n_examples=st.integers(0, 10**12),
    metrics=st.dictionaries(names, finite, max_size=5),
    artifact_uri=st.none() | st.text(max_size=1024),
    sha256=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    reason=st.text(max_size=1024),
)

ANY_EVENT = st.one_of(predictions, outcomes, labelled, alerts, triggers, versions)


def _valid_prediction(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "prediction_id": "p-1",
        "model": "asr",
        "model_version": "3",
        "event_time": "2026-01-01T00:00:00Z",
        "features": {"snr_db": 21.5},
        "prediction": "hello",
        "confidence": 0.9,
    }
    base.update(changes)
    return base


def _raw(doc: dict[str, object]) -> bytes:
    return json.dumps(doc).encode()


# ---------------------------------------------------------------- round trips


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_EVENT)
def test_every_event_round_trips_through_json(event: BaseModel) -> None:
    text = event.model_dump_json()
    again = type(event).model_validate_json(text)
    assert again == event
    # Same value types as well: a bool label must not come back as an int, nor 1.0 as 1.
    assert again.model_dump_json() == text


@settings(max_examples=50, deadline=None)
@given(predictions)
def test_prediction_round_trips_through_decode(event: PredictionEvent) -> None:
    raw = event.model_dump_json().encode()
    assert decode(PREDICTION, raw, len(raw)) == event


def test_label_types_are_kept() -> None:
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for actual in (True, 1, 1.0, "1"):
        back = OutcomeEvent.model_validate_json(OutcomeEvent(prediction_id="p", event_time=t, actual=actual).model_dump_json())
        assert type(back.actual) is type(actual), actual


# ---------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "change",
    [
        {"event_time": "2026-01-01T00:00:00"},  # naive
        {"unexpected": 1},
        {"features": {f"f{i}": i for i in range(MAX_FEATURES + 1)}},
        {"prediction_id": "x" * 257},
        {"model": "m" * 129},
        {"model": "bad name"},
        {"features": {"long": "x" * 1025}},
        {"features": {"x" * 129: 1}},
        {"confidence": 1.0000001},
        {"confidence": -0.1},
        {"probabilities": {"yes": 1.2}},
        {"segment": ""},
        {"schema_version": 2},
        {"prediction": ""},
        {"prediction": [1, 2]},
        {"features": {"nested": {"a": 1}}},
        {"confidence": "0.9"},  # strict: no string-to-number coercion
    ],
)
def test_prediction_rejects(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PredictionEvent.model_validate_json(_raw(_valid_prediction(**change)))
    result = decode(PREDICTION, _raw(_valid_prediction(**change)), 10**7)
    assert isinstance(result, Rejection) and result.kind == "schema", result


def test_limits_are_inclusive() -> None:
    doc = _valid_prediction(
        features={f"f{i}": i for i in range(MAX_FEATURES)},
        prediction_id="x" * 256,
        model="m" * 128,
        confidence=1.0,
        probabilities={"yes": 1.0, "no": 0.0},
    )
    event = PredictionEvent.model_validate_json(_raw(doc))
    assert len(event.features) == MAX_FEATURES


def test_naive_datetime_rejected_in_python_too() -> None:
    with pytest.raises(ValidationError):
        OutcomeEvent(prediction_id="p", event_time=datetime(2026, 1, 1), actual=1)


def test_events_are_frozen() -> None:
    event = PredictionEvent.model_validate_json(_raw(_valid_prediction()))
    with pytest.raises(ValidationError):
        event.model = "other"  # type: ignore[misc]


NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e999"]


@pytest.mark.parametrize("token", NON_FINITE)
@pytest.mark.parametrize(
    "template",
    [
        b'"features": {"snr_db": %s}',
        b'"prediction": %s',
        b'"confidence": %s',
        b'"probabilities": {"yes": %s}',
    ],
)
def test_non_finite_numbers_are_rejected_as_such(template: bytes, token: bytes) -> None:
    raw = (
        b'{"prediction_id": "p", "model": "m", "model_version": "1", "event_time": "2026-01-01T00:00:00Z", '
        + (template % token)
        + (b"" if template.startswith(b'"prediction"') else b', "prediction": 1')
        + b"}"
    )
    result = decode(PREDICTION, raw, 4096)
    assert isinstance(result, Rejection)
    assert result.kind == "non_finite", result


@pytest.mark.parametrize("token", NON_FINITE)
def test_non_finite_outcome_rejected(token: bytes) -> None:
    raw = b'{"prediction_id": "p", "event_time": "2026-01-01T00:00:00Z", "actual": %s}' % token
    result = decode(OUTCOME, raw, 4096)
    assert isinstance(result, Rejection) and result.kind == "non_finite"


def test_non_finite_rejected_in_python_construction() -> None:
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            PredictionEvent(prediction_id="p", model="m", model_version="1", event_time=t, prediction=1, features={"x": bad})
        with pytest.raises(ValidationError):
            Alert(alert_id="a", status="fired", kind="drift", severity="info", model="m", monitor="p", detector="d",
                  statistic=bad, threshold=0.0, event_time=t, episode_id="e", message="")


# ---------------------------------------------------------------- decode


def test_decode_kinds() -> None:
    good = _raw(_valid_prediction())
    assert isinstance(decode(PREDICTION, good, len(good)), PredictionEvent)
    oversized = decode(PREDICTION, good, len(good) - 1)
    assert isinstance(oversized, Rejection) and oversized.kind == "oversized"
    assert str(len(good)) in oversized.reason
    tombstone = decode(PREDICTION, None, 4096)
    assert isinstance(tombstone, Rejection) and tombstone.kind == "schema" and "tombstone" in tombstone.reason
    for junk in (b"", b"not json", b"{", b"\xff\xfe", b'{"prediction_id": "p",}'):
        result = decode(PREDICTION, junk, 4096)
        assert isinstance(result, Rejection) and result.kind == "not_json", (junk, result)
    for wrong_shape in (b"[1]", b"null", b'"text"', b"42"):
        result = decode(PREDICTION, wrong_shape, 4096)
        assert isinstance(result, Rejection) and result.kind == "schema", (wrong_shape, result)


def test_oversized_is_checked_before_parsing() -> None:
    # Garbage that is also too big is reported as too big: no parse cost is paid.
    result = decode(PREDICTION, b"x" * 100, 99)
    assert isinstance(result, Rejection) and result.kind == "oversized"


def test_schema_reason_names_each_bad_field() -> None:
    result = decode(PREDICTION, _raw(_valid_prediction(model="bad name", confidence=2)), 4096)
    assert isinstance(result, Rejection) and result.kind == "schema"
    assert "model:" in result.reason and "confidence:" in result.reason
    assert len(result.reason) <= 1000


def test_schema_reason_names_feature_even_if_called_like_a_type() -> None:
    result = decode(PREDICTION, _raw(_valid_prediction(features={"bool": [1]})), 4096)
    assert isinstance(result, Rejection)
    assert "features.bool" in result.reason


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    result = decode(OUTCOME, raw, 150)
    assert isinstance(result, (OutcomeEvent, Rejection))
    if len(raw) > 150:
        assert isinstance(result, Rejection) and result.kind == "oversized"


# ---------------------------------------------------------------- ids


def test_deterministic_id_is_stable_and_discriminating() -> None:
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert deterministic_id("asr", "accuracy", 42, t) == deterministic_id("asr", "accuracy", 42, t)
    assert deterministic_id("asr", 1) != deterministic_id("asr", 2)
    # Part boundaries matter: ("ab", "c") is not ("a", "bc").
    assert deterministic_id("ab", "c") != deterministic_id("a", "bc")
    assert deterministic_id(t) != deterministic_id(t + timedelta(microseconds=1))


# ---------------------------------------------------------------- JSON Schema


def test_checked_in_json_schemas_are_not_stale() -> None:
    assert stale_json_schemas(SCHEMA_DIR) == [], "run the JSON Schema export and commit the result"


def test_stale_detection_notices_a_change(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(SCHEMA_MODELS)
    assert stale_json_schemas(tmp_path) == []
    victim = tmp_path / "alert.v1.json"
    victim.write_text(victim.read_text().replace('"statistic"', '"stat"'))
    (tmp_path / "outcome_event.v1.json").unlink()
    assert sorted(stale_json_schemas(tmp_path)) == ["alert.v1.json", "outcome_event.v1.json"]


def test_json_schema_forbids_extras_and_requires_aware_times() -> None:
    rendered = {name: json.loads(text) for name, text in render_json_schemas().items()}
    prediction = rendered["prediction_event.v1.json"]
    assert prediction["additionalProperties"] is False
    assert set(prediction["required"]) == {"prediction_id", "model", "model_version", "event_time", "prediction"}
    assert prediction["properties"]["features"]["maxProperties"] == MAX_FEATURES
