"""The pure stream plumbing ahead of the monitors: decode, join, event-time order, join changelog, watermark merge."""

from __future__ import annotations

from detectors.ingest.join import Duplicate, Expired, OutcomeJoiner
from detectors.ingest.join_log import JoinLog, Rebuilt, rebuild
from detectors.ingest.merge import NOTHING_SENT, Held, MonitorInputOrder, source_name
from detectors.ingest.ordering import EventTimeReorderer
from detectors.ingest.stage import DeadLetter, IngestResult, JoinStage, RawRecord, Source

__all__ = [
    "NOTHING_SENT",
    "DeadLetter",
    "Duplicate",
    "EventTimeReorderer",
    "Expired",
    "Held",
    "IngestResult",
    "JoinLog",
    "JoinStage",
    "MonitorInputOrder",
    "OutcomeJoiner",
    "RawRecord",
    "Rebuilt",
    "Source",
    "rebuild",
    "source_name",
]
