"""The learner kinds the retrainer knows, the task each one solves, and the river pipeline each one builds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from river import base, forest, linear_model, multiclass, optim, preprocessing, tree

__all__ = ["LearnerKind", "Task", "make_estimator", "task_of"]

LearnerKind = Literal[
    "logistic_regression",
    "adaptive_random_forest",
    "hoeffding_adaptive_tree_classifier",
    "hoeffding_adaptive_tree_regressor",
    "linear_regression",
]
Task = Literal["classification", "regression"]

_TASKS: dict[str, Task] = {
    "logistic_regression": "classification",
    "adaptive_random_forest": "classification",
    "hoeffding_adaptive_tree_classifier": "classification",
    "hoeffding_adaptive_tree_regressor": "regression",
    "linear_regression": "regression",
}


def task_of(kind: LearnerKind) -> Task:
    """``classification`` or ``regression``: what a learner of this kind predicts.

    Examples
    --------
    >>> task_of("adaptive_random_forest"), task_of("linear_regression")
    ('classification', 'regression')
    """
    return _TASKS[kind]


def make_estimator(kind: LearnerKind, params: Mapping[str, Any], seed: int) -> base.Estimator:
    """Build an untrained river pipeline of the given kind.

    Parameters
    ----------
    kind
        One of :data:`LearnerKind`.
    params
        Keyword arguments for the estimator; ``lr`` sets the SGD learning rate of
        the linear kinds.
    seed
        Passed to estimators that take one.

    Examples
    --------
    >>> list(make_estimator("logistic_regression", {"l2": 0.001}, seed=1).steps)
    ['StandardScaler', 'OneVsRestClassifier']
    >>> make_estimator("adaptive_random_forest", {"n_models": 3}, seed=1).n_models
    3
    """
    kwargs = dict(params)
    if kind in ("logistic_regression", "linear_regression") and "lr" in kwargs:
        lr = kwargs.pop("lr")
        if not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0:
            raise ValueError("lr must be a positive number")
        kwargs["optimizer"] = optim.SGD(lr)
    if kind == "logistic_regression":
        return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression(**kwargs))
    if kind == "linear_regression":
        return preprocessing.StandardScaler() | linear_model.LinearRegression(**kwargs)
    if kind == "adaptive_random_forest":
        return forest.ARFClassifier(**{"seed": seed, **kwargs})
    if kind == "hoeffding_adaptive_tree_classifier":
        return tree.HoeffdingAdaptiveTreeClassifier(**{"seed": seed, **kwargs})
    if kind == "hoeffding_adaptive_tree_regressor":
        return tree.HoeffdingAdaptiveTreeRegressor(**{"seed": seed, **kwargs})
    raise ValueError(f"unknown learner kind {kind!r}")
