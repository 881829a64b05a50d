"""Champion/challenger: score both models on the same held-out examples and decide."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from river import metrics

from retrainer.config import LearnerSpec
from retrainer.learners import OnlineModel
from schemas.events import Label

__all__ = ["Evaluation", "MetricName", "decide", "evaluate", "score"]

MetricName = Literal["accuracy", "mae"]
Holdout = Sequence[tuple[Mapping[str, float], Label]]


@dataclass(frozen=True)
class Evaluation:
    """The verdict of one champion/challenger comparison.

    Attributes
    ----------
    metric
        ``accuracy`` (higher is better) or ``mae`` (lower is better).
    champion
        The champion's metric on the held-out examples.
    challenger
        The challenger's metric on the same examples.
    n_holdout
        How many held-out examples both were scored on.
    margin
        By how much (strictly more than) the challenger had to win.
    promote
        Whether the challenger should replace the champion.
    reason
        One human sentence saying why.
    """

    metric: MetricName
    champion: float
    challenger: float
    n_holdout: int
    margin: float
    promote: bool
    reason: str

    @property
    def improvement(self) -> float:
        """How much better the challenger did, positive when it won, in metric units."""
        return self.challenger - self.champion if self.metric == "accuracy" else self.champion - self.challenger


def score(model: OnlineModel, holdout: Holdout) -> float:
    """The model's metric on ``holdout``, without changing the model.

    A classifier that cannot predict yet (``None``) is counted as wrong.

    Examples
    --------
    >>> model = OnlineModel(LearnerSpec(kind="logistic_regression"))
    >>> score(model, [({"a": 1.0}, True), ({"a": -1.0}, False)])
    0.0
    """
    if not holdout:
        raise ValueError("holdout must not be empty")
    # river adds a zero entry for each unseen feature during predict_one (its
    # weights and scaler stats are defaultdicts), so scoring the original would
    # change its pickled state; a copy keeps the evaluation pure.
    frozen = copy.deepcopy(model)
    metric: metrics.base.Metric
    if model.spec.task == "classification":
        metric = metrics.Accuracy()
        for x, y in holdout:
            metric.update(y, frozen.predict_one(x))
    else:
        metric = metrics.MAE()
        for x, y in holdout:
            y_pred = frozen.predict_one(x)
            # River regressors predict 0.0 before learning; None never comes from
            # them, but if a custom one returns it, 0.0 is the same convention.
            metric.update(y, 0.0 if y_pred is None else y_pred)
    return float(metric.get())


def decide(champion: float, challenger: float, *, metric: MetricName, margin: float, n_holdout: int) -> Evaluation:
    """Promote only when the challenger beats the champion by more than ``margin``.

    Parameters
    ----------
    champion, challenger
        Both models' metric on the same held-out examples.
    metric
        ``accuracy`` (higher wins) or ``mae`` (lower wins).
    margin
        Required win, in the metric's units; a tie never promotes.
    n_holdout
        Number of held-out examples, for the reason string.

    Examples
    --------
    >>> decide(0.70, 0.90, metric="accuracy", margin=0.02, n_holdout=200).reason
    'promoted: challenger accuracy 0.9000 beats champion 0.7000 by 0.2000, more than the margin 0.0200, on 200 held-out examples'
    >>> result = decide(2.0, 1.99, metric="mae", margin=0.05, n_holdout=50)
    >>> result.promote, result.reason
    (False, 'rejected: challenger mae 1.9900 vs champion 2.0000 is better by only 0.0100, not more than the margin 0.0500, on 50 held-out examples')
    """
    if not (math.isfinite(champion) and math.isfinite(challenger)):
        raise ValueError("champion and challenger metrics must be finite")
    if not margin >= 0:
        raise ValueError("margin must be at least 0")
    if n_holdout < 1:
        raise ValueError("n_holdout must be at least 1")
    improvement = challenger - champion if metric == "accuracy" else champion - challenger
    promote = improvement > margin
    where = f"on {n_holdout} held-out examples"
    if promote:
        reason = (
            f"promoted: challenger {metric} {challenger:.4f} beats champion {champion:.4f} "
            f"by {improvement:.4f}, more than the margin {margin:.4f}, {where}"
        )
    elif improvement > 0:
        reason = (
            f"rejected: challenger {metric} {challenger:.4f} vs champion {champion:.4f} "
            f"is better by only {improvement:.4f}, not more than the margin {margin:.4f}, {where}"
        )
    else:
        reason = (
            f"rejected: challenger {metric} {challenger:.4f} is no better than champion {champion:.4f} "
            f"(difference {improvement:.4f}, margin {margin:.4f}), {where}"
        )
    return Evaluation(metric, champion, challenger, n_holdout, margin, promote, reason)


def evaluate(champion: OnlineModel, challenger: OnlineModel, holdout: Holdout, spec: LearnerSpec) -> Evaluation:
    """Score both models on the same ``holdout`` and decide with ``spec.promotion_margin``.

    Neither model is changed.  The holdout must not have been learnt by either
    model, or the comparison favours the one that saw it.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> spec = LearnerSpec(kind="logistic_regression", promotion_margin=0.05)
    >>> def draw(flipped):
    ...     a = rng.uniform(-1, 1)
    ...     return {"a": a}, (a > 0) != flipped
    >>> champion, challenger = OnlineModel(spec), OnlineModel(spec)
    >>> for _ in range(300):
    ...     _ = champion.learn_one(*draw(False))
    ...     _ = challenger.learn_one(*draw(True))
    >>> result = evaluate(champion, challenger, [draw(True) for _ in range(200)], spec)
    >>> result.promote, round(result.champion, 2), round(result.challenger, 2)
    (True, 0.01, 1.0)
    """
    return decide(
        score(champion, holdout),
        score(challenger, holdout),
        metric=spec.metric,
        margin=spec.promotion_margin,
        n_holdout=len(holdout),
    )
