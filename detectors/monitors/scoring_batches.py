"""The monitor stage's scoring batches: each model's released items gathered until there are enough to score at once.

A monitor-input message carries about a thousand items of every model of its partition, so with a thousand models
each is scored one or two items at a time, and its monitors' fixed cost per call (grouping, numpy calls on arrays
of one, a Python step per test) is paid per item.  Measured offline (models1000, 200,000 predictions), the
monitors cost 103.5 µs an event that way and 28.9 µs gathered by 64 (47.4 by 16).  The monitors'
decisions do not depend on how a model's stream is cut into batches (their batch-size tests), so gathering a
model's items changes when an alert is published, never which alert or its event time.

A model's items are scored once it has ``min_items`` of them, once the first of them has waited
``max_wait_seconds`` (wall clock), or once the caller says no more of them are on the way (the worker: its
input partition is read to its end).  So they are gathered only while the stage has a backlog to read: a
stage that keeps up scores everything as it comes, and the end of a burst is not held back.  Until then
they are not scored, so the checkpoints' bookkeeping (:class:`~detectors.monitors.checkpoint.Checkpointer`)
still counts them as waiting and their messages are not acked: a crash loses none.

>>> from detectors.ingest.merge import Held
>>> batches = ScoringBatches(min_items=3, max_wait_seconds=1.0)
>>> batches.add([Held("m1", "busy", "p1"), Held("m1", "busy", "p2"), Held("m2", "quiet", "p3")],
...             [Held("m1", "busy", "e1")], wall_time=0.0)
>>> [(h.model, h.item) for h in batches.due(wall_time=0.1)[0]], batches.n_held   # busy has 3 items
([('busy', 'p1'), ('busy', 'p2')], 1)
>>> batches.due(wall_time=0.5), [h.item for h in batches.due(wall_time=1.0)[0]]   # quiet's waited 1 s
(([], []), ['p3'])
>>> batches.add([Held("m2", "quiet", "p4")], [], wall_time=2.0)
>>> [h.item for h in batches.due(wall_time=2.0, drained=lambda model: model == "quiet")[0]]   # none to come
['p4']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from detectors.exceptions import InvalidParameter
from detectors.ingest.merge import Held

__all__ = ["ScoringBatches"]

Ref = TypeVar("Ref")


@dataclass(slots=True)
class _Gathered(Generic[Ref]):
    model: str
    since: float  # wall time the first of these items was added
    predictions: list[Held[Ref]] = field(default_factory=list)
    labelled: list[Held[Ref]] = field(default_factory=list)


class ScoringBatches(Generic[Ref]):
    """Per model, the released predictions and labelled examples not scored yet, each in the order added.

    Parameters
    ----------
    min_items
        A model's items (predictions and labelled examples together) that are scored at once; 1 scores
        everything as it is released.
    max_wait_seconds
        Wall-clock seconds after which a model's items are scored however few they are.
    """

    def __init__(self, min_items: int, max_wait_seconds: float) -> None:
        if min_items < 1:
            raise InvalidParameter("min_items", "must be at least 1")
        if not max_wait_seconds >= 0:
            raise InvalidParameter("max_wait_seconds", "must be at least 0")
        self.min_items = min_items
        self.max_wait_seconds = max_wait_seconds
        self._models: dict[str, _Gathered[Ref]] = {}
        self._n_held = 0

    @property
    def n_held(self) -> int:
        """Items gathered and not yet taken."""
        return self._n_held

    def add(self, predictions: Sequence[Held[Ref]], labelled: Sequence[Held[Ref]], wall_time: float) -> None:
        """Gather released items under their models."""
        models = self._models
        for items, labelled_side in ((predictions, False), (labelled, True)):
            for held in items:
                gathered = models.get(held.model)
                if gathered is None:
                    gathered = models[held.model] = _Gathered(held.model, wall_time)
                (gathered.labelled if labelled_side else gathered.predictions).append(held)
        self._n_held += len(predictions) + len(labelled)

    def due(self, wall_time: float, drained: Callable[[str], bool] | None = None
            ) -> tuple[list[Held[Ref]], list[Held[Ref]]]:
        """Take the items of every model that has ``min_items`` of them, has waited ``max_wait_seconds``, or of
        which ``drained`` says that no more items are on the way."""
        oldest = wall_time - self.max_wait_seconds
        return self._take(lambda g: len(g.predictions) + len(g.labelled) >= self.min_items or g.since <= oldest
                          or (drained is not None and drained(g.model)))

    def take_all(self) -> tuple[list[Held[Ref]], list[Held[Ref]]]:
        """Take every item gathered."""
        return self._take(lambda _gathered: True)

    def drop(self, models: Callable[[str], bool]) -> int:
        """Forget the items of the models ``models`` names (their partition went to another worker); how many."""
        dropped = self._take(lambda g: models(g.model))
        return len(dropped[0]) + len(dropped[1])

    def _take(self, chosen: Callable[[_Gathered[Ref]], bool]) -> tuple[list[Held[Ref]], list[Held[Ref]]]:
        predictions: list[Held[Ref]] = []
        labelled: list[Held[Ref]] = []
        for model in [m for m, gathered in self._models.items() if chosen(gathered)]:
            gathered = self._models.pop(model)
            predictions += gathered.predictions
            labelled += gathered.labelled
        self._n_held -= len(predictions) + len(labelled)
        return predictions, labelled
