"""Default Kafka topic names; every one takes the same configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TopicNames"]


@dataclass(frozen=True)
class TopicNames:
    """Names of every topic Driftline reads or writes.

    >>> TopicNames("acme.").alerts
    'acme.driftline.alerts'
    """

    prefix: str = ""

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}driftline.{suffix}"

    @property
    def predictions(self) -> str:
        return self._name("predictions")

    @property
    def outcomes(self) -> str:
        return self._name("outcomes")

    @property
    def alerts(self) -> str:
        return self._name("alerts")

    @property
    def retrain(self) -> str:
        return self._name("retrain")

    @property
    def models(self) -> str:
        return self._name("models")

    @property
    def deadletter(self) -> str:
        return self._name("deadletter")

    @property
    def labelled(self) -> str:
        """Internal: predictions joined with their outcomes, for the retrainer: per model and ingest step, a
        MonitorBatch with only ``labelled`` filled (the monitor-input format), keyed by model."""
        return self._name("labelled")

    @property
    def monitor_input(self) -> str:
        """Internal: each ingest batch's predictions and labelled examples per model, and watermarks."""
        return self._name("monitor-input")

    @property
    def expired(self) -> str:
        """Internal: a record of each event whose join partner never came."""
        return self._name("expired")
