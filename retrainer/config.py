"""Per-model learner configuration: which river pipeline, and the retraining rules."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from retrainer.estimators import LearnerKind, Task, make_estimator, task_of

__all__ = ["LearnerSpec"]

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
