"""Two workers in one consumer group split the monitored models between them and give the same alerts as one.

One module-scoped run on the real broker, checked by several tests:

* run A: one worker alone over the events;
* run B: two workers in one consumer group (one app id and topic prefix, their own web ports and data
  dirs), both holding partitions before the first event is produced;
* run C: one worker, joined by a second one while traffic flows, so that the group rebalances mid-stream
  and models move, their monitor state and waiting join state with them;
* the reference: ``detectors.monitors.backtest.run_backtest`` over the same events, what the worker's own code
  says with no Kafka at all.

Eight copies of the speech scenario (different model names and seeds) decay and then recover, so every
model fires and resolves alerts.  Their names are chosen so that every partition of a topic keyed by
model (murmur2, as Kafka's Java client and faust's producer place keys) holds two of them: however the
group splits the partitions, each worker owns some models.  Only public topics (predictions, outcomes,
alerts) and each worker's metrics are read, never an internal topic.  Alerts are compared as what an
on-call engineer is told, ``(alert_id, status, event_time, statistic)``, and read to the alert topic's end
offsets once every example is scored.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from aiokafka.partitioner import murmur2
from pydantic import TypeAdapter

from detectors.monitors.backtest import run_backtest
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.events import Alert, OutcomeEvent, PredictionEvent
from streams.client import PredictionLogger
from streams.processes import metric_sum, metric_value
from streams.scenarios import SpeechScenario
from tests.integration.harness import (
    AlertFacts,
    Worker,
    WorkerGroup,
    alert_facts,
    assigned_partitions,
    read_to_end_when,
    running_group,
    running_workers,
)
from tests.speech_monitors import SPEECH_MONITORS

pytestmark = pytest.mark.integration

ALERTS = TypeAdapter(Alert)
PARTITIONS = 4
MODELS_PER_PARTITION = 2
# Per model: 1,500 utterances that decay (92% -> 78% at 600), then 900 that recover (78% -> 95% at 300).
# A 200-example window (the shared monitors use 500) fires and resolves within that, so the run stays short.
DECAY, DECAY_AT, RECOVERY, RECOVERY_AT, WINDOW = 1500, 600, 900, 300, 200
N_PER_MODEL = DECAY + RECOVERY
SAMPLES = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _model_names() -> list[str]:
    """``MODELS_PER_PARTITION`` model names on each of the ``PARTITIONS`` partitions of a topic keyed by model."""
    names: list[str] = []
    per_partition: Counter[int] = Counter()
    for i in range(1000):
        name = f"speech-{i:03d}"
        partition = (murmur2(name.encode()) & 0x7FFFFFFF) % PARTITIONS
        if per_partition[partition] < MODELS_PER_PARTITION:
            per_partition[partition] += 1
            names.append(name)
        if len(names) == PARTITIONS * MODELS_PER_PARTITION:
            return names
    raise AssertionError(f"no {MODELS_PER_PARTITION} names per partition among 1,000: {per_partition}")


MODELS = _model_names()


def _monitor_config() -> str:
    """SPEECH_MONITORS' monitors for every model, with the shorter window."""
    spec = yaml.safe_load(SPEECH_MONITORS)["models"]["speech-asr"]
    spec["performance"]["window"] = WINDOW
    return yaml.safe_dump({"models": {model: spec for model in MODELS}})


def _events() -> list[tuple[PredictionEvent, OutcomeEvent]]:
    """Every model's utterances, interleaved in event-time order as live traffic would be."""
    per_model = []
    for i, model in enumerate(MODELS):
        decay = SpeechScenario(n_events=DECAY, change_at=DECAY_AT, accuracy_after=0.78, seed=100 + i, model=model)
        recovery = SpeechScenario(n_events=RECOVERY, change_at=RECOVERY_AT, accuracy_before=0.78,
                                  accuracy_after=0.95, seed=200 + i, model=model,
                                  start=decay.start + timedelta(seconds=DECAY * decay.seconds_apart))
        per_model.append(list(decay.events()) + list(recovery.events()))
    return [pairs[j] for j in range(N_PER_MODEL) for pairs in per_model]


def _log_tails(workers: Sequence[Worker], n_chars: int = 2500) -> str:
    return "\n".join(f"--- {w.log_path.name} (port {w.web_port}) ---\n{w.log_path.read_text(errors='replace')[-n_chars:]}"
                     for w in workers)


def _wait(condition: Callable[[], bool], timeout: float, what: str, workers: Sequence[Worker]) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, or fail with every worker's log tail."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{_log_tails(workers)}")


def _late_events(samples: Sequence[SAMPLES]) -> list[dict[str, float]]:
    """Per worker, the events each ordering stage got after its watermark had passed them."""
    return [{stage: metric_value(s, "driftline_events_late_total", stage=stage) for stage in ("ingest", "monitor")}
            for s in samples]


def _all_done(workers: Sequence[Worker], n_examples: int) -> bool:
    """Every event joined, nothing pending or held, and every example scored by a monitor."""
    samples = [w.metrics() for w in workers]
    if not all(samples):
        return False
    return (sum(metric_sum(s, "driftline_events_processed_total", source="prediction") for s in samples) >= n_examples
            and sum(metric_sum(s, "driftline_examples_total") for s in samples) >= n_examples
            and all(metric_sum(s, "driftline_join_pending") == 0 and metric_sum(s, "driftline_join_held") == 0 for s in samples))


@dataclass
class Run:
    """What one run published and what its workers counted once everything was processed."""

    workers: list[Worker]
    alerts: list[Alert]
    samples: list[SAMPLES]
    assignment_before: list[set[int]]
    assignment_after: list[set[int]]
    seconds: float

    @property
    def alert_ids(self) -> list[str]:
        return [a.alert_id for a in self.alerts]

    @property
    def name(self) -> str:
        return f"{len(self.workers)} worker(s)" + (", rebalanced mid-stream" if self.rebalanced_at else "")

    #: The examples the first worker had scored when the second one joined (run C only).
    rebalanced_at: float = 0.0

    def logs(self) -> str:
        return _log_tails(self.workers)


@dataclass
class Runs:
    reference: list[Alert]
    one: Run
    two: Run
    rebalanced: Run
    n_examples: int

    @property
    def all(self) -> list[Run]:
        return [self.one, self.two, self.rebalanced]


def _assignment(bootstrap: str, worker: Worker, n_members: int) -> list[set[int]]:
    """Each member's predictions partitions, once the group is stable with every partition held."""
    members = assigned_partitions(bootstrap, worker.settings.ingest_group, worker.topics.predictions)
    held = [p for partitions in members for p in partitions]
    if len(members) == n_members and all(members) and sorted(held) == list(range(PARTITIONS)):
        return sorted(members, key=min)
    return []


def _wait_for_group(bootstrap: str, workers: list[Worker], timeout: float) -> list[set[int]]:
    """Wait until every worker answers and the group has settled: the same full assignment twice, 2 s apart."""
    seen: list[list[set[int]]] = [[]]

    def settled() -> bool:
        if not all(w.metrics() for w in workers):
            return False
        now = _assignment(bootstrap, workers[0], len(workers))
        stable = bool(now) and now == seen[-1]
        seen.append(now)
        if not stable:
            time.sleep(1.5)
        return stable

    _wait(settled, timeout, f"{len(workers)} worker(s) each holding partitions of a stable group", workers)
    return seen[-1]


def _produce(worker: Worker, events: list[tuple[PredictionEvent, OutcomeEvent]], per_second: float = 0) -> None:
    """Send the events as fast as the producer goes, or at ``per_second`` pairs a second."""
    logger = PredictionLogger(worker.settings.confluent_config(), worker.topics)
    started = time.monotonic()
    for i, (prediction, outcome) in enumerate(events):
        logger.log_prediction(prediction)
        logger.log_outcome(outcome)
        ahead = (i + 1) / per_second - (time.monotonic() - started) if per_second else 0
        if ahead > 0:
            logger.flush(0)
            time.sleep(ahead)
    assert logger.flush(60) == 0, "the producer could not deliver every event"
    assert logger.stats.n_delivered == 2 * len(events)


def _produce_through_a_rebalance(group: WorkerGroup, events: list[tuple[PredictionEvent, OutcomeEvent]]) -> float:
    """A third of the events to the group's one worker; once it has scored some, a second worker joins and the
    rest flow, paced, while the group rebalances.  Returns what the first worker had scored then."""
    first = group.workers[0]
    _produce(first, events[:len(events) // 3])
    _wait(lambda: first.metric("driftline_examples_total") >= len(events) // 10, 60, "the first worker scoring",
          group.workers)
    scored = first.metric("driftline_examples_total")
    second = group.start()
    # The rest flows once the second worker is up and about to join, paced so that the group rebalances while
    # it does (about 13 s of traffic; the join takes a few).
    _wait(lambda: bool(second.metrics()), 60, "the second worker's metrics", group.workers)
    _produce(first, events[len(events) // 3:], per_second=1000)
    return scored


def _finish(bootstrap: str, workers: list[Worker], before: list[set[int]], produced_at: float,
            n_examples: int) -> Run:
    _wait(lambda: _all_done(workers, n_examples), 120,
          f"all {n_examples:,} examples processed by {len(workers)} worker(s)", workers)
    seconds = time.monotonic() - produced_at
    # Once a worker's examples are all scored, its alert count is final (counted in the step that scored them).
    samples = [w.metrics() for w in workers]
    n_published = sum(metric_value(s, "driftline_alerts_total") for s in samples)
    alerts = [ALERTS.validate_json(m.value())
              for m in read_to_end_when(bootstrap, workers[0].topics.alerts, lambda ms: len(ms) >= n_published)]
    after = _wait_for_group(bootstrap, workers, 60)
    late = _late_events(samples)
    print(f"{len(workers)} worker(s): all processed within {seconds:.1f} s of the first event produced, "
          f"{len(alerts)} alerts, late events per worker {late}")
    return Run(workers, alerts, samples, before, after, seconds)


@pytest.fixture(scope="module")
def runs(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    tmp_path: Path = tmp_path_factory.mktemp("two-workers")
    config = _monitor_config()
    events = _events()
    lines = [e.model_dump_json() for pair in events for e in pair]
    reference = run_backtest(lines, MonitorConfig.model_validate(yaml.safe_load(config)), build_detector).alerts
    settings = {"partitions": str(PARTITIONS)}
    with ExitStack() as stack:
        # The runs at once, on their own topics and consumer groups, so that their workers start in parallel.
        groups = [stack.enter_context(running_workers(kafka_bootstrap, tmp_path, config, n, **settings))
                  for n in (1, 2)]
        joined = stack.enter_context(running_group(kafka_bootstrap, tmp_path, config, **settings))
        joined.start()
        started = time.monotonic()
        before = [_wait_for_group(kafka_bootstrap, workers, 90) for workers in [*groups, joined.workers]]
        print(f"groups settled in {time.monotonic() - started:.1f} s; the two workers hold {before[1]}")
        produced_at = []
        for workers in groups:
            produced_at.append(time.monotonic())
            _produce(workers[0], events)
        rebalance_at = time.monotonic()
        scored_then = _produce_through_a_rebalance(joined, events)
        one, two = (_finish(kafka_bootstrap, workers, b, t, len(events))
                    for workers, b, t in zip(groups, before, produced_at))
        rebalanced = _finish(kafka_bootstrap, joined.workers, before[2], rebalance_at, len(events))
        rebalanced.rebalanced_at = scored_then
        yield Runs(reference, one, two, rebalanced, len(events))


def _by_model(alerts: Sequence[Alert]) -> dict[str, list[AlertFacts]]:
    """Each model's :func:`alert_facts`, in the order published (the alerts topic is keyed by model: one
    partition each)."""
    return {model: alert_facts([a for a in alerts if a.model == model]) for model in {a.model for a in alerts}}


def _differences(run: Run, reference: Sequence[Alert]) -> str:
    got, want = _by_model(run.alerts), _by_model(reference)
    lines = [f"  {model}:\n    {run.name}: {got.get(model)}\n    expected: {want.get(model)}"
             for model in sorted(set(got) | set(want)) if got.get(model) != want.get(model)]
    return "\n".join(lines) + f"\nlate events per worker: {_late_events(run.samples)}\n{run.logs()}"


def test_reference_fires_and_resolves_for_every_model(runs: Runs) -> None:
    """Without alerts on every model, the comparisons below would prove nothing."""
    for status in ("fired", "resolved"):
        assert {a.model for a in runs.reference if a.status == status} == set(MODELS), status


def test_one_worker_gives_the_backtest_alerts(runs: Runs) -> None:
    """What lets the backtest stand for an uninterrupted worker elsewhere (``test_kill_recovery.py``)."""
    assert _by_model(runs.one.alerts) == _by_model(runs.reference), _differences(runs.one, runs.reference)


def test_no_event_is_late_in_any_run(runs: Runs) -> None:
    """An event that reaches an ordering stage after its watermark is scored out of order: the one known way
    for the alerts to differ.  None may be late here, rebalance or not."""
    for run in runs.all:
        assert all(late == {"ingest": 0, "monitor": 0} for late in _late_events(run.samples)), (
            run.name, _late_events(run.samples))


def test_two_workers_split_the_models_into_disjoint_shares(runs: Runs) -> None:
    two = runs.two
    assert two.assignment_after == two.assignment_before, (
        f"the group rebalanced while events were processed: {two.assignment_before} -> {two.assignment_after}")
    shares = []
    for worker, samples in zip(two.workers, two.samples):
        counts = {m: metric_sum(samples, "driftline_examples_total", model=m) for m in MODELS}
        share = {m for m, n in counts.items() if n > 0}
        assert share, f"worker on port {worker.web_port} scored no model: {counts}\n{two.logs()}"
        # A model is scored whole by one worker, and only its owner alerts on it.
        assert all(counts[m] == N_PER_MODEL for m in share), (worker.web_port, counts)
        alerted = {m for m in MODELS if metric_sum(samples, "driftline_alerts_total", model=m) > 0}
        assert alerted <= share, (worker.web_port, alerted, share)
        shares.append(share)
    assert not shares[0] & shares[1], f"a model scored by both workers: {shares[0] & shares[1]}"
    assert shares[0] | shares[1] == set(MODELS), f"models scored by neither worker: {set(MODELS) - shares[0] - shares[1]}"


def test_every_event_is_accounted_for_across_both_workers(runs: Runs) -> None:
    for run in runs.all:
        for side in ("prediction", "outcome"):
            read, restored, processed, dead, expired, pending, handed_over, replayed = (
                sum(metric_value(s, name, **({} if name == "driftline_join_pending" else {"source": side}))
                    for s in run.samples)
                for name in ("driftline_events_read_total", "driftline_join_restored_total",
                             "driftline_events_processed_total", "driftline_events_dead_lettered_total",
                             "driftline_events_expired_total", "driftline_join_pending",
                             "driftline_join_handed_over_total", "driftline_events_replayed_total"))
            where = f"{run.name}, {side}s"
            assert read + restored == processed + dead + expired + pending + handed_over + replayed, where
            # Each event processed once, by one worker or the other: none lost, none joined twice.
            assert (processed, dead, expired, pending) == (runs.n_examples, 0, 0, 0), where
            if not run.rebalanced_at:
                assert (read, restored, handed_over, replayed) == (runs.n_examples, 0, 0, 0), where
            assert all(metric_sum(s, "driftline_events_read_total", source=side) > 0 for s in run.samples), (
                f"{where}: a worker read none of its source partitions")


def test_no_alert_is_published_twice(runs: Runs) -> None:
    for run in runs.all:
        repeated = {i: n for i, n in Counter(run.alert_ids).items() if n > 1}
        assert not repeated, f"{run.name} published alerts more than once: {repeated}"


def test_two_workers_give_the_same_alerts_as_one(runs: Runs) -> None:
    one, two = runs.one, runs.two
    assert _by_model(two.alerts) == _by_model(one.alerts), _differences(two, one.alerts)


def test_a_rebalance_mid_stream_gives_the_backtest_alerts(runs: Runs) -> None:
    run = runs.rebalanced
    scored = [{m: metric_sum(s, "driftline_examples_total", model=m) for m in MODELS} for s in run.samples]
    moved = {m for m in MODELS if scored[0][m] > 0 and scored[1][m] > 0}
    print(f"rebalanced after {run.rebalanced_at:.0f} of {runs.n_examples} examples; shares before "
          f"{run.assignment_before}, after {run.assignment_after}; models scored by both workers: {sorted(moved)}")
    # Mid-stream: the second worker joined once the first had scored some but not all, and took models over.
    assert 0 < run.rebalanced_at < runs.n_examples
    assert len(run.assignment_after) == 2 and moved, (run.assignment_after, scored)
    assert all(scored[0][m] + scored[1][m] == N_PER_MODEL for m in moved), scored
    assert _by_model(run.alerts) == _by_model(runs.reference), _differences(run, runs.reference)
