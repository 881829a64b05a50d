"""Integration-tier fixtures: a Python traceback in any worker's or retrainer's log fails the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import PROCESS_LOGS


def _fail_on_tracebacks(when: str) -> None:
    found = PROCESS_LOGS.new_tracebacks()
    assert not found, f"{len(found)} Python traceback(s) in process logs {when}:\n" + "\n".join(found)


@pytest.fixture(autouse=True)
def no_traceback_in_this_tests_processes() -> Iterator[None]:
    yield
    _fail_on_tracebacks("during this test")


@pytest.fixture(scope="module", autouse=True)
def no_traceback_in_this_modules_processes() -> Iterator[None]:
    """Module-scoped workers stop after the last test's own fixtures: what they log then is read here."""
    yield
    _fail_on_tracebacks("while this module's shared processes stopped")
