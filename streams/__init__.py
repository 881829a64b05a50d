"""The Faust worker, Kafka clients for apps, topic administration and the CLI."""

from __future__ import annotations

__all__: list[str] = []
