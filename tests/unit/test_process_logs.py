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


def test_an_expected_traceback_is_the_one_logged_with_its_message_not_one_the_message_follows(tmp_path: Path) -> None:
    folder = tmp_path / "crash-test"
    folder.mkdir()
    log = folder / "worker.log"
    logs = ProcessLogs()
    logs.watch(log)
    logs.expect(folder, "the stage failed; exits with status 71")
    # The expected traceback, with other threads' lines (more than an excerpt's worth) before the exit line.
    log.write_text("[ERROR] the stage failed; exits with status 71\nTraceback (most recent call last):\nOSError\n"
                   + "[ERROR] broker connection closed\n" * 200 + "[CRITICAL] exiting with status 71\n")
    assert logs.new_tracebacks() == []
    # Another record's traceback is reported, though the expected message comes after it.
    with log.open("a") as out:
        out.write("[ERROR] task died\nTraceback (most recent call last):\nKeyError: 1\n"
                  "[ERROR] the stage failed; exits with status 71\n")
    [found] = logs.new_tracebacks()
    assert "KeyError: 1" in found
    # The same message in a log outside the folder is not expected there.
    other = tmp_path / "other.log"
    logs.watch(other)
    other.write_text("[ERROR] the stage failed; exits with status 71\nTraceback (most recent call last):\nOSError\n")
    assert len(logs.new_tracebacks()) == 1
