"""The retrainer's configuration: each model's learner and retraining rules, and where its registry and artifacts live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from retrainer.artifacts import LocalArtifactStore
from retrainer.estimators import LearnerKind, Task, make_estimator, task_of
from retrainer.registry import REGISTRY_FILENAME, ModelRegistry
from schemas.config import MonitorConfig
from schemas.exceptions import ConfigError

__all__ = ["ARTIFACTS_DIRNAME", "LearnerSpec", "RetrainerConfig", "open_registry", "open_store", "retrainer_config"]

ARTIFACTS_DIRNAME = "artifacts"

# A model that is monitored but has no ``learners:`` entry still gets a learner,
# the simplest one that fits its task.
_DEFAULT_KIND: dict[Task, LearnerKind] = {"classification": "logistic_regression", "regression": "linear_regression"}

# Params are read from YAML, so only plain scalars and flat lists make sense; an
# optimizer object or a detector instance cannot be written there anyway.
ParamValue = bool | int | float | str | None | list[bool | int | float | str]


class LearnerSpec(BaseModel):
    """How one model learns online and when a retrained challenger replaces it.

    Embedded per model in the monitor config as ``learner:``.  Unknown fields
    and bad learner params fail validation with the field's name, so a typo is
    caught at start-up rather than at the first retrain.

    Parameters
    ----------
    kind
        The river pipeline: ``logistic_regression`` (StandardScaler and a
        one-vs-rest LogisticRegression, so any label type works),
        ``adaptive_random_forest`` (``forest.ARFClassifier``),
        ``hoeffding_adaptive_tree_classifier``,
        ``hoeffding_adaptive_tree_regressor`` or ``linear_regression``
        (StandardScaler and LinearRegression).
    params
        Keyword arguments for the river estimator.  For the two linear kinds,
        ``lr`` sets the SGD learning rate.
    seed
        Seed for learners that draw random numbers, so a retrain is reproducible.
    promotion_margin
        A challenger is promoted only when it beats the champion on the
        held-out examples by *more* than this, in the metric's own units
        (accuracy points for classifiers, target units of MAE for regressors).
    holdout_size
        How many of the most recent examples are held out from challenger
        training and used to compare challenger and champion.
    min_training_examples
        Fewest examples a challenger (or the bootstrap champion) must learn
        from; a trigger waits until that many have arrived since its
        ``data_from``.
    buffer_size
        Most examples kept per model for retraining (the memory bound).
    warm_start
        Start the challenger from a copy of the champion instead of from scratch.

    Examples
    --------
    >>> spec = LearnerSpec.model_validate({"kind": "adaptive_random_forest", "params": {"n_models": 5}})
    >>> spec.task, spec.metric
    ('classification', 'accuracy')
    >>> LearnerSpec.model_validate({"kind": "linear_regression", "holdout": 10})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for LearnerSpec
    holdout
      Extra inputs are not permitted [type=extra_forbidden, input_value=10, input_type=int]
    ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: LearnerKind = "logistic_regression"
    seed: int = 42
    params: dict[Annotated[str, Field(min_length=1, max_length=64)], ParamValue] = Field(default_factory=dict)
    promotion_margin: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.01
    holdout_size: Annotated[int, Field(ge=10, le=100_000)] = 200
    min_training_examples: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    buffer_size: Annotated[int, Field(ge=1, le=1_000_000)] = 5_000
    warm_start: bool = False

    @field_validator("params")
    @classmethod
    def _params_build(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("kind")
        if kind is None:
            return params
        # Building the estimator is the only complete check of river's own
        # argument rules, and it is cheap for an untrained model.
        try:
            make_estimator(kind, params, seed=info.data.get("seed", 42))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not accepted by {kind}: {exc}") from exc
        return params

    @model_validator(mode="after")
    def _buffer_holds_a_retrain(self) -> LearnerSpec:
        if self.buffer_size < self.min_training_examples:
            raise ValueError("buffer_size must be at least min_training_examples")
        return self

    @property
    def task(self) -> Task:
        """``classification`` or ``regression``, from the learner kind."""
        return task_of(self.kind)

    @property
    def metric(self) -> Literal["accuracy", "mae"]:
        """The metric used for progressive validation and promotion."""
        return "accuracy" if self.task == "classification" else "mae"

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger metric value is better (accuracy) or worse (MAE)."""
        return self.task == "classification"


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
            specs[model] = LearnerSpec(kind=_DEFAULT_KIND[monitored.task])
    return RetrainerConfig(learners=dict(sorted(specs.items())))


def open_registry(data_dir: str | os.PathLike[str]) -> ModelRegistry:
    """The model registry kept in the retrainer's data directory."""
    return ModelRegistry(Path(data_dir) / REGISTRY_FILENAME)


def open_store(data_dir: str | os.PathLike[str]) -> LocalArtifactStore:
    """The artifact store kept in the retrainer's data directory (servers load from it too)."""
    return LocalArtifactStore(Path(data_dir) / ARTIFACTS_DIRNAME)

