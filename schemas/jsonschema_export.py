"""JSON Schema files generated from the event models: the contract for non-Python producers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.config import MonitorConfig
from schemas.events import Alert, LabelledExample, ModelVersion, OutcomeEvent, PredictionEvent, RetrainTrigger

__all__ = ["DRAFT", "SCHEMA_MODELS", "export_json_schemas", "json_schema_of", "render_json_schemas", "stale_json_schemas"]

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "prediction_event.v1.json": PredictionEvent,
    "outcome_event.v1.json": OutcomeEvent,
    "labelled_example.v1.json": LabelledExample,
    "alert.v1.json": Alert,
    "retrain_trigger.v1.json": RetrainTrigger,
    "model_version.v1.json": ModelVersion,
    "monitor_config.json": MonitorConfig,
}


#: The draft the files are written in: pydantic generates 2020-12, and without ``$schema`` a validator may assume
#: another (and treat ``format`` differently).
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of ``model`` as the files hold it: pydantic's, with its draft declared, and map keys' patterns
    required of every key."""
    schema = model.model_json_schema(mode="validation")
    _require_key_patterns(schema)
    return {"$schema": DRAFT, **schema}


def _require_key_patterns(node: Any) -> None:
    """Turn each ``patternProperties`` pydantic writes for a map with patterned keys into ``propertyNames``.

    pydantic refuses a key that does not match; ``patternProperties`` alone would let it through, with any value.
    """
    if isinstance(node, list):
        for item in node:
            _require_key_patterns(item)
        return
    if not isinstance(node, dict):
        return
    patterned = node.get("patternProperties")
    if isinstance(patterned, dict) and len(patterned) == 1 and "additionalProperties" not in node:
        [(pattern, values)] = patterned.items()
        del node["patternProperties"]
        node["additionalProperties"] = values
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
    for value in node.values():
        _require_key_patterns(value)


def render_json_schemas() -> dict[str, str]:
    """File name to JSON text, as the models define them today."""
    return {
        name: json.dumps(json_schema_of(model), indent=2, sort_keys=True) + "\n" for name, model in SCHEMA_MODELS.items()
    }


def export_json_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_json_schemas().items():
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    return written


def stale_json_schemas(out_dir: Path) -> list[str]:
    """Names of the files that are missing or differ from what the models generate."""
    stale = []
    for name, text in render_json_schemas().items():
        path = out_dir / name
        if not path.exists() or path.read_text() != text:
            stale.append(name)
    return stale
