"""Time from kill -9 of a worker to the first batch scored by its restarted self, with and without static
group membership (DRIFTLINE_INSTANCE_ID), on a broker of its own.

    python benchmarks/kill_handover.py            # default session timeout (30 s)
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.client import PredictionLogger  # noqa: E402
from streams.localkafka import LocalKafka  # noqa: E402
from streams.processes import free_port, metric_sum, scrape_metrics, start_worker, stop_worker  # noqa: E402
from streams.scenarios import SpeechScenario  # noqa: E402
from streams.topics import ensure_topics, faust_topic_specs  # noqa: E402
from tests.integration.harness import settings_of, worker_env  # noqa: E402
from tests.speech_monitors import SPEECH_MONITORS  # noqa: E402


def _wait_scored(port: int, at_least: float, timeout: float) -> float:
    started = time.monotonic()
    while metric_sum(scrape_metrics(port), "driftline_examples_total") < at_least:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"nothing scored on :{port} in {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic()


def measure(kafka: LocalKafka, work: Path, static: bool) -> float:
    run = uuid.uuid4().hex[:8]
    config = work / f"m-{run}.yaml"
    config.write_text(SPEECH_MONITORS)
    env = worker_env(kafka.bootstrap, run, config, app="handover", data_dir=str(work / run), partitions="2",
                     **({"instance_id": f"worker-{run}"} if static else {}))
    settings = settings_of(env)
    ensure_topics(settings, extra=faust_topic_specs(settings))
    pairs = list(SpeechScenario(n_events=2000, change_at=1900, seed=3).events())
    logger = PredictionLogger(settings.confluent_config(), settings.topics)

    def produce(part: list) -> None:  # type: ignore[type-arg]
        for prediction, outcome in part:
            logger.log_prediction(prediction)
            logger.log_outcome(outcome)
        logger.flush(30)

    port = free_port()
    first = start_worker({**env, "DRIFTLINE_WEB_PORT": str(port)}, work / f"{run}-a.log")
    produce(pairs[:1000])
    _wait_scored(port, 1000, 90)
    time.sleep(3)  # a checkpoint and a commit behind it
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    second_port = free_port()
    second = start_worker({**env, "DRIFTLINE_WEB_PORT": str(second_port)}, work / f"{run}-b.log")
    try:
        produce(pairs[1000:])
        return _wait_scored(second_port, 1, 120) - killed
    finally:
        stop_worker(second)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="handover-"))
    kafka = LocalKafka(data_dir=work / "kafka", port=free_port(), controller_port=free_port())
    kafka.start()
    try:
        for static in (False, True):
            seconds = measure(kafka, work, static)
            print(f"{'static' if static else 'dynamic'} membership: kill -9 to the restarted worker's first batch "
                  f"scored {seconds:.1f} s", flush=True)
    finally:
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
