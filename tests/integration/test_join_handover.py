"""A second worker joins while predictions wait for their outcomes: the waiting events move with their partitions."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from schemas.events import SIDES
from streams.client import PredictionLogger
from streams.processes import free_port, stop_worker
from streams.scenarios import SpeechScenario
from streams.topics import ensure_topics
from tests.integration.harness import Worker, assigned_partitions, read_labelled, settings_of, start_worker, worker_env
from tests.speech_monitors import SPEECH_MONITORS

pytestmark = pytest.mark.integration

N_PAIRS = 2000
# Every event a worker saw, counted once: read + restored = processed + dead-lettered + expired + pending
# + handed over + replayed (see detectors.ingest.stage and streams.metrics).
IN = ("driftline_events_read_total", "driftline_join_restored_total")
OUT = ("driftline_events_processed_total", "driftline_events_dead_lettered_total", "driftline_events_expired_total",
       "driftline_join_handed_over_total", "driftline_events_replayed_total")


def _sum(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, x) in ls for k, x in labels.items()))


def _wait_all(workers: list[Worker], condition, timeout: float, what: str) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    """Every worker's metrics, once ``condition`` holds for them together."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples = [w.metrics() for w in workers]
        if all(samples) and condition(samples):
            return samples
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; logs:\n" +
                         "\n".join(w.log_path.read_text(errors="replace")[-2000:] for w in workers))


def test_waiting_predictions_follow_their_partition_to_a_new_worker(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:10]
    config_path = tmp_path / "monitors.yaml"
    config_path.write_text(SPEECH_MONITORS)
    env = worker_env(kafka_bootstrap, run, config_path, app="driftline-handover", partitions="4")
    settings = settings_of(env)
    ensure_topics(settings)
    pairs = list(SpeechScenario(n_events=N_PAIRS, change_at=N_PAIRS, seed=5).events())
    logger = PredictionLogger(settings.confluent_config(), settings.topics)
    procs, workers = [], []

    def start(name: str) -> Worker:
        port = free_port()
        procs.append(start_worker({**env, "DRIFTLINE_WEB_PORT": str(port),
                                   "DRIFTLINE_DATA_DIR": str(tmp_path / name)}, tmp_path / f"{name}.log"))
        workers.append(Worker(settings, port, tmp_path / f"{name}.log"))
        return workers[-1]

    try:
        first = start("first")
        for prediction, _ in pairs:
            logger.log_prediction(prediction)
        assert logger.flush(30) == 0
        first.wait_for(lambda m: _sum(m, "driftline_join_pending") == N_PAIRS, 60, "every prediction waiting")

        start("second")
        group_of_two = None
        deadline = time.monotonic() + 60
        while group_of_two is None and time.monotonic() < deadline:
            shares = assigned_partitions(kafka_bootstrap, settings.ingest_group, settings.topics.predictions)
            group_of_two = shares if len(shares) == 2 and all(shares) else None
            time.sleep(0.5)
        assert group_of_two is not None, "the group never settled with two members"
        # Each worker rebuilds the waiting predictions of the partitions it now holds from the join's changelog.
        _wait_all(workers, lambda ms: _sum(ms[1], "driftline_join_restored_total") > 0
                  and sum(_sum(m, "driftline_join_pending") for m in ms) == N_PAIRS, 60,
                  "the waiting predictions shared between the two workers")

        for _, outcome in pairs:
            logger.log_outcome(outcome)
        assert logger.flush(30) == 0
        done = _wait_all(workers, lambda ms: sum(_sum(m, "driftline_events_processed_total", source="outcome")
                                                 for m in ms) == N_PAIRS, 60, "every outcome joined")
        labelled = read_labelled(kafka_bootstrap, settings.topics.labelled, N_PAIRS)
    finally:
        exit_codes = [stop_worker(proc) for proc in procs]
    # Both exit 0, the second too though the first's leaving rebalances it as it stops (streams.app.DriftlineApp).
    assert exit_codes == [0, 0], f"exit statuses on SIGTERM: {exit_codes}"

    # Every prediction joined exactly once: a duplicate join (both workers, or a replay) would repeat an id.
    ids = [example.prediction.prediction_id for example in labelled]
    assert sorted(ids) == sorted(p.prediction_id for p, _ in pairs), Counter(ids).most_common(3)
    for side in SIDES:
        assert sum(_sum(m, "driftline_events_processed_total", source=side) for m in done) == N_PAIRS
        assert sum(_sum(m, "driftline_events_expired_total", source=side) for m in done) == 0
        for m in done:
            assert sum(_sum(m, name, source=side) for name in IN) == sum(_sum(m, name, source=side) for name in OUT)
    moved = {name: [_sum(m, name, source="prediction") for m in done]
             for name in ("driftline_join_handed_over_total", "driftline_join_restored_total")}
    print(f"shares {group_of_two}; handed over {moved['driftline_join_handed_over_total']}, restored "
          f"{moved['driftline_join_restored_total']}; labelled {len(ids)} ({len(set(ids))} distinct)")
    assert moved["driftline_join_handed_over_total"][0] > 0 and moved["driftline_join_restored_total"][1] > 0
