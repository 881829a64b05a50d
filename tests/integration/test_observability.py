"""A real Prometheus scrapes a real worker on the real broker; every dashboard and rule expression returns data.

Prometheus is Debian's binary (scripts/ensure-tools.sh), started here on a free loopback port with
its config in tmp_path, scraping the worker's /metrics every second and evaluating
deploy/prometheus/rules every second.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from streams.client import PredictionLogger
from streams.processes import free_port, stop_worker
from streams.scenarios import SpeechScenario
from tests.integration.harness import running_worker, start_retrainer, stop_cleanly
from tests.speech_monitors import SPEECH_MONITORS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
# The speech model's monitors, plus data monitors so that their panels and rules have series to show.
CONFIG = SPEECH_MONITORS + """\
    features: {snr_db: {kind: numeric}, accent: {kind: categorical}}
    prediction_drift: true
    estimated_performance: {threshold: 0.7, window: 200}
"""
# Exported by the retrainer process only. Exempt while no `driftline retrainer` command exists (checked below).
RETRAINER_METRICS = frozenset({
    "driftline_challengers_total", "driftline_model_version_info",
    "driftline_retrainer_examples_total", "driftline_retrain_triggers_handled_total",
})
# Every alert rule is in exactly one of these sets, so a new rule has to be placed.
FIRES_DURING_SCENARIO = {
    "DriftlineModelAlertOpen",  # accuracy decays from 92% to 80% against a threshold of 85%
    "DriftlineRetrainTriggered",  # the decay triggers a retrain
    "DriftlineDeadLetterSpike",  # 200 garbage predictions among 6,000: over 1%
    "DriftlineDataAlertOpen",  # the signal-to-noise ratio drops at the change
}
FIRES_AFTER_WORKER_STOPS = {"DriftlineWorkerDown"}
# Dashboard annotations that mark a promotion: this scenario's coin-flip predictions give the retrainer
# nothing to learn, so there may be none (tests/integration/test_retrain_loop.py covers promotions).
SHOWN_ONLY_AFTER_A_PROMOTION = {"driftline-model / annotation Challenger promoted"}
SILENT_ON_A_HEALTHY_WORKER = {"DriftlineConsumptionStalled", "DriftlineWorkerAbsent", "DriftlineLabelCoverageCollapsed",
                              "DriftlineNoProgressWithLag"}
# Rules on retrainer metrics; with a retrainer running, their expressions must evaluate and their selectors have data.
RETRAINER_RULES = {"DriftlineChallengersKeepLosing", "DriftlineRetrainTriggerUnhandled"}
N_EVENTS, N_GARBAGE, N_ORPHANS = 6000, 200, 3
SELECTOR = re.compile(r'(?<![\w":-])(up|driftline[a-z0-9_:]*)(?![\w:-])(\{[^}]*\})?')


def _dashboards_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("driftline_deploy_dashboards", ROOT / "deploy/dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _retrainer_command_exists() -> bool:
    from streams.cli import app

    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    return "retrainer" in names | {g.name for g in app.registered_groups}


def _substitute(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$model", "speech-asr")


def _selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, selector text) of every series selector in a PromQL expression."""
    return [(m.group(1), m.group(0)) for m in SELECTOR.finditer(expr)]


class Prometheus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # a bad expression is a 400 with the parser's error
            raise AssertionError(f"{expr!r}: {exc.read().decode(errors='replace')}") from exc
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def wait_for(self, expr: str, timeout: float, what: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}: {expr}")


@contextmanager
def running_prometheus(tmp_path: Path, targets: dict[str, int]) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run scripts/ensure-tools.sh (make test does)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(f) for f in RULE_FILES],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for job, port in targets.items()],
    }))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        prometheus = Prometheus(port)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start:\n{(tmp_path / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield prometheus
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def running_retrainer(worker, tmp_path: Path) -> Iterator[int]:  # type: ignore[no-untyped-def]
    """``driftline retrainer`` on the worker's topics; yields its metrics port."""
    port = free_port()
    s = worker.settings
    env = {"DRIFTLINE_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix,
           "DRIFTLINE_APP_ID": s.app_id, "DRIFTLINE_MONITOR_CONFIG": str(s.monitor_config),
           "DRIFTLINE_PARTITIONS": str(s.partitions), "DRIFTLINE_RETRAINER_WEB_PORT": str(port),
           "DRIFTLINE_RETRAINER_DATA_DIR": str(tmp_path / "retrainer")}
    log_path = tmp_path / "retrainer.log"
    proc = start_retrainer(env, log_path)
    try:
        yield port
    except BaseException:
        stop_worker(proc)
        raise
    stop_cleanly(proc, log_path)


def _drive(worker, prometheus) -> None:  # type: ignore[no-untyped-def]
    """The seeded speech decay, garbage predictions (dead letters) and a few early orphans (expiries).

    Sent in chunks a few seconds apart, after Prometheus has scraped the worker's zeroed
    series, so that rate() and increase() see the traffic as production traffic would show it.
    """
    prometheus.wait_for('driftline_alerts_total{status="fired"} == 0', 30, "a first scrape of the zeroed series")
    scenario = SpeechScenario(n_events=N_EVENTS, change_at=N_EVENTS // 2, seed=11)
    logger = PredictionLogger(worker.settings.confluent_config(), worker.topics)
    raw = Producer({**worker.settings.confluent_config(), "partitioner": "murmur2_random", "enable.idempotence": True})
    chunk = N_EVENTS // 4
    for i, (prediction, outcome) in enumerate(scenario.events()):
        if i and i % chunk == 0:
            logger.flush(30)
            raw.flush(30)
            time.sleep(2.5)
        logger.log_prediction(prediction)
        logger.log_outcome(outcome)
        if i % (N_EVENTS // N_GARBAGE) == 7:
            raw.produce(worker.topics.predictions, key=f"junk-{i}".encode(), value=b"\x00 not json")
        if i < N_ORPHANS:
            logger.log_prediction(prediction.model_copy(update={"prediction_id": f"orphan-{i}"}))
    assert raw.flush(30) == 0
    assert logger.flush(30) == 0


def test_every_dashboard_and_rule_expression_returns_data(kafka_bootstrap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    with_retrainer = _retrainer_command_exists()
    dashboards = _dashboards_module()
    rules = [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r["expr"] for r in rules if "alert" in r}
    recordings = {r["record"]: r["expr"] for r in rules if "record" in r}
    assert set(alerts) == (FIRES_DURING_SCENARIO | FIRES_AFTER_WORKER_STOPS | SILENT_ON_A_HEALTHY_WORKER
                           | RETRAINER_RULES), "classify every alert rule in this test"
    exempted: list[str] = []
    problems: list[str] = []

    def check_selectors(where: str, expr: str) -> bool:
        """Each series selector returns data; False if the expression names a (exempt) retrainer metric."""
        uses_retrainer = False
        for name, selector in _selectors(expr):
            if name in RETRAINER_METRICS:
                uses_retrainer = True
                if not with_retrainer:
                    continue
            if not prometheus.query(selector):
                problems.append(f"{where}: {selector} has no data (is it exported?)")
        return with_retrainer or not uses_retrainer

    # Prometheus outlives the worker, to see it go down.
    with ExitStack() as outer:
        with running_worker(kafka_bootstrap, tmp_path, CONFIG, partitions="2", join_ttl_seconds="300") as worker:
            targets = {"driftline-worker": worker.web_port}
            if with_retrainer:
                targets["driftline-retrainer"] = outer.enter_context(running_retrainer(worker, tmp_path))
            prometheus = outer.enter_context(running_prometheus(tmp_path, targets))
            _check_while_running(worker, prometheus, dashboards, recordings, alerts, check_selectors, problems, exempted)
            worker_stopped = time.monotonic()
        for name in sorted(FIRES_AFTER_WORKER_STOPS):
            try:
                prometheus.wait_for(alerts[name], 15, f"alert {name} after the worker stopped")
            except AssertionError as exc:
                problems.append(str(exc))
        stopped_for = time.monotonic() - worker_stopped
    assert not problems, "\n".join(problems)
    expected_exempt = [] if with_retrainer else (
        [w for w, e in dashboards.all_expressions() if {n for n, _ in _selectors(e)} & RETRAINER_METRICS]
        + [f"alert {n}" for n in RETRAINER_RULES])
    assert sorted(exempted) == sorted(expected_exempt)
    print(f"\nobservability: {len(dashboards.all_expressions())} dashboard expressions, {len(rules)} rules; "
          f"exempt (no retrainer process): {sorted(exempted)}; took {time.monotonic() - started:.1f}s "
          f"(WorkerDown seen {stopped_for:.1f}s after the stop)")


def _check_while_running(worker, prometheus, dashboards, recordings, alerts, check_selectors,  # type: ignore[no-untyped-def]
                         problems, exempted) -> None:
    _drive(worker, prometheus)
    n_read = 2 * N_EVENTS + N_GARBAGE + N_ORPHANS
    # The monitor stage too: the alerts' series move only once it has scored the decay.  It can lag the join by
    # the seconds a threshold simulation takes when a warm-up ends on an empty calibration cache (a clean
    # machine), and then alert at the very end: a CI run checked the panels before any alert had fired.
    prometheus.wait_for(f"sum(driftline_events_read_total) >= {n_read} and sum(driftline_join_pending) == 0"
                        f" and sum(driftline_events_processed_total) >= {2 * N_EVENTS}"
                        f" and sum(driftline_examples_total) >= {N_EVENTS}"
                        f" and sum(driftline_alert_latency_seconds_count) >= sum(driftline_alerts_total) > 0",
                        120, "the worker to read, join and score every event, alert, and expire the orphans")
    prometheus.wait_for("driftline:label_coverage:ratio_rate5m", 10, "the recording rules to be evaluated")
    processed = prometheus.query("sum(driftline_events_processed_total)")
    assert float(processed[0]["value"][1]) == 2 * N_EVENTS

    for where, raw_expr in dashboards.all_expressions():
        expr = _substitute(raw_expr)
        if not check_selectors(where, expr):
            exempted.append(where)
            continue
        result = prometheus.query(expr)
        if where in SHOWN_ONLY_AFTER_A_PROMOTION:
            continue  # the selectors have data (checked above); whether a promotion happened is the retrainer's call
        if not result:
            problems.append(f"{where}: {expr} returns no data")
        elif not any(math.isfinite(float(s["value"][1])) for s in result):
            problems.append(f"{where}: {expr} returns only NaN/Inf: {result}")

    for name, expr in recordings.items():
        check_selectors(f"recording {name}", expr)
        if not prometheus.query(expr):
            problems.append(f"recording {name}: {expr} returns no data")
    for name, expr in alerts.items():
        if name in RETRAINER_RULES:
            if not check_selectors(f"alert {name}", expr):
                exempted.append(f"alert {name}")
            prometheus.query(expr)  # whether it fires depends on the retrainer's decisions; it must evaluate
            continue
        result = prometheus.query(expr)
        if name in FIRES_DURING_SCENARIO and not result:
            problems.append(f"alert {name} should fire during the scenario: {expr}")
        if name in SILENT_ON_A_HEALTHY_WORKER | FIRES_AFTER_WORKER_STOPS and result:
            problems.append(f"alert {name} fires on a healthy, running worker: {result}")

