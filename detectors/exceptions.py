"""Errors raised by detectors and monitors."""

from __future__ import annotations

from schemas.exceptions import DriftlineError

__all__ = ["DetectorError", "InvalidParameter", "StaleState"]


class DetectorError(DriftlineError):
    """Root of the detector package's errors."""


class InvalidParameter(DetectorError, ValueError):
    """A hyperparameter broke its rule; ``name`` says which one."""

    def __init__(self, name: str, rule: str) -> None:
        self.name = name
        self.rule = rule
        super().__init__(f"{name}: {rule}")


class StaleState(DetectorError):
    """Pickled monitor state of another layout (an older Driftline's): it cannot be resumed, only started afresh."""

    def __init__(self, what: str, found: object, expected: object) -> None:
        self.what = what
        self.found = found
        self.expected = expected
        super().__init__(f"{what} state of layout {found!r}, this Driftline keeps layout {expected!r}")
