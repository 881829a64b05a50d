"""The pieces of the Faust worker (streams.app): its messages, its producer side and the ingest watermark's view of the sources."""

from __future__ import annotations

from streams.worker.messages import MessageRef, SourceRef
from streams.worker.outbox import Outbox
from streams.worker.progress import SourceProgress

__all__ = ["MessageRef", "Outbox", "SourceProgress", "SourceRef"]
