"""The retrainer's pure core: an online champion per model, retrain triggers, champion/challenger, registration."""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from retrainer.artifacts import ArtifactStore
from retrainer.config import LearnerSpec
from retrainer.evaluation import Evaluation, evaluate
from retrainer.exceptions import ArtifactError, RegistryError, UnknownModel
from retrainer.learners import OnlineModel, example_to_xy
from retrainer.registry import ModelRegistry
from schemas.events import Label, LabelledExample, ModelVersion, RetrainTrigger

__all__ = ["MAX_WAITING_TRIGGERS", "Retrainer", "register_initial_version"]

log = logging.getLogger(__name__)

# Triggers come from alerts, a handful per model per day; this only guards
# memory against a runaway producer.  The oldest waiting trigger is dropped.
MAX_WAITING_TRIGGERS = 64


@dataclass(frozen=True, slots=True)
class _Example:
    event_time: datetime
    x: dict[str, float]
    y: Label


class _ModelState:
    """Everything the retrainer keeps for one model; bounded by its spec."""

    def __init__(self, spec: LearnerSpec) -> None:
        self.spec = spec
        self.champion: OnlineModel | None = None
        self.champion_version: str | None = None
        # The newest examples are held back from the champion until they age
        # out of this window, so at any moment they are unseen by it and can
        # serve as a fair holdout for champion *and* challenger (and a
        # warm-started copy of the champion has not seen them either).
        self.holdout: deque[_Example] = deque(maxlen=spec.holdout_size)
        self.history: deque[_Example] = deque(maxlen=spec.buffer_size)
        self.waiting: OrderedDict[str, RetrainTrigger] = OrderedDict()
        self.learned_from: datetime | None = None
        self.learned_to: datetime | None = None


class Retrainer:
    """Keeps one online champion per model and answers retrain triggers.

    Nothing here touches Kafka: the service feeds :meth:`learn` with labelled
    examples and :meth:`on_trigger` with triggers, and publishes the
    :class:`~schemas.events.ModelVersion` records they return.

    Each model's champion learns online, one example at a time, except that
    the ``holdout_size`` most recent examples are held back until they age out
    (a lag of ``holdout_size`` examples).  Those held-back examples are the
    holdout on which champion and challenger are compared, so neither has
    learnt them.  At most ``buffer_size + holdout_size`` examples are kept per
    model.

    A model with no registered version bootstraps: once its champion has
    learnt ``min_training_examples``, it is saved and registered as promoted.

    A trigger whose model lacks data (fewer than ``min_training_examples``
    learnt since ``data_from``, or a holdout not yet full, or no champion yet)
    waits; :meth:`poll` retries waiting triggers.  A handled trigger id is
    recorded in the registry with its versions, in one write, so replaying it
    (after a restart, too) does nothing.

    Parameters
    ----------
    learners
        The learner spec of each model.
    store
        Where champion and challenger artifacts are saved and loaded.
    registry
        The model registry; a model's current version there is loaded as its
        champion on first use, which is how a restart resumes.
    default_learner
        Spec for models not in ``learners``; without it such a model raises
        :class:`~retrainer.exceptions.UnknownModel`.

    Examples
    --------
    A stream whose label flips at 12:00; the trigger says so, and the
    challenger trained on data since then replaces the stale champion.

    >>> import random, tempfile
    >>> from datetime import datetime, timedelta, timezone
    >>> from retrainer.artifacts import LocalArtifactStore
    >>> from schemas.events import OutcomeEvent, PredictionEvent
    >>> root = tempfile.mkdtemp()
    >>> spec = LearnerSpec(holdout_size=100, min_training_examples=200, promotion_margin=0.05)
    >>> store = LocalArtifactStore(root)
    >>> retrainer = Retrainer({"churn": spec}, store, ModelRegistry(f"{root}/registry.jsonl"))
    >>> rng, start = random.Random(1), datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> def example(i, flipped):
    ...     t, a = start + timedelta(minutes=i), rng.uniform(-1, 1)
    ...     p = PredictionEvent(prediction_id=str(i), model="churn", model_version="1", event_time=t,
    ...                         features={"a": a}, prediction=False)
    ...     return LabelledExample(prediction=p, outcome=OutcomeEvent(
    ...         prediction_id=str(i), event_time=t, actual=(a > 0) != flipped))
    >>> published = []
    >>> for i in range(1100):
    ...     published += retrainer.learn(example(i, flipped=i >= 700))
    >>> [(v.version, v.status) for v in published]
    [('1', 'promoted')]
    >>> trigger = RetrainTrigger(trigger_id="t-1", model="churn", reason="performance_decay",
    ...                          data_from=start + timedelta(minutes=700), event_time=start + timedelta(minutes=1099))
    >>> records = retrainer.on_trigger(trigger, now=start + timedelta(minutes=1100))
    >>> [(v.version, v.status, v.parent_version, v.n_examples) for v in records]
    [('2', 'candidate', '1', 300), ('2', 'promoted', '1', 300)]
    >>> print(records[1].reason)
    promoted: challenger accuracy 1.0000 beats champion 0.5900 by 0.4100, more than the margin 0.0500, on 100 held-out examples
    >>> retrainer.on_trigger(trigger, now=start + timedelta(minutes=1101))
    []
    """

    def __init__(
        self,
        learners: Mapping[str, LearnerSpec],
        store: ArtifactStore,
        registry: ModelRegistry,
        *,
        default_learner: LearnerSpec | None = None,
    ) -> None:
        self.learners = dict(learners)
        self.store = store
        self.registry = registry
        self.default_learner = default_learner
        self._states: dict[str, _ModelState] = {}

    # -- state ---------------------------------------------------------------

    def _spec(self, model: str) -> LearnerSpec:
        spec = self.learners.get(model, self.default_learner)
        if spec is None:
            raise UnknownModel(model)
        return spec

    def _state(self, model: str) -> _ModelState:
        state = self._states.get(model)
        if state is None:
            state = _ModelState(self._spec(model))
            current = self.registry.current(model)
            if current is not None:
                self._install(state, current)
            self._states[model] = state
        return state

    def _install(self, state: _ModelState, record: ModelVersion) -> None:
        if record.artifact_uri is None or record.sha256 is None:
            raise RegistryError(f"{record.model} version {record.version} has no artifact to load")
        champion = self.store.load(record.artifact_uri, record.sha256)
        if not isinstance(champion, OnlineModel):
            raise ArtifactError(record.artifact_uri, f"holds a {type(champion).__name__}, not an OnlineModel")
        state.champion = champion
        state.champion_version = record.version

    def _sync(self, model: str, state: _ModelState) -> None:
        # Another process (the CLI's rollback) may have changed the current
        # version; the champion follows the registry, never the reverse.
        self.registry.refresh()
        current = self.registry.current(model)
        if current is not None and current.version != state.champion_version:
            log.info("model %s: champion follows registry to version %s", model, current.version)
            self._install(state, current)

    def champion(self, model: str) -> OnlineModel | None:
        """The model's in-memory champion (learning online), if it has one yet."""
        return self._state(model).champion

    def champion_version(self, model: str) -> str | None:
        """The registered version the in-memory champion started from."""
        return self._state(model).champion_version

    def n_buffered(self, model: str) -> int:
        """Examples kept for ``model`` (history plus holdout)."""
        state = self._state(model)
        return len(state.history) + len(state.holdout)

    def waiting_triggers(self, model: str) -> list[RetrainTrigger]:
        """Triggers for ``model`` that wait for enough data, oldest first."""
        return list(self._state(model).waiting.values())

    # -- commands ------------------------------------------------------------

    def learn(self, example: LabelledExample) -> list[ModelVersion]:
        """Buffer one labelled example and let the champion learn the one it displaces.

        Returns the records to publish, which is empty except when this example
        completes the bootstrap of a model's first version.

        Raises
        ------
        UnknownModel
            No learner is configured for the example's model.
        BadExample
            The outcome cannot be a target for this learner (e.g. a string to regress on).
        """
        model = example.prediction.model
        state = self._state(model)
        x, y = example_to_xy(example, state.spec.task)
        if state.champion is None:
            state.champion = OnlineModel(state.spec)
        if len(state.holdout) == state.holdout.maxlen:
            aged = state.holdout.popleft()
            state.champion.learn_one(aged.x, aged.y)
            state.history.append(aged)
            if state.learned_from is None or aged.event_time < state.learned_from:
                state.learned_from = aged.event_time
            if state.learned_to is None or aged.event_time > state.learned_to:
                state.learned_to = aged.event_time
        state.holdout.append(_Example(example.prediction.event_time, x, y))
        if state.champion_version is None and state.champion.n_learned >= state.spec.min_training_examples:
            return [self._bootstrap(model, state, now=example.outcome.event_time)]
        return []

    def _bootstrap(self, model: str, state: _ModelState, now: datetime) -> ModelVersion:
        assert state.champion is not None
        version = self.registry.next_version(model)
        stored = self.store.save(state.champion, model, version)
        metric = state.spec.metric
        record = ModelVersion(
            model=model,
            version=version,
            status="promoted",
            created_at=now,
            data_from=state.learned_from,
            data_to=state.learned_to,
            n_examples=state.champion.n_learned,
            metrics={f"progressive_{metric}": state.champion.progressive_metric},
            artifact_uri=stored.uri,
            sha256=stored.sha256,
            reason=f"bootstrap: first champion, learnt online from {state.champion.n_learned} examples",
        )
        self.registry.record([record])
        state.champion_version = version
        return record

    def on_trigger(self, trigger: RetrainTrigger, now: datetime) -> list[ModelVersion]:
        """Train a challenger for ``trigger``, compare it with the champion and register both.

        Returns ``[candidate, decision]`` (the decision is the same version,
        ``promoted`` or ``rejected``, with the reason), or ``[]`` if the
        trigger was already handled or must wait for data (see :meth:`poll`).
        """
        if self.registry.is_trigger_handled(trigger.trigger_id):
            log.info("trigger %s already handled; ignored", trigger.trigger_id)
            return []
        state = self._state(trigger.model)
        self._sync(trigger.model, state)
        if self.registry.is_trigger_handled(trigger.trigger_id):
            return []
        state.waiting[trigger.trigger_id] = trigger
        while len(state.waiting) > MAX_WAITING_TRIGGERS:
            dropped, _ = state.waiting.popitem(last=False)
            log.warning("model %s: too many waiting triggers; dropped %s", trigger.model, dropped)
        return self._run(state, trigger, now)

    def poll(self, now: datetime) -> list[ModelVersion]:
        """Run every waiting trigger that now has enough data; returns the records to publish."""
        published: list[ModelVersion] = []
        for model, state in self._states.items():
            if not state.waiting:
                continue
            self._sync(model, state)
            for trigger in list(state.waiting.values()):
                published += self._run(state, trigger, now)
        return published

    def _run(self, state: _ModelState, trigger: RetrainTrigger, now: datetime) -> list[ModelVersion]:
        spec = state.spec
        training = [e for e in state.history if e.event_time >= trigger.data_from]
        if state.champion is None or state.champion_version is None or len(state.holdout) < spec.holdout_size or len(training) < spec.min_training_examples:
            log.info(
                "trigger %s waits: %d of %d training examples since %s, holdout %d of %d, champion %s",
                trigger.trigger_id, len(training), spec.min_training_examples, trigger.data_from.isoformat(),
                len(state.holdout), spec.holdout_size, state.champion_version,
            )
            return []
        if self.registry.is_trigger_handled(trigger.trigger_id):
            state.waiting.pop(trigger.trigger_id, None)
            return []

        if spec.warm_start:
            challenger = state.champion.copy()
            challenger.reset_metric()
        else:
            challenger = OnlineModel(spec)
        for e in training:
            challenger.learn_one(e.x, e.y)
        holdout = [(e.x, e.y) for e in state.holdout]
        result = evaluate(state.champion, challenger, holdout, spec)

        version = self.registry.next_version(trigger.model)
        stored = self.store.save(challenger, trigger.model, version)
        candidate = ModelVersion(
            model=trigger.model,
            version=version,
            status="candidate",
            parent_version=state.champion_version,
            trigger_id=trigger.trigger_id,
            alert_ids=list(trigger.alert_ids),
            created_at=now,
            data_from=min(e.event_time for e in training),
            data_to=max(e.event_time for e in training),
            n_examples=len(training),
            metrics=self._metrics(result, challenger, spec),
            artifact_uri=stored.uri,
            sha256=stored.sha256,
            lineage=lineage_of(spec),
            reason=(
                f"challenger for trigger {trigger.trigger_id} ({trigger.reason}), "
                f"{'warm-started from' if spec.warm_start else 'trained from scratch beside'} "
                f"version {state.champion_version}, on {len(training)} examples since {trigger.data_from.isoformat()}"
            ),
        )
        decision = candidate.model_copy(update={"status": "promoted" if result.promote else "rejected", "reason": result.reason})
        self.registry.record([candidate, decision], handled_trigger=trigger.trigger_id)
        state.waiting.pop(trigger.trigger_id, None)
        if result.promote:
            state.champion = challenger
            state.champion_version = version
        log.info("model %s version %s %s: %s", trigger.model, version, decision.status, result.reason)
        return [candidate, decision]

    @staticmethod
    def _metrics(result: Evaluation, challenger: OnlineModel, spec: LearnerSpec) -> dict[str, float]:
        m = result.metric
        return {
            f"challenger_{m}": result.challenger,
            f"champion_{m}": result.champion,
            f"challenger_progressive_{m}": challenger.progressive_metric,
            "n_holdout": float(result.n_holdout),
            "promotion_margin": result.margin,
            "warm_start": 1.0 if spec.warm_start else 0.0,
        }

    def rollback(self, model: str, now: datetime, reason: str = "") -> list[ModelVersion]:
        """Roll ``model`` back to its previously promoted version and make that the champion.

        Returns the registry's two records (``rolled_back``, ``promoted``) to publish.
        """
        state = self._state(model)
        records = self.registry.rollback(model, now=now, reason=reason)
        self._install(state, records[-1])
        return records


def register_initial_version(
    registry: ModelRegistry,
    store: ArtifactStore,
    model: str,
    trained: OnlineModel,
    now: datetime,
    *,
    data_from: datetime | None = None,
    data_to: datetime | None = None,
    reason: str = "",
) -> ModelVersion:
    """Register a model trained elsewhere (offline, say) as the first promoted version of ``model``.

    This is how a model that already ships is put under the retrainer: its
    current version is then the champion the retrainer loads and challengers
    are compared with, and serving apps load it from the models topic.

    Raises
    ------
    RegistryError
        ``model`` already has versions: the first version can be registered once.

    Examples
    --------
    >>> import tempfile
    >>> from datetime import timezone
    >>> from retrainer.artifacts import LocalArtifactStore
    >>> root = tempfile.mkdtemp()
    >>> registry, store = ModelRegistry(f"{root}/registry.jsonl"), LocalArtifactStore(f"{root}/artifacts")
    >>> trained = OnlineModel(LearnerSpec())
    >>> for i in range(50):
    ...     _ = trained.learn_one({"a": i % 2}, i % 2 == 1)
    >>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> record = register_initial_version(registry, store, "churn", trained, now, reason="trained offline")
    >>> record.version, record.status, record.n_examples, registry.current("churn") == record
    ('1', 'promoted', 50, True)
    >>> register_initial_version(registry, store, "churn", trained, now)
    Traceback (most recent call last):
    ...
    retrainer.exceptions.RegistryError: model 'churn' already has versions; register a first version only once
    """
    if registry.history(model):
        raise RegistryError(f"model {model!r} already has versions; register a first version only once")
    version = registry.next_version(model)
    stored = store.save(trained, model, version)
    record = ModelVersion(
        model=model,
        version=version,
        status="promoted",
        created_at=now,
        data_from=data_from,
        data_to=data_to,
        n_examples=trained.n_learned,
        metrics={f"progressive_{trained.spec.metric}": trained.progressive_metric},
        artifact_uri=stored.uri,
        sha256=stored.sha256,
        reason=reason or f"registered: trained outside the retrainer on {trained.n_learned} examples",
    )
    registry.record([record])
    return record


def lineage_of(spec: LearnerSpec) -> dict[str, str]:
    """What a version was made with: the learner and the versions of the libraries that trained it.

    >>> from retrainer.config import LearnerSpec
    >>> sorted(lineage_of(LearnerSpec(kind="logistic_regression")))
    ['driftline', 'learner', 'numpy', 'python', 'river']
    """
    import json
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    return {
        "learner": json.dumps(spec.model_dump(mode="json"), sort_keys=True)[:1024],
        "python": platform.python_version(),
        "river": installed("river"),
        "numpy": installed("numpy"),
        "driftline": installed("driftline"),
    }
