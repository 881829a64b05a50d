"""The Faust worker's services (ingest, monitor) and the plumbing they share; streams.app wires them."""

from __future__ import annotations

from streams.worker.ingest import IngestService
from streams.worker.messages import MessageRef, SourceRef
from streams.worker.outbox import Outbox
from streams.worker.progress import SourceProgress

__all__ = ["IngestService", "MessageRef", "Outbox", "SourceProgress", "SourceRef"]
