"""kill -9 while traffic flows, at three points of one stream: the restarted workers publish the very alerts
of an uninterrupted run, once each.

One run per seed, on the real broker, one partition, traffic paced by a producer thread that never stops for
the kills.  A speech model decays (it fires) and recovers (it resolves).  The worker is killed three times,
each time where a crash can lose or repeat something:

1. **the join waits**: predictions lead their outcomes by ``LAG``, so about ``LAG`` of them wait in the join;
2. **right after an alert**: as soon as the first fired alert is published;
3. **scored, not checkpointed**: once the monitor holds ``UNWRITTEN`` or more examples its last checkpoint
   (its own, so its acks have been committed) does not.

Each restarted worker gets a fresh data dir, so its state comes from Kafka (the join's and the monitor state's
changelogs), never from local files.  The reference is ``run_backtest`` over the same events: the worker's own
pure code with no Kafka, which ``test_two_workers.py::test_one_worker_gives_the_backtest_alerts`` shows gives
what an uninterrupted worker publishes, ``(alert_id, status, event_time, statistic)`` included.

The first seed runs by default; the others carry the ``crash_matrix`` marker (``make test`` runs them too).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from detectors.monitors.backtest import run_backtest
from detectors.registry import build_detector
from schemas.config import MonitorConfig
from schemas.events import Alert, MonitorBatch, OutcomeEvent, PredictionEvent
from streams.client import PredictionLogger
from streams.processes import free_port, metric_sum, scrape_metrics, stop_worker
from streams.scenarios import SpeechScenario
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.worker.monitor import EXIT_FAULT_INJECTED
from tests.integration.harness import alert_facts, read_to_end, settings_of, start_worker, worker_env
from tests.speech_monitors import SPEECH_MONITORS

pytestmark = pytest.mark.integration

ALERTS = TypeAdapter(Alert)
MODEL = "speech-asr"
# 1,200 utterances that decay (92% -> 78% at 400), then 800 that recover (78% -> 95% at 200), with a
# 200-example window: the backtest fires near utterance 500 and resolves near 1,500 for seeds 1-4.
DECAY, DECAY_AT, RECOVERY, RECOVERY_AT, WINDOW = 1200, 400, 800, 200, 200
N = DECAY + RECOVERY
LAG = 100  # outcomes are sent this many utterances after their predictions: that many wait in the join
PER_SECOND = 80  # utterances a second: the traffic outlasts the three restarts
UNWRITTEN = 60
SEEDS = [1, pytest.param(2, marks=pytest.mark.crash_matrix), pytest.param(3, marks=pytest.mark.crash_matrix)]


def _config() -> str:
    spec = yaml.safe_load(SPEECH_MONITORS)
    spec["models"][MODEL]["performance"]["window"] = WINDOW
    return yaml.safe_dump(spec)


def _events(seed: int) -> list[tuple[PredictionEvent, OutcomeEvent]]:
    decay = SpeechScenario(n_events=DECAY, change_at=DECAY_AT, accuracy_after=0.78, seed=seed)
    recovery = SpeechScenario(n_events=RECOVERY, change_at=RECOVERY_AT, accuracy_before=0.78, accuracy_after=0.95,
                              seed=seed + 50, start=decay.start + timedelta(seconds=DECAY * decay.seconds_apart))
    return list(decay.events()) + list(recovery.events())


def _sent_in_order(pairs: list[tuple[PredictionEvent, OutcomeEvent]]) -> list[PredictionEvent | OutcomeEvent]:
    """Every event in the order the producer sends it: each outcome ``LAG`` utterances after its prediction."""
    out: list[PredictionEvent | OutcomeEvent] = []
    for i, (prediction, _) in enumerate(pairs):
        out.append(prediction)
        if i >= LAG:
            out.append(pairs[i - LAG][1])
    return out + [outcome for _, outcome in pairs[-LAG:]]


def _checkpoint_page(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/checkpoint", timeout=2) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except OSError:
        return {}


class PacedProducer(threading.Thread):
    """Sends the events at ``PER_SECOND`` utterances a second, whatever happens to the workers, until
    :meth:`rush` lets the rest go at once (once the last worker is up, pacing only makes the test longer)."""

    def __init__(self, settings: Settings, events: list[PredictionEvent | OutcomeEvent]) -> None:
        super().__init__(daemon=True)
        self._logger = PredictionLogger(settings.confluent_config(), settings.topics)
        self._events = events
        self._rushed = threading.Event()
        self.n_sent = 0
        self.error: BaseException | None = None

    def rush(self) -> None:
        self._rushed.set()

    def run(self) -> None:
        try:
            started, n_predictions = time.monotonic(), 0
            for event in self._events:
                if isinstance(event, PredictionEvent):
                    self._logger.log_prediction(event)
                    n_predictions += 1
                    ahead = n_predictions / PER_SECOND - (time.monotonic() - started)
                    if ahead > 0 and not self._rushed.is_set():
                        self._logger.flush(0)
                        self._rushed.wait(ahead)
                else:
                    self._logger.log_outcome(event)
                self.n_sent += 1
            assert self._logger.flush(30) == 0, "the producer could not deliver every event"
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self.error = exc


@dataclass
class Incarnation:
    """One worker process of the run, on its own fresh data dir and web port."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(scrape_metrics(self.port), name, **labels)

    def state(self) -> dict[str, Any]:
        return _checkpoint_page(self.port)

    def tail(self) -> str:
        return f"--- {self.log_path.name} ---\n{self.log_path.read_text(errors='replace')[-3000:]}"


@dataclass(frozen=True)
class KillPoint:
    name: str
    reached: Callable[[Incarnation], bool]


def _join_waits(worker: Incarnation) -> bool:
    return worker.metric("driftline_examples_total") >= 150 and worker.metric("driftline_join_pending") >= LAG // 2


def _just_alerted(worker: Incarnation) -> bool:
    return worker.metric("driftline_alerts_total", status="fired") >= 1


def _scored_not_checkpointed(worker: Incarnation) -> bool:
    # After this worker's own first checkpoint: its acks are committed, and the kill must not lose what they
    # passed over (faust acks the messages it skips in a rebalance too; see streams.worker.commit_limit).
    state = worker.state()
    seen, written = state.get("n_seen", {}).get(MODEL, 0), state.get("written_seen", {}).get(MODEL, 0)
    return seen >= 700 and written > 0 and seen - written >= UNWRITTEN


def _start(env: dict[str, str], tmp_path: Path, i: int, **extra: str) -> Incarnation:
    port, name = free_port(), f"worker-{i}"
    own = {"DRIFTLINE_WEB_PORT": str(port), "DRIFTLINE_DATA_DIR": str(tmp_path / name)}  # fresh each time
    return Incarnation(start_worker({**env, **own, **extra}, tmp_path / f"{name}.log"), port, tmp_path / f"{name}.log")


def _run_of(kafka_bootstrap: str, tmp_path: Path, seed: int) -> tuple[dict[str, str], Settings,
                                                                        list[PredictionEvent | OutcomeEvent], list[Alert]]:
    """The workers' environment and settings (one partition), the events the producer sends, the backtest's alerts."""
    config_path = tmp_path / "monitors.yaml"
    config_yaml = _config()
    config_path.write_text(config_yaml)
    # A killed member leaves the group after one session timeout (6 s, the broker's minimum); checkpoints
    # every 3 s leave the "scored, not checkpointed" window open for most of each interval.
    env = worker_env(kafka_bootstrap, uuid.uuid4().hex[:10], config_path, app="driftline-kill", partitions="1",
                     checkpoint_seconds="3", broker_session_timeout="6", broker_request_timeout="6")
    settings = settings_of(env)
    ensure_topics(settings)
    sent = _sent_in_order(_events(seed))
    expected = run_backtest([e.model_dump_json() for e in sent], MonitorConfig.model_validate(yaml.safe_load(config_yaml)),
                            build_detector).alerts
    assert [a.status for a in expected] == ["fired", "resolved"], alert_facts(expected)
    return env, settings, sent, expected


KILL_POINTS = [KillPoint("join waits", _join_waits), KillPoint("right after an alert", _just_alerted),
               KillPoint("scored, not checkpointed", _scored_not_checkpointed)]


def _wait(condition: Callable[[], bool], timeout: float, what: str, worker: Incarnation) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.proc.returncode}) while waiting for {what}\n{worker.tail()}")
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\nstate: {worker.state()}\n{_progress(worker)}\n"
                         f"{_restores(worker)}\n{worker.tail()}\n"
                         f"--- where our code waits (SIGUSR1) ---\n{_our_frames(worker)}")


def _restores(worker: Incarnation) -> str:
    """Where every incarnation of the run restored its state from and started reading, for a timeout's message."""
    lines = []
    for log_path in sorted(worker.log_path.parent.glob("worker-*.log")):
        lines += [f"{log_path.stem}: {line}" for line in log_path.read_text(errors="replace").splitlines()
                  if "from its checkpoint" in line or "reading from offset" in line or "changelog records" in line]
    return "--- restores ---\n" + "\n".join(lines)


def _monitor_input_contents(bootstrap: str, settings: Settings) -> str:
    """Which monitor-input offsets carry labelled examples, and how many distinct ones there are: a loss with
    all N on the topic is the monitor stage's, fewer is the ingest stage's."""
    ids: set[str] = set()
    rows = []
    for message in read_to_end(bootstrap, settings.topics.monitor_input):
        batch = MonitorBatch.model_validate_json(message.value() or b"{}")
        if batch.labelled:
            ids.update(e.prediction.prediction_id for e in batch.labelled)
            rows.append(f"{message.offset()}:{len(batch.labelled)}")
    return (f"--- monitor-input: {len(ids)} distinct labelled examples of {N}; offset:count "
            f"{' '.join(rows)}")


def _our_frames(worker: Incarnation) -> str:
    """Our frames in every thread and asyncio task of the worker: mode's worker prints the stacks on SIGUSR1."""
    start = worker.log_path.stat().st_size
    worker.proc.send_signal(signal.SIGUSR1)
    time.sleep(2)
    with worker.log_path.open(errors="replace") as log:
        log.seek(start)
        lines = log.read().splitlines()
    keep = [i for i, line in enumerate(lines) if line.startswith("THREAD ")
            or line.lstrip().startswith("File ") and ("/streams/" in line or "/detectors/" in line)]
    return "\n".join(lines[i] + ("" if lines[i].startswith("THREAD ") or i + 1 >= len(lines) else "\n" + lines[i + 1])
                     for i in keep)


def _progress(worker: Incarnation) -> str:
    """Where each stage stands, for a timeout's message: which one stopped."""
    samples = scrape_metrics(worker.port)
    names = ("driftline_events_read_total", "driftline_events_processed_total", "driftline_join_pending",
             "driftline_examples_total", "driftline_unread_messages", "driftline_monitor_input_batches_total")
    return ", ".join(f"{name} {metric_sum(samples, name):.0f}" for name in names)


def _to_the_end(producer: PacedProducer, n_sent: int, worker: Incarnation, bootstrap: str,
                settings: Settings) -> tuple[dict[str, Any], list[Alert]]:
    """Once the producer has sent everything and a checkpoint holds all N examples: the worker's state, and every
    alert on the topic.  Alerts go out before the checkpoint that covers their examples, so by then everything
    the run will publish is there."""
    producer.join(120)
    assert producer.error is None and producer.n_sent == n_sent, (producer.error, producer.n_sent)
    try:
        _wait(lambda: worker.state().get("written_seen", {}).get(MODEL, 0) >= N, 90,
              f"a checkpoint holding all {N} examples", worker)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_monitor_input_contents(bootstrap, settings)}") from None
    final = worker.state()
    return final, [ALERTS.validate_json(m.value()) for m in read_to_end(bootstrap, settings.topics.alerts)]


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_9_while_traffic_flows_gives_the_uninterrupted_alerts_once(kafka_bootstrap: str, tmp_path: Path,
                                                                       seed: int) -> None:
    env, settings, sent, expected = _run_of(kafka_bootstrap, tmp_path, seed)

    def start(i: int) -> Incarnation:
        return _start(env, tmp_path, i)

    producer = PacedProducer(settings, sent)
    at_kill: list[dict[str, Any]] = []
    restored: list[float] = []
    worker = start(0)
    try:
        _wait(lambda: bool(scrape_metrics(worker.port)), 60, "the first worker's metrics", worker)
        producer.start()
        for i, point in enumerate(KILL_POINTS, start=1):
            _wait(lambda: point.reached(worker), 90, f"kill point {point.name!r}", worker)
            at_kill.append({"point": point.name, "sent": producer.n_sent, **worker.state()})
            print(f"seed {seed}, worker-{i - 1} killed ({point.name}): {at_kill[-1]}")  # shown if the test fails
            assert producer.is_alive(), f"traffic had stopped before the kill {point.name!r}"
            worker.proc.send_signal(signal.SIGKILL)
            assert worker.proc.wait(10) == -signal.SIGKILL
            worker = start(i)
            if i == 1:
                # The predictions waiting at the kill come back from the join's changelog, not from the sources.
                _wait(lambda: worker.metric("driftline_join_restored_total", source="prediction") > 0, 60,
                      "the waiting predictions restored from the join's changelog", worker)
                restored.append(worker.metric("driftline_join_restored_total", source="prediction"))
        producer.rush()
        final, alerts = _to_the_end(producer, len(sent), worker, kafka_bootstrap, settings)
        samples = scrape_metrics(worker.port)
    finally:
        exit_code = stop_worker(worker.proc)
    assert exit_code == 0, f"exit status {exit_code} on SIGTERM\n{worker.tail()}"
    print(f"seed {seed}: {restored[0]:.0f} predictions restored from the join's changelog; final state {final}")

    assert len(at_kill) == len(KILL_POINTS)
    assert alert_facts(alerts) == alert_facts(expected), (
        f"seed {seed}\nworkers: {alert_facts(alerts)}\nbacktest: {alert_facts(expected)}")
    assert max(Counter(a.alert_id for a in alerts).values()) == 1
    # Every example scored once across the four processes: the state holds each, duplicates were dropped.
    assert final["n_seen"][MODEL] == N and final["written_seen"][MODEL] == N, (final, _restores(worker))
    # Whatever the last worker read or restored is accounted for.
    into = metric_sum(samples, "driftline_events_read_total") + metric_sum(samples, "driftline_join_restored_total")
    out = sum(metric_sum(samples, name) for name in (
        "driftline_events_processed_total", "driftline_events_dead_lettered_total", "driftline_events_expired_total",
        "driftline_join_pending", "driftline_join_handed_over_total", "driftline_events_replayed_total"))
    assert into == out, (into, out)
    assert metric_sum(samples, "driftline_events_dead_lettered_total") == 0
    assert metric_sum(samples, "driftline_events_expired_total") == 0


@pytest.mark.parametrize("first_checkpoint", ["before the alert", "none yet"])
def test_a_crash_between_an_alert_and_its_checkpoint_publishes_it_once(kafka_bootstrap: str, tmp_path: Path,
                                                                       first_checkpoint: str) -> None:
    """The narrowest window: the first worker dies right after its first alert is acknowledged, before the
    checkpoint that covers it (the fault-injection setting ``DRIFTLINE_FAULT_EXIT_AFTER_ALERT``, which nothing
    but this test sets).  Its successor restores the older checkpoint, replays the input since and decides the
    alert again; it reads the alert topic back from the end that checkpoint recorded and does not send it twice.

    With "none yet" the first worker checkpoints every 30 s, so it dies before its first: the successor has
    nothing to restore, replays from the first message, and reads the alerts back from the partition's start.
    (A slow CI machine killed a worker there and saw the alert twice.)
    """
    env, settings, sent, expected = _run_of(kafka_bootstrap, tmp_path, seed=1)
    producer = PacedProducer(settings, sent)
    slow = {"DRIFTLINE_CHECKPOINT_SECONDS": "30"} if first_checkpoint == "none yet" else {}
    worker = _start(env, tmp_path, 0, DRIFTLINE_FAULT_EXIT_AFTER_ALERT="true", **slow)
    try:
        _wait(lambda: bool(scrape_metrics(worker.port)), 60, "the first worker's metrics", worker)
        producer.start()
        assert worker.proc.wait(90) == EXIT_FAULT_INJECTED, worker.tail()
        before = [ALERTS.validate_json(m.value()) for m in read_to_end(kafka_bootstrap, settings.topics.alerts)]
        assert alert_facts(before) == alert_facts(expected[:1]), "the first worker published the fired alert"
        assert producer.is_alive(), "traffic had stopped before the crash"
        worker = _start(env, tmp_path, 1)
        producer.rush()
        final, alerts = _to_the_end(producer, len(sent), worker, kafka_bootstrap, settings)
    finally:
        exit_code = stop_worker(worker.proc)
    assert exit_code == 0, f"exit status {exit_code} on SIGTERM\n{worker.tail()}"
    print(f"after the crash: {final}")
    # The successor did decide the fired alert again (the window was hit), and held it back.
    assert final["n_alerts_not_resent"] == 1, final
    assert (final["n_restored"] == 0) == (first_checkpoint == "none yet"), final
    assert alert_facts(alerts) == alert_facts(expected), f"workers: {alert_facts(alerts)}\nbacktest: {alert_facts(expected)}"
    assert final["n_seen"][MODEL] == N and final["written_seen"][MODEL] == N, (final, _restores(worker))
