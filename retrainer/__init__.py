"""Online learners, champion/challenger evaluation and the model registry."""

from __future__ import annotations

from retrainer.config import LearnerKind, LearnerSpec, Task
from retrainer.exceptions import (
    ArtifactError,
    ArtifactOutsideStore,
    BadExample,
    ChecksumMismatch,
    RegistryError,
    RetrainerError,
    RollbackUnavailable,
    UnknownModel,
    UnknownVersion,
)
from retrainer.learners import OnlineModel, example_to_xy, features_to_x, make_estimator

__all__ = [
    "ArtifactError",
    "ArtifactOutsideStore",
    "BadExample",
    "ChecksumMismatch",
    "LearnerKind",
    "LearnerSpec",
    "OnlineModel",
    "RegistryError",
    "RetrainerError",
    "RollbackUnavailable",
    "Task",
    "UnknownModel",
    "UnknownVersion",
    "example_to_xy",
    "features_to_x",
    "make_estimator",
]
