"""Sentry error reporting: off without SENTRY_DSN; with it, secrets never leave the process."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from streams.observability.error_reporting import FILTERED, scrub_strings

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
DB_URL = "postgresql+psycopg://upstream:hunter2@db:5432/upstream"


def test_strings_lose_tokens_and_url_passwords() -> None:
    """JWTs and URL passwords are blanked inside free text, anywhere in the event."""
    event = {"message": f"connect {DB_URL} with {TOKEN}",
             "breadcrumbs": {"values": [{"message": f"token={TOKEN}"}]}, "level": 40}  # fmt: skip
    scrubbed = scrub_strings(event)
    text = json.dumps(scrubbed)
    assert TOKEN not in text
    assert "hunter2" not in text
    assert f"upstream:{FILTERED}@db:5432" in scrubbed["message"]
    assert scrubbed["level"] == 40


class _FakeSentry(BaseHTTPRequestHandler):
    """Collects the envelopes the SDK posts (a stand-in for sentry.io's ingest endpoint)."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        _FakeSentry.received.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


# A service that fails with secrets in its locals, its message and its log line.
_SERVICE = f"""
import logging, sentry_sdk
from streams.observability.error_reporting import init_error_reporting
from streams.settings import Settings
s = Settings()
assert init_error_reporting("sink", s.sentry_dsn.get_secret_value(), s.sentry_environment)
def connect(database_url, token, billed_amount):
    raise ConnectionError("cannot reach " + database_url)
try:
    connect({DB_URL!r}, {TOKEN!r}, "1234.56")
except ConnectionError:
    logging.getLogger("upstream.sink").exception("giving up; token=" + {TOKEN!r})
sentry_sdk.flush(5)
"""


def test_an_error_reaches_sentry_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With SENTRY_DSN, the error arrives tagged with the service and without any secret."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSentry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _FakeSentry.received.clear()
    try:
        dsn = f"http://publickey@127.0.0.1:{server.server_port}/1"
        env = {**_env(), "SENTRY_DSN": dsn}
        result = subprocess.run([sys.executable, "-c", _SERVICE], capture_output=True,
                                text=True, env=env, timeout=60, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
    finally:
        server.shutdown()
        server.server_close()
    sent = b"".join(_FakeSentry.received).decode("utf-8", "replace")
    assert "cannot reach" in sent
    assert '"service":"sink"' in sent.replace(" ", "")
    for secret in (TOKEN, "hunter2", "1234.56"):
        assert secret not in sent


def test_nothing_starts_without_a_dsn() -> None:
    """Unset SENTRY_DSN: the SDK is never initialised, so nothing can be sent."""
    code = (
        "import sentry_sdk; from streams.settings import Settings; "
        "from streams.observability.error_reporting import init_error_reporting as i; "
        "assert i('worker', Settings().sentry_dsn.get_secret_value()) is False; "
        "assert not sentry_sdk.get_client().is_active()"
    )
    env = {k: v for k, v in _env().items() if k != "SENTRY_DSN"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
