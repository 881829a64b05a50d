"""The retrainer's configuration: per-model learners from the monitor config, and its on-disk layout."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from retrainer.artifacts import LocalArtifactStore
from retrainer.config import LearnerSpec
from retrainer.registry import REGISTRY_FILENAME, ModelRegistry
from schemas.config import MonitorConfig
from schemas.exceptions import ConfigError

__all__ = ["ARTIFACTS_DIRNAME", "RetrainerConfig", "open_registry", "open_store", "retrainer_config"]

ARTIFACTS_DIRNAME = "artifacts"

# A model that is monitored but has no ``learners:`` entry still gets a learner,
# the simplest one that fits its task.
_DEFAULT_KIND = {"classification": "logistic_regression", "regression": "linear_regression"}


class RetrainerConfig(BaseModel):
    """The learner of every model the retrainer trains, validated.

    Built from the monitor config with :func:`retrainer_config`: every model
    under ``learners:`` plus every monitored model (which gets the default
    learner for its task when it has no entry).

    Examples
    --------
    >>> from schemas.config import parse_monitor_config
    >>> cfg = retrainer_config(parse_monitor_config('''
    ... models:
    ...   asr: {task: classification, performance: {threshold: 0.85}}
    ...   price: {task: regression, performance: {threshold: 2.0}}
    ... learners:
    ...   asr: {kind: adaptive_random_forest, params: {n_models: 3}}
    ... '''))
    >>> {name: spec.kind for name, spec in cfg.learners.items()}
    {'asr': 'adaptive_random_forest', 'price': 'linear_regression'}
    >>> retrainer_config(parse_monitor_config('''
    ... models: {asr: {task: classification, performance: {threshold: 0.85}}}
    ... learners: {asr: {kind: linear_regression}, churn: {holdout_size: 3}}
    ... '''))
    Traceback (most recent call last):
    ...
    schemas.exceptions.ConfigError: invalid config <monitor config>:
      learners.asr.kind: learner kind 'linear_regression' is for regression, but model asr is monitored as classification
      learners.churn.holdout_size: Input should be greater than or equal to 10
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    learners: dict[str, LearnerSpec]


def retrainer_config(config: MonitorConfig, source: str = "<monitor config>") -> RetrainerConfig:
    """Validate the ``learners:`` section of a monitor config into one :class:`LearnerSpec` per model.

    Raises
    ------
    ConfigError
        Naming every bad field as ``learners.<model>.<field>``, including a
        learner whose task does not fit the monitored model's task.
    """
    problems: list[tuple[str, str]] = []
    specs: dict[str, LearnerSpec] = {}
    for model, raw in config.learners.items():
        try:
            spec = LearnerSpec.model_validate(raw)
        except ValidationError as exc:
            problems += [(".".join(["learners", model, *map(str, err["loc"])]), err["msg"]) for err in exc.errors()]
            continue
        monitored = config.models.get(model)
        if monitored is not None and monitored.task != spec.task:
            problems.append((
                f"learners.{model}.kind",
                f"learner kind {spec.kind!r} is for {spec.task}, but model {model} is monitored as {monitored.task}",
            ))
            continue
        specs[model] = spec
    if problems:
        raise ConfigError(source, problems)
    for model, monitored in config.models.items():
        if model not in config.learners:
            specs[model] = LearnerSpec(kind=_DEFAULT_KIND[monitored.task])  # type: ignore[arg-type]
    return RetrainerConfig(learners=dict(sorted(specs.items())))


def open_registry(data_dir: str | os.PathLike[str]) -> ModelRegistry:
    """The model registry kept in the retrainer's data directory."""
    return ModelRegistry(Path(data_dir) / REGISTRY_FILENAME)


def open_store(data_dir: str | os.PathLike[str]) -> LocalArtifactStore:
    """The artifact store kept in the retrainer's data directory (servers load from it too)."""
    return LocalArtifactStore(Path(data_dir) / ARTIFACTS_DIRNAME)

