"""Errors raised by the retrainer, its artifact store and its model registry."""

from __future__ import annotations

from schemas.exceptions import DriftlineError

__all__ = [
    "ArtifactError",
    "ArtifactOutsideStore",
    "BadExample",
    "ChecksumMismatch",
    "RefusedModelName",
    "RegistryError",
    "RegistryUnavailable",
    "RetrainerError",
    "RollbackUnavailable",
    "UnknownModel",
    "UnknownVersion",
]


class RetrainerError(DriftlineError):
    """Root of the retrainer package's errors."""


class BadExample(RetrainerError, ValueError):
    """A labelled example cannot be learnt from (e.g. a string regression target)."""


class UnknownModel(RetrainerError, KeyError):
    """No learner is configured for this model; ``model`` names it."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(f"no learner configured for model {model!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class ArtifactError(RetrainerError):
    """An artifact could not be stored or loaded; ``uri`` says which."""

    def __init__(self, uri: str, message: str) -> None:
        self.uri = uri
        super().__init__(f"{uri}: {message}")


class ArtifactOutsideStore(ArtifactError, ValueError):
    """Refused: the artifact's path is not inside the store's root directory."""

    def __init__(self, uri: str, root: str) -> None:
        self.root = root
        super().__init__(uri, f"refused to load: not inside the artifact store {root}")


class ChecksumMismatch(ArtifactError, ValueError):
    """Refused: the artifact's SHA-256 is not the one the registry recorded."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(uri, f"refused to load: sha256 is {actual}, expected {expected}")


class RegistryError(RetrainerError):
    """The model registry cannot do what was asked."""


class UnknownVersion(RegistryError, KeyError):
    """No such model version in the registry."""

    def __init__(self, model: str, version: str) -> None:
        self.model = model
        self.version = version
        super().__init__(f"model {model!r} has no version {version!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class RollbackUnavailable(RegistryError):
    """There is no earlier promoted version to roll back to."""

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        super().__init__(f"cannot roll back {model!r}: {reason}")


class RegistryUnavailable(RegistryError):
    """The registry's server did not answer; what was asked can be retried later (nothing was decided)."""

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        super().__init__(f"model registry at {location} is unavailable: {reason}")


class RefusedModelName(RegistryError, ValueError):
    """The registry refuses this model name; ``reason`` is the registry's own words."""

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(f"the model registry refuses the model name {model!r}: {reason}")
