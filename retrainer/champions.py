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
from retrainer.exceptions import ArtifactError, RegistryError, RegistryUnavailable, UnknownModel
from retrainer.learners import OnlineModel, example_to_xy
from retrainer.registry import ModelRegistry, VersionJournal
from schemas.events import Label, LabelledExample, ModelVersion, RetrainTrigger

__all__ = ["EXTERNAL_ORIGIN", "MAX_WAITING_TRIGGERS", "Retrainer", "register_initial_version"]

log = logging.getLogger(__name__)

# Triggers come from alerts, a handful per model per day; this only guards
# memory against a runaway producer.  The oldest waiting trigger is dropped.
MAX_WAITING_TRIGGERS = 64
# ``lineage["origin"]`` of a version registered outside Driftline (a person's model in MLflow named champion).
EXTERNAL_ORIGIN = "external"
# After the registry failed a bootstrap, it is tried again this many learnt examples later, not on every one.
BOOTSTRAP_RETRY_EXAMPLES = 100


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
        # Why the champion cannot be learnt from or challenged (set for an external champion that is not a
        # river model): the model is then monitored, and its triggers published, but no challenger is trained.
        self.triggers_only: str | None = None
        self.bootstrap_retry_at = 0


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
        registry: VersionJournal,
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
        external = record.lineage.get("origin") == EXTERNAL_ORIGIN
        try:
            champion = self._load_champion(state.spec, record, external)
        except (ArtifactError, RegistryError, TypeError) as exc:
            if not external or isinstance(exc, RegistryUnavailable):
                raise
            # Someone else's model (sklearn, a pyfunc, a digest we were not given): we cannot learn from it or
            # challenge it, but its predictions are still monitored and its triggers still published.
            state.champion, state.champion_version, state.triggers_only = None, record.version, str(exc)
            log.warning("model %s: champion version %s was registered outside Driftline and is not a river model "
                        "it can load (%s); monitoring it and publishing its triggers only, no challengers",
                        record.model, record.version, exc)
            return
        state.champion, state.champion_version, state.triggers_only = champion, record.version, None

    def _load_champion(self, spec: LearnerSpec, record: ModelVersion, external: bool) -> OnlineModel:
        if record.artifact_uri is None or record.sha256 is None:
            raise RegistryError(f"{record.model} version {record.version} has no artifact with a sha256 to load")
        loaded = self.store.load(record.artifact_uri, record.sha256)
        if isinstance(loaded, OnlineModel):
            return loaded
        if external:
            return OnlineModel.wrapping(spec, loaded)
        raise ArtifactError(record.artifact_uri, f"holds a {type(loaded).__name__}, not an OnlineModel")

    def triggers_only(self, model: str) -> str | None:
        """Why ``model`` gets no challengers (its champion is an external non-river model), or ``None``."""
        return self._state(model).triggers_only

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
        if state.triggers_only is not None:
            return []
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
        n = state.champion.n_learned
        if state.champion_version is None and n >= state.spec.min_training_examples and n >= state.bootstrap_retry_at:
            try:
                return [self._bootstrap(model, state, now=example.outcome.event_time)]
            except RegistryUnavailable as exc:
                state.bootstrap_retry_at = n + BOOTSTRAP_RETRY_EXAMPLES
                log.warning("model %s: bootstrap waits for the registry (retried %d examples later): %s",
                            model, BOOTSTRAP_RETRY_EXAMPLES, exc)
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
        (written,) = self.registry.record([record])
        state.champion_version = written.version
        return written

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
        if state.triggers_only is not None:
            log.warning("trigger %s: model %s gets no challenger (triggers only: %s)", trigger.trigger_id,
                        trigger.model, state.triggers_only)
            return []
        state.waiting[trigger.trigger_id] = trigger
        while len(state.waiting) > MAX_WAITING_TRIGGERS:
            dropped, _ = state.waiting.popitem(last=False)
            log.warning("model %s: too many waiting triggers; dropped %s", trigger.model, dropped)
        if not self._synced(trigger.model, state):
            return []
        if self.registry.is_trigger_handled(trigger.trigger_id):
            state.waiting.pop(trigger.trigger_id, None)
            return []
        return self._run(state, trigger, now)

    def _synced(self, model: str, state: _ModelState) -> bool:
        """:meth:`_sync`, or ``False`` (the triggers keep waiting) while the registry does not answer."""
        try:
            self._sync(model, state)
        except RegistryUnavailable as exc:
            log.warning("model %s: %d trigger(s) wait for the registry: %s", model, len(state.waiting), exc)
            return False
        return True

    def poll(self, now: datetime) -> list[ModelVersion]:
        """Run every waiting trigger that now has enough data; returns the records to publish."""
        published: list[ModelVersion] = []
        for model, state in self._states.items():
            if not state.waiting or not self._synced(model, state):
                continue
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
        try:
            stored = self.store.save(challenger, trigger.model, version)
        except RegistryUnavailable as exc:
            log.warning("trigger %s waits: the challenger could not be stored: %s", trigger.trigger_id, exc)
            return []
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
        try:
            written = self.registry.record([candidate, decision], handled_trigger=trigger.trigger_id)
        except RegistryUnavailable as exc:
            log.warning("trigger %s waits: its decision could not be registered: %s", trigger.trigger_id, exc)
            return []
        state.waiting.pop(trigger.trigger_id, None)
        final = written[-1]
        if final.status == "promoted" and final.sha256 == stored.sha256:
            state.champion, state.champion_version = challenger, final.version
        elif final.status == "promoted":
            # The registry already held a decision for this trigger (an earlier try whose answer was lost):
            # that version is the champion, not the challenger trained just now.
            self._install(state, final)
        log.info("model %s version %s %s: %s", trigger.model, final.version, final.status, final.reason)
        return written

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
    registry: VersionJournal,
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
    (written,) = registry.record([record])
    return written


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
