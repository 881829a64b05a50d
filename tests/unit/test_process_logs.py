"""The integration tier's traceback check (``harness.ProcessLogs``) finds what it must, once."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import ProcessLogs


def test_a_traceback_is_reported_once_with_its_log_and_clean_lines_are_not(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("[WARNING] alert fired\n")
    logs = ProcessLogs()
    logs.watch(log)
    logs.watch(tmp_path / "never-written.log")
    assert logs.new_tracebacks() == []
    with log.open("a") as out:
        out.write("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom\n")
    [found] = logs.new_tracebacks()
    assert found.startswith(f"--- {log} ---\nTraceback (most recent call last)") and "ValueError: boom" in found
    assert logs.new_tracebacks() == [], "what was reported is not reported again"
    with log.open("a") as out:
        out.write("Traceback (most recent call last):\nKeyError: 1\nTraceback (most recent call last):\nOSError\n")
    assert len(logs.new_tracebacks()) == 2
