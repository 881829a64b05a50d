"""Online learners, champion/challenger evaluation and the model registry."""

from __future__ import annotations

from retrainer.artifacts import ArtifactStore, LocalArtifactStore, StoredArtifact, sha256_hex
from retrainer.champions import MAX_WAITING_TRIGGERS, Retrainer, register_initial_version
from retrainer.config import LearnerSpec, RetrainerConfig, open_registry, open_store, retrainer_config
from retrainer.estimators import LearnerKind, Task, make_estimator
from retrainer.exceptions import (
    ArtifactError,
    ArtifactOutsideStore,
    BadExample,
    ChecksumMismatch,
    RefusedModelName,
    RegistryError,
    RegistryUnavailable,
    RetrainerError,
    RollbackUnavailable,
    UnknownModel,
    UnknownVersion,
)
from retrainer.evaluation import Evaluation, decide, evaluate, score
from retrainer.learners import OnlineModel, example_to_xy, features_to_x, target
from retrainer.registry import REGISTRY_FILENAME, ModelRegistry, VersionJournal

__all__ = [
    "ArtifactError",
    "ArtifactOutsideStore",
    "ArtifactStore",
    "BadExample",
    "ChecksumMismatch",
    "Evaluation",
    "LearnerKind",
    "LearnerSpec",
    "LocalArtifactStore",
    "MAX_WAITING_TRIGGERS",
    "ModelRegistry",
    "OnlineModel",
    "REGISTRY_FILENAME",
    "RefusedModelName",
    "RegistryError",
    "RegistryUnavailable",
    "Retrainer",
    "RetrainerConfig",
    "RetrainerError",
    "RollbackUnavailable",
    "StoredArtifact",
    "Task",
    "UnknownModel",
    "UnknownVersion",
    "VersionJournal",
    "decide",
    "evaluate",
    "example_to_xy",
    "features_to_x",
    "make_estimator",
    "open_registry",
    "open_store",
    "register_initial_version",
    "retrainer_config",
    "score",
    "sha256_hex",
    "target",
]
