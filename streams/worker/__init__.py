"""The Faust worker's services (ingest, monitor) and the plumbing they share; streams.app wires them."""

from __future__ import annotations

from streams.worker.ingest import IngestService, IngestThread
from streams.worker.messages import MessageRef, SourceRef
from streams.worker.monitor import MonitorService
from streams.worker.outbox import Outbox, ProducerOutbox
from streams.worker.source import SourceConsumer
from streams.worker.totals import Totals

__all__ = ["IngestService", "IngestThread", "MessageRef", "MonitorService", "Outbox", "ProducerOutbox", "SourceConsumer",
           "SourceRef", "Totals"]
