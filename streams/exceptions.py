"""Errors raised by the streams package: topic administration, the local broker and the demo scenarios."""

from __future__ import annotations

from schemas.exceptions import DriftlineError

__all__ = ["IncompleteSettings", "KafkaAuthorizationError", "KafkaSecurityError", "LocalKafkaError", "StreamsError", "TopicError", "UnknownScenario"]


class StreamsError(DriftlineError):
    """Root of the streams package's errors."""


class TopicError(StreamsError):
    """A topic could not be created, or exists with the wrong shape."""


class KafkaSecurityError(StreamsError):
    """Kafka's TLS or SASL setup does not work: a certificate that does not load, credentials the broker refuses.

    The message names the settings to look at and never holds a secret.
    """


class KafkaAuthorizationError(KafkaSecurityError):
    """The broker's ACLs do not let this user do what it asked; ``resource`` names the topic or group."""

    def __init__(self, resource: str, message: str) -> None:
        self.resource = resource
        super().__init__(message)


class IncompleteSettings(StreamsError, ValueError):
    """Settings that do not fit together; ``problems`` holds ``(settings field, the rule it breaks)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {rule}" for field, rule in problems))


class LocalKafkaError(StreamsError):
    """The local broker could not be set up, started or stopped."""


class UnknownScenario(StreamsError, ValueError):
    """A scenario name that is not in :data:`streams.scenarios.SCENARIOS`; ``choices`` lists the names that are."""

    def __init__(self, name: str, choices: list[str]) -> None:
        self.name = name
        self.choices = choices
        super().__init__(f"unknown scenario {name!r}; choose one of {', '.join(choices)}")
