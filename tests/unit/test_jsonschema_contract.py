"""The checked-in JSON Schema says what the worker accepts: pydantic and a standard validator agree on every event.

The validator is ``jsonschema`` (draft 2020-12, as the files declare) with its format checker, which checks
``date-time`` with ``rfc3339-validator``.  Events are generated (valid ones, which both must accept) and then
fuzzed: one value replaced, removed or added somewhere in the document.

What is outside the agreement, and why:

* Documents that are not RFC 8259 JSON.  ``NaN`` and ``Infinity`` are not JSON, and a number literal beyond a
  double's range (``1e400``) has no JSON value a validator could be given: Python's ``json`` turns it into
  ``inf``, which jsonschema takes as a number, while pydantic refuses it as non-finite.  No conforming producer
  writes either, so the fuzzed documents are dumped with ``allow_nan=False``.
* A date-time whose UTC instant falls outside Python's years 1 to 9999 (``9999-12-31T23:59:59-01:00``) is valid
  RFC 3339 and accepted by both; whether later arithmetic on it overflows is not the contract's concern.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from schemas.jsonschema_export import DRAFT, SCHEMA_MODELS, json_schema_of
from tests.unit.test_schemas import ANY_EVENT

EVENT_MODELS = {model for name, model in SCHEMA_MODELS.items() if name.endswith(".v1.json")}
VALIDATORS = {model: Draft202012Validator(json_schema_of(model), format_checker=Draft202012Validator.FORMAT_CHECKER)
              for model in EVENT_MODELS}


def _pydantic_accepts(model: type[BaseModel], text: str) -> bool:
    try:
        model.model_validate_json(text)
    except ValidationError:
        return False
    return True


def _agree(model: type[BaseModel], doc: Any) -> tuple[bool, bool]:
    text = json.dumps(doc, allow_nan=False)
    return _pydantic_accepts(model, text), VALIDATORS[model].is_valid(json.loads(text))


def _digits(n: int, top: int) -> st.SearchStrategy[str]:
    return st.integers(0, top).map(lambda v: str(v).zfill(n))


# Date-times near and past what RFC 3339 allows: every part a little out of range, other separators and offsets.
date_times = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, off: f"{y}-{mo}-{d}{sep}{h}:{mi}{s}{frac}{off}",
    st.sampled_from(["0000", "0001", "1970", "2024", "2026", "9999"]), _digits(2, 13), _digits(2, 32),
    st.sampled_from(["T", "t", " ", "_", ""]), _digits(2, 25), _digits(2, 61),
    st.sampled_from([":00", ":59", ":60", ":61", ""]), st.sampled_from(["", ".5", ".123456", ".1234567", ".", ",5"]),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+0000", "+01", "+23:59", "+24:00", "+00:60", "", "Z\n", " Z"]),
)
# Strings around each length limit (1, 64, 128, 256, 1024) and shapes the name pattern refuses.
bounded_strings = st.integers(0, 4).flatmap(
    lambda i: st.text(alphabet="ab:/._-\n é", min_size=(0, 63, 127, 255, 1023)[i], max_size=(2, 65, 129, 257, 1025)[i]))
fuzz_values = st.one_of(
    date_times, bounded_strings, st.text(max_size=10), st.sampled_from(["a\n", "\na", "-a", "a b", "é", "0" * 64]),
    st.booleans(), st.none(), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, -1, 0.0, 1.0, -0.0, 0.5, 1.5, 2]),
    st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the document a value sits (object members and array items), the document itself first."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _mutated(doc: Any, path: tuple[Any, ...], action: str, value: Any, new_key: str) -> Any:
    if not path:
        return value if action == "replace" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[new_key] = value
    return doc


def test_the_files_declare_draft_2020_12_and_are_valid_schemas() -> None:
    for model in EVENT_MODELS:
        schema = json_schema_of(model)
        assert schema["$schema"] == DRAFT
        Draft202012Validator.check_schema(schema)


def test_a_naive_event_time_is_refused_by_both() -> None:
    """The issue's example: jsonschema with a format checker took "2026-11-01T09:00:00" before the draft was declared."""
    from schemas.events import OutcomeEvent

    doc = {"prediction_id": "p", "event_time": "2026-11-01T09:00:00", "actual": 1}
    assert _agree(OutcomeEvent, doc) == (False, False)
    assert _agree(OutcomeEvent, {**doc, "event_time": "2026-11-01T09:00:00+01:00"}) == (True, True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_EVENT)
def test_every_generated_event_is_valid_for_both(event: BaseModel) -> None:
    assert _agree(type(event), json.loads(event.model_dump_json())) == (True, True)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ANY_EVENT, st.data(), st.sampled_from(["replace", "replace", "delete", "add"]), fuzz_values,
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_pydantic_and_the_json_schema_agree_on_fuzzed_events(event: BaseModel, data: st.DataObject, action: str,
                                                              value: Any, new_key: str) -> None:
    doc = json.loads(event.model_dump_json())
    path = data.draw(st.sampled_from(_paths(doc)))
    fuzzed = _mutated(doc, path, action, value, new_key)
    by_pydantic, by_schema = _agree(type(event), fuzzed)
    assert by_pydantic == by_schema, (type(event).__name__, path, action, json.dumps(fuzzed)[:500])
