"""Running totals the pure core keeps, turned into the increments Prometheus counters take."""

from __future__ import annotations

from typing import Any

__all__ = ["Totals"]


class Totals:
    """How much of each running total the metrics already count.

    The core counts totals (``JoinStage.n_processed``, ``MonitorInputOrder.n_late``); a Prometheus counter
    only goes up by increments, so each total is counted by how far it passed what was counted before.

    >>> from prometheus_client import CollectorRegistry, Counter
    >>> registry = CollectorRegistry()
    >>> late = Counter("late", "Late events.", ["stage"], registry=registry)
    >>> totals = Totals()
    >>> totals.report(late, "ingest", 3); totals.report(late, "ingest", 5); totals.report(late, "ingest", 5)
    >>> registry.get_sample_value("late_total", {"stage": "ingest"})
    5.0
    """

    def __init__(self) -> None:
        self._counted: dict[tuple[Any, str], int] = {}

    def report(self, counter: Any, label: str, total: int) -> None:
        """Count ``total`` into ``counter.labels(label)``: only the part not counted yet."""
        counted = self._counted.get((counter, label), 0)
        if total > counted:
            counter.labels(label).inc(total - counted)
            self._counted[(counter, label)] = total
