"""Errors raised by detectors and monitors."""

from __future__ import annotations

from schemas.exceptions import DriftlineError

__all__ = ["DetectorError", "InvalidParameter"]


class DetectorError(DriftlineError):
    """Root of the detector package's errors."""


class InvalidParameter(DetectorError, ValueError):
    """A hyperparameter broke its rule; ``name`` says which one."""

    def __init__(self, name: str, rule: str) -> None:
        self.name = name
        self.rule = rule
        super().__init__(f"{name}: {rule}")
