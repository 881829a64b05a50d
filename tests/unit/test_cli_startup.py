"""A bad config fails at start-up, naming the bad field, before any broker is contacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_worker(tmp_path: Path, config: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "monitors.yaml"
    path.write_text(config)
    full_env = {**os.environ, "DRIFTLINE_MONITOR_CONFIG": str(path),
                # Nothing listens here: the worker must fail on the config before it tries.
                "DRIFTLINE_KAFKA_BOOTSTRAP": "127.0.0.1:1", **env}
    return subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=full_env, capture_output=True,
                          text=True, timeout=60)


GOOD = "models: {asr: {task: classification, performance: {threshold: 0.85}}}"


def test_a_bad_monitor_field_is_named(tmp_path: Path) -> None:
    done = run_worker(tmp_path, "models: {asr: {task: classification, performance: {window: 2, threshold: 0.85}}}")
    assert done.returncode == 2
    assert "models.asr.performance.window" in done.stderr


def test_a_bad_detector_parameter_is_named(tmp_path: Path) -> None:
    done = run_worker(tmp_path, "models: {asr: {task: classification, performance: {threshold: 0.85}, "
                                "detector: {name: bernoulli_glr, params: {false_alarm_horizon: 0.5}}}}")
    assert done.returncode == 2
    assert "models.asr.detector.params.false_alarm_horizon" in done.stderr


def test_a_bad_setting_is_named(tmp_path: Path) -> None:
    done = run_worker(tmp_path, GOOD, DRIFTLINE_PARTITIONS="0")
    assert done.returncode == 2
    assert "DRIFTLINE_PARTITIONS" in done.stderr
