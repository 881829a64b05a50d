"""Driftline's event contract (pydantic v2), monitor config and topic names."""

from __future__ import annotations

from schemas.events import (
    Alert,
    LabelledExample,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    RetrainTrigger,
    deterministic_id,
)
from schemas.exceptions import ConfigError, DriftlineError
from schemas.topics import TopicNames

__all__ = [
    "Alert",
    "ConfigError",
    "DriftlineError",
    "LabelledExample",
    "ModelVersion",
    "OutcomeEvent",
    "PredictionEvent",
    "RetrainTrigger",
    "TopicNames",
    "deterministic_id",
]
