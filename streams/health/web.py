"""The retrainer's web port: ``/metrics`` for Prometheus, ``/health`` and ``/ready`` for its supervisor.

The worker serves the same pages on faust's web server (see streams.app); the retrainer has no faust, and
prometheus_client's own server answers every path with the metrics.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams.health.liveness import HealthState

__all__ = ["HealthServer"]


class HealthServer:
    """Serves ``registry`` on ``/metrics`` and ``state`` on ``/health`` and ``/ready`` (503 when not), in a thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, state: HealthState) -> None:
        self.registry, self.state = registry, state
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a probe every few seconds is no news

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(request, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path in ("/health", "/ready"):
            ok, body = self.state.health() if path == "/health" else self.state.ready()
            self._send(request, 200 if ok else 503, json.dumps(body).encode(), "application/json")
        else:
            self._send(request, 404, b"not found\n", "text/plain")

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def start(self) -> None:
        threading.Thread(target=self._httpd.serve_forever, name="driftline-web", daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
