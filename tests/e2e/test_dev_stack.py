"""`upstream dev` end to end: the printed token sees the spike's alert live, in a WebSocket
client and in the console page in headless Chromium, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from playwright.async_api import async_playwright
from websockets.asyncio.client import connect

from streams.devtools.generator import SPIKE_GROUP, SPIKE_PAYER
from streams.devtools.stack import free_port
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

SECRET = "e2e-secret-that-is-at-least-32-bytes-long"


async def _read_until(proc: subprocess.Popen[str], pattern: str, timeout_s: float) -> list[str]:
    """Lines of the dev command's output up to the first line matching ``pattern``."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            raise AssertionError(f"dev exited early ({proc.poll()}):\n{''.join(lines)}")
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r} in {timeout_s}s:\n{''.join(lines)}")


async def _first_spike_alert(url: str, token: str) -> dict[str, Any]:
    async with connect(f"{url}?token={token}") as ws:
        await ws.send(json.dumps({"type": "subscribe"}))
        async for raw in ws:
            message: dict[str, Any] = json.loads(raw)
            if message["type"] == "snapshot" and message["alerts"]:
                return {"alert": message["alerts"][0]}
            if message["type"] == "alert":
                return message
    raise AssertionError("connection closed before an alert")


async def test_make_run_shows_spike_alert_and_stops_cleanly(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Within 120 s the printed token receives the spike's alert; SIGINT stops everything.

    On the Apache Kafka suite ``upstream dev`` runs against the session's broker instead of
    starting the embedded one.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("UPSTREAM_KAFKA_BOOTSTRAP", "UPSTREAM_DATABASE_URL")
    }
    own_broker = os.environ.get("UPSTREAM_TEST_BROKER", "tansu") != "kafka"
    if not own_broker:
        env["UPSTREAM_KAFKA_BOOTSTRAP"] = request.getfixturevalue("kafka_bootstrap")
    env.update(
        UPSTREAM_NOTIFIER_SECRET=SECRET,
        UPSTREAM_NOTIFIER_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    started = time.monotonic()
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; reads go to a thread
        [
            sys.executable,
            "-m",
            "streams.app.cli",
            "--log-level",
            "WARNING",
            "dev",
            "--duration",
            "30",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    descendants: set[int] = set()
    try:
        lines = await _read_until(proc, r"operator token", 90)
        token = (await _read_until(proc, r"^eyJ", 10))[-1].strip()
        console = next(re.search(r"console: (\S+)", ln) for ln in lines if "console:" in ln)
        assert console is not None
        console_url = console.group(1)
        ws_url = re.sub(r"^http://([^/]+)/.*$", r"ws://\1/ws", console_url)
        descendants = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        # broker (unless external), postgres (+ its workers), worker, sink, notifier
        assert len(descendants) >= (5 if own_broker else 4)

        # A token minted by `upstream token` with the same secret is accepted too.
        minted_run = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "streams.app.cli",
                "token",
                "--customer",
                "demo",
                "--operator",
                "carol",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        minted = minted_run.stdout.strip().splitlines()[-1]

        alert, alert_minted = await asyncio.wait_for(
            asyncio.gather(_first_spike_alert(ws_url, token), _first_spike_alert(ws_url, minted)),
            120,
        )
        elapsed = time.monotonic() - started
        for message in (alert, alert_minted):
            assert (message["alert"]["payer_id"], message["alert"]["cpt_group"]) == (
                SPIKE_PAYER,
                SPIKE_GROUP,
            )
        print(f"\nalert at the WebSocket client {elapsed:.1f}s after `upstream dev` started")

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(console_url)
                row = page.locator("#alerts tr", has_text=SPIKE_PAYER)
                await row.first.wait_for(timeout=30_000)
                assert SPIKE_GROUP in await row.first.inner_text()
                assert "live" in await page.locator("#status").inner_text()
                await page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            for pid in descendants:  # a stack that did not stop must not outlive the test
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
    assert proc.returncode == 0, out
    assert "stopped" in out
    alive = [
        pid
        for pid in descendants
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == [], f"processes left behind: {alive}"
