"""A count-only Faust agent over a backlog: faust-streaming's own events/s, with none of Driftline's work in it.

One agent over the given topics, raw keys and values (no decoding), reading
``take_events(1000, within=0.5)`` micro-batches as the worker's agents do, and
doing nothing with them but count.  Once it has counted ``n_events`` it writes
``{"events", "seconds", "rate"}`` to ``out`` and idles until it is stopped
(SIGTERM, then SIGKILL: ``bench_worker.py`` does both).  The app id, and so the
consumer group, must be new on each run for it to read from the beginning.

    python benchmarks/faust_count.py BOOTSTRAP APP_ID N_EVENTS OUT_JSON TOPIC [TOPIC ...]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import faust

from streams.settings import load_settings

BATCH_SIZE = 1000
BATCH_SECONDS = 0.5


def write_result(out: Path, n_events: int, seconds: float) -> None:
    # Written whole and renamed, so that the bench never reads half a file.
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps({"events": n_events, "seconds": seconds, "rate": n_events / seconds}))
    os.replace(partial, out)


def create_app(bootstrap: str, app_id: str, topics: list[str], n_events: int, out: Path) -> faust.App:
    kafka = load_settings(kafka_bootstrap=bootstrap).kafka_access
    app = faust.App(
        app_id,
        broker=kafka.faust_broker(),
        broker_credentials=kafka.faust_credentials(),
        store="memory://",
        datadir=str(out.parent / f"{app_id}-data"),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        loghandlers=[],
    )
    source = app.topic(*topics, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def count(stream: faust.StreamT[bytes]) -> None:
        counted, first_batch_at, first_batch_size = 0, 0.0, 0
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_SECONDS):
            now = time.perf_counter()
            if not counted:
                first_batch_at, first_batch_size = now, len(events)
            reported = counted >= n_events
            counted += len(events)
            if counted >= n_events and not reported:
                # Timed from the first batch to the last: the first batch's events were read before the clock
                # started, so they are left out of the count, and the figure is the rate between the two.
                write_result(out, counted - first_batch_size, now - first_batch_at)

    return app


def main() -> None:
    bootstrap, app_id, n_events, out, *topics = sys.argv[1:]
    app = create_app(bootstrap, app_id, topics, int(n_events), Path(out))
    faust.Worker(app, loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    main()
