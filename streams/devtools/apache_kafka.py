"""A single-node Apache Kafka (KRaft) broker for tests and local runs, fetched from Maven Central.

``mvn`` resolves the pinned broker jars and their dependencies once into ``.cache/`` of the
checkout; each broker gets its own data directory, formatted for KRaft, and free loopback
ports. Data is on disk, so :meth:`ApacheKafka.restart` keeps topics, offsets and groups.
Settings favour tests: no initial rebalance delay, small segments, single replicas.

    python -m streams.devtools.apache_kafka fetch     # download (idempotent)
    python -m streams.devtools.apache_kafka start     # run one in the foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from streams.devtools.stack import DevStackError, _tail, free_port, stop_process, wait_for_port

VERSION = "4.1.1"
SCALA = "2.13"
CACHE = Path(os.environ.get("UPSTREAM_CACHE_DIR", Path(__file__).resolve().parents[1] / ".cache"))
_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>health.upstream</groupId>
  <artifactId>apache-kafka-broker</artifactId>
  <version>{VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA}</artifactId>
      <version>{VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>2.24.3</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>2.0.17</version></dependency>
  </dependencies>
</project>
"""
_LOG4J = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def libs_dir() -> Path:
    """Where the broker's jars are cached."""
    return CACHE / f"apache-kafka-{VERSION}" / "libs"


def fetch() -> Path:
    """Resolve the broker's jars with ``mvn`` into the cache (once); return their directory."""
    libs = libs_dir()
    done = libs / ".complete"
    if done.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None or shutil.which("java") is None:
        raise DevStackError("Apache Kafka needs mvn and java (17+) on PATH")
    work = libs.parent
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(_POM)
    (work / "log4j2.properties").write_text(_LOG4J)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise DevStackError(f"mvn could not fetch Apache Kafka {VERSION}:\n{result.stdout[-3000:]}")
    done.touch()
    return libs


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 (may start with "-")."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class ApacheKafka:
    """One broker+controller on loopback, data in ``data_dir``."""

    data_dir: Path | None = None
    port: int = 0
    controller_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    heap: str = "512m"
    _owns_dir: bool = field(default=False, repr=False)

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the broker's log goes."""
        assert self.data_dir is not None
        return self.data_dir / "broker.log"

    def _java(self, main: str, *args: str) -> list[str]:
        libs = fetch()
        return [
            shutil.which("java") or "java", f"-Xmx{self.heap}", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={libs.parent / 'log4j2.properties'}",
            "-cp", f"{libs}/*", main, *args,
        ]  # fmt: skip

    def _configure(self) -> Path:
        assert self.data_dir is not None
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.data_dir / 'data'}",
                "num.partitions=1",
                # As in production: topics are created on purpose (`upstream topics create`,
                # Faust for its own), never by a client's metadata request with 1 partition.
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.segment.bytes=1048576",
                "log.retention.check.interval.ms=60000",
                "num.network.threads=2",
                "num.io.threads=2",
                "",
            ])
        )  # fmt: skip
        return config

    def start(self, timeout_s: float = 90.0) -> ApacheKafka:
        """Format storage on first start, start the broker, wait until it answers."""
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="upstream-kafka-"))
            self._owns_dir = True
        config = self._configure()
        if not (self.data_dir / "data" / "meta.properties").exists():
            formatted = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}",
                           "-c", str(config)),
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            if formatted.returncode != 0:
                raise DevStackError(f"kafka storage format failed:\n{formatted.stdout[-2000:]}"
                                    f"{formatted.stderr[-2000:]}")  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self._java("kafka.Kafka", str(config)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        wait_for_port(self.port, timeout_s, self.proc, self.log_path)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        """Until a metadata request succeeds (the port opens before the broker is ready)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout_s
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while True:
            with contextlib.suppress(KafkaException):  # until the broker is up
                if admin.list_topics(timeout=2).brokers:
                    return
            if self.proc is not None and self.proc.poll() is not None:
                raise DevStackError(f"kafka exited:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise DevStackError(f"kafka not ready:\n{_tail(self.log_path)}")
            time.sleep(0.2)

    def restart(self, timeout_s: float = 90.0) -> ApacheKafka:
        """Stop and start again on the same ports and data."""
        if self.proc is not None:
            stop_process(self.proc, timeout_s=30)
        return self.start(timeout_s)

    def stop(self, keep_data: bool = False) -> None:
        """Stop the broker; remove its data unless ``keep_data`` or the directory was given."""
        if self.proc is not None:
            stop_process(self.proc, timeout_s=30)
        if self._owns_dir and not keep_data and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``fetch`` the jars, or ``start`` a broker and wait for Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["fetch", "start"])
    parser.add_argument("--data-dir", type=Path, help="keep data here (default: a temp dir)")
    parser.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    args = parser.parse_args(argv)
    if args.action == "fetch":
        print(f"Apache Kafka {VERSION} jars in {fetch()}")
        return 0
    if args.data_dir:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    broker = ApacheKafka(data_dir=args.data_dir, port=args.port).start()
    print(f"Apache Kafka {VERSION} on {broker.bootstrap} (log {broker.log_path}); Ctrl-C stops",
          flush=True)  # fmt: skip
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        broker.stop(keep_data=args.data_dir is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
