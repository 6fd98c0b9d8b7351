"""Liveness, readiness and Prometheus metrics of the worker and the sink, on one small port.

The service's own event loop runs its checks every few seconds and records the results
(:meth:`Health.record`); a thread serves them, so a stuck loop shows as stale checks, never as
a hung HTTP request:

- ``/healthz`` — 200 while the process serves HTTP (liveness), ``{"service", "status"}``;
- ``/readyz`` — 200 when every check passed within the last :data:`STALE_AFTER_S`, else 503;
  ``{"service", "status", "checks": {name: {"ok", "latency_ms", …}}}``;
- ``/metrics`` — Prometheus text format.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("upstream.health")
STALE_AFTER_S = 15.0


class Health:
    """The latest result of each readiness check of one service."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._checks: dict[str, dict[str, Any]] = {}
        self._at: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, name: str, ok: bool, latency_ms: float | None = None, **detail: Any) -> None:
        """Store the outcome of check ``name`` (``detail``: JSON-ready facts, e.g. the lag)."""
        result: dict[str, Any] = {"ok": ok}
        if latency_ms is not None:
            result["latency_ms"] = round(latency_ms, 1)
        result.update(detail)
        with self._lock:
            self._checks[name] = result
            self._at[name] = time.monotonic()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body): ready when there are checks and all are recent and ok."""
        now = time.monotonic()
        with self._lock:
            checks = {name: dict(result) for name, result in self._checks.items()}
            for name, result in checks.items():
                if now - self._at[name] > STALE_AFTER_S:
                    result.update(ok=False, stale=True)
        ready = bool(checks) and all(c["ok"] for c in checks.values())
        status = "ok" if ready else "unavailable"
        return ready, {"service": self.service, "status": status, "checks": checks}


def serve(health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(HTTPStatus.OK, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                body = {"service": health.service, "status": "ok"}
                self._reply(HTTPStatus.OK, json.dumps(body).encode(), "application/json")
            elif path == "/readyz":
                ready, body = health.readiness()
                status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
                self._reply(status, json.dumps(body).encode(), "application/json")
            else:
                self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the service's own log

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    log.info("health and metrics on http://%s:%d/ (healthz, readyz, metrics)", host, port)
    return server
