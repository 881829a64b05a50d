"""Driftline processes run as subprocesses (worker, retrainer), and reading their Prometheus metrics back.

The demos, the integration tests and the worker benchmark all start ``driftline
worker`` and ``driftline retrainer`` the same way and judge them by what their
``/metrics`` page says.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "free_port", "metric_sum", "metric_value", "registry_samples", "scrape_metrics", "start_python", "start_retrainer", "start_worker", "stop_worker"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Metric samples as ``{(sample name, sorted labels): value}``."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, *argv], env={**os.environ, **env},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )


def _start_cli(command: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    return _start(["-m", "streams.cli", command], env, log_path)


def start_python(code: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -c code`` as a subprocess in its own session (a process with a fault injected, in tests)."""
    return _start(["-c", code], env, log_path)


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``driftline worker`` as a subprocess in its own session."""
    return _start_cli("worker", env, log_path)


def start_retrainer(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``driftline retrainer`` as a subprocess in its own session (stop it with :func:`stop_worker`)."""
    return _start_cli("retrainer", env, log_path)


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``: faust has been seen ignoring SIGTERM for seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def scrape_metrics(port: int, timeout: float = 2.0) -> Samples:
    """The process's /metrics as {(sample name, sorted labels): value}; empty if it does not answer within
    ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return _samples(text_string_to_metric_families(text))


def registry_samples(registry: CollectorRegistry) -> Samples:
    """An in-process registry's samples, in the shape :func:`scrape_metrics` returns."""
    return _samples(registry.collect())


def _samples(families: Iterable[Metric]) -> Samples:
    samples = {}
    for family in families:
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples over every label set that includes ``labels``.

    Examples
    --------
    >>> samples = {("n_total", (("model", "a"),)): 2.0, ("n_total", (("model", "b"),)): 3.0}
    >>> metric_sum(samples, "n_total"), metric_sum(samples, "n_total", model="b"), metric_sum(samples, "other")
    (5.0, 3.0, 0)
    """
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, val) in ls for k, val in labels.items()))


def metric_value(samples: Samples, name: str, **labels: str) -> float:
    """Like :func:`metric_sum`, but a series that is not there is an error, not 0.

    A renamed metric or label would otherwise pass every "nothing happened" check.

    Examples
    --------
    >>> samples = {("n_total", (("model", "a"),)): 2.0, ("n_total", (("model", "b"),)): 3.0}
    >>> metric_value(samples, "n_total", model="b")
    3.0
    >>> metric_value(samples, "n_totl")
    Traceback (most recent call last):
    ...
    KeyError: "no series n_totl{} among the samples (names there: ['n_total'])"
    """
    matching = [v for (n, ls), v in samples.items() if n == name and all((k, val) in ls for k, val in labels.items())]
    if not matching:
        selector = name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        raise KeyError(f"no series {selector} among the samples (names there: {sorted({n for n, _ in samples})})")
    return sum(matching)
