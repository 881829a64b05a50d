"""Driftline's root exception and the schema package's errors."""

from __future__ import annotations

__all__ = ["DriftlineError", "ConfigError"]


class DriftlineError(Exception):
    """Root of every error Driftline raises on purpose."""


class ConfigError(DriftlineError, ValueError):
    """A monitor config or settings file is invalid.

    Carries the dotted path of each bad field so that start-up can name it.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {field}: {msg}" for field, msg in problems)
        super().__init__(f"invalid config {source}:\n{lines}")
