"""One false-alarm budget per model, split across everything of it that can page.

A model's ``false_alarm_horizon`` (:attr:`schemas.config.ModelSpec.alarm_budget`) is the mean number of model
events between false alarms of all its budgeted detectors together.  It is split in equal shares of the rate
between the *groups* of detectors the model has:

* ``performance``: the model-wide change detector on the per-example loss;
* ``segment_performance``: the change detectors of all its segments together;
* ``data``: the model-wide data monitor of each version (features, predictions, outliers, trends), which splits its
  share between its own tests as before;
* ``segment_data``: the data monitors of all its segments together.

With ``k`` groups each gets a horizon of ``k * budget``.  A group of segments needs only one share, not one per
segment: the segments partition the model's events, so ``n`` detectors that each see a share ``f_i`` of them at a
horizon ``h`` (in their own events) raise ``sum(f_i) / h = 1 / h`` false alarms per model event between them.
Versions follow one another in time, so they share their group's horizon the same way.  Performance detectors see
labelled examples, at most one per prediction, so counting their horizon in labelled examples is conservative.

Outside the budget: threshold alerts (a person set the level), unseen categories, the label-free estimates, and
river's detectors, which take no horizon (their own parameters set how often they fire).

>>> from schemas.config import parse_monitor_config
>>> spec = parse_monitor_config("models: {m: {task: classification, performance: {threshold: 0.8},"
...     " segments: {max_segments: 5}, features: {x: {kind: numeric}}, false_alarm_horizon: 100000}}").models["m"]
>>> budget = AlarmBudget.of(spec)
>>> budget.groups, budget.horizon("performance"), budget.horizon("segment_data")
(('performance', 'segment_performance', 'data', 'segment_data'), 400000.0, 400000.0)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from detectors.registry import DETECTORS
from schemas.config import ModelSpec

__all__ = ["AlarmBudget", "takes_horizon"]

PERFORMANCE, SEGMENT_PERFORMANCE, DATA, SEGMENT_DATA = "performance", "segment_performance", "data", "segment_data"


def takes_horizon(detector_name: str | None) -> bool:
    """Whether the named detector's false-alarm rate is set by a ``false_alarm_horizon`` (ours are; river's not)."""
    cls = DETECTORS.get(detector_name or "")
    return cls is not None and "false_alarm_horizon" in inspect.signature(cls.__init__).parameters


@dataclass(frozen=True)
class AlarmBudget:
    """A model's false-alarm budget and the groups of detectors it is split between."""

    model_horizon: float
    groups: tuple[str, ...]

    @classmethod
    def of(cls, spec: ModelSpec) -> AlarmBudget:
        groups = []
        detector = spec.detector_name is not None and takes_horizon(spec.detector_name)
        n_data_tests = sum(f.drift + f.outliers + f.trend for f in spec.features.values()) + spec.prediction_drift
        if detector:
            groups.append(PERFORMANCE)
            if spec.segments is not None:
                groups.append(SEGMENT_PERFORMANCE)
        if n_data_tests:
            groups.append(DATA)
            if spec.segments is not None:
                groups.append(SEGMENT_DATA)
        return cls(spec.alarm_budget, tuple(groups))

    def horizon(self, group: str) -> float:
        """The horizon of one group: its equal share of the model's false-alarm rate."""
        return self.model_horizon * max(len(self.groups), 1)
