"""JSON Schema files generated from the event models: the contract for non-Python producers."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.config import MonitorConfig
from schemas.events import Alert, LabelledExample, ModelVersion, OutcomeEvent, PredictionEvent, RetrainTrigger

__all__ = ["SCHEMA_MODELS", "export_json_schemas", "render_json_schemas", "stale_json_schemas"]

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "prediction_event.v1.json": PredictionEvent,
    "outcome_event.v1.json": OutcomeEvent,
    "labelled_example.v1.json": LabelledExample,
    "alert.v1.json": Alert,
    "retrain_trigger.v1.json": RetrainTrigger,
    "model_version.v1.json": ModelVersion,
    "monitor_config.json": MonitorConfig,
}


def render_json_schemas() -> dict[str, str]:
    """File name to JSON text, as the models define them today."""
    return {
        name: json.dumps(model.model_json_schema(mode="validation"), indent=2, sort_keys=True) + "\n"
        for name, model in SCHEMA_MODELS.items()
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
