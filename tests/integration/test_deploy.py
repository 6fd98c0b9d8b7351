"""docker-compose.kafka.yml, the Dockerfile and the Grafana dashboard agree with the code.

No Docker engine runs here, so the stack is checked, not started: Compose itself validates
the file (``docker compose config``, or Debian's ``docker-compose``), and every command,
``UPSTREAM_*`` variable, scrape target and dashboard metric is checked against the code.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client import REGISTRY

import notifier.server  # noqa: F401 - registers the notifier's metrics
import sinks.service  # noqa: F401 - registers the sink's metrics
import streams.observability.metrics  # noqa: F401 - registers the worker's metrics
from streams.app.cli_parser import build_parser
from streams.settings import Settings

pytestmark = pytest.mark.integration  # runs docker compose

ROOT = Path(__file__).resolve().parents[2]


def _compose_config() -> dict[str, Any]:
    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    binary = (
        [docker, "compose"]
        if plugin and plugin.returncode == 0
        else [shutil.which("docker-compose")]
    )
    assert binary[0], "no Docker Compose here: scripts/ensure-compose installs one"
    result = subprocess.run(
        [*cast(list[str], binary), "-f", str(ROOT / "docker-compose.kafka.yml"), "config"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def _upstream_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in config["services"].items() if s.get("image") == "upstream:local"}


def test_compose_validates_and_runs_the_whole_stack() -> None:
    config = _compose_config()
    services = config["services"]
    assert {"kafka", "schema-registry", "postgres", "worker-1", "worker-2", "sink", "notifier",
            "prometheus", "grafana"} <= set(services)  # fmt: skip
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    roles = {n: s["command"][0] for n, s in _upstream_services(config).items() if "command" in s}
    assert roles == {"worker-1": "worker", "worker-2": "worker", "sink": "sink",
                     "notifier": "notifier", "dispatcher": "dispatcher",
                     "cli": "--help"}  # fmt: skip


def test_compose_commands_and_variables_exist_in_the_code() -> None:
    config = _compose_config()
    subcommands = cast(argparse._ArgumentGroup, build_parser()._subparsers)  # set: it has commands
    commands = set(cast(dict[str, argparse.ArgumentParser], subcommands._group_actions[0].choices))
    fields = {f"UPSTREAM_{name.upper()}" for name in Settings.model_fields}
    for name, service in _upstream_services(config).items():
        words = " ".join([*service.get("entrypoint", []), *service.get("command", [])])
        for used in re.findall(r"upstream (\w+)", words) + service.get("command", [])[:1]:
            assert used in commands | {"--help"}, f"{name}: unknown command {used}"
        unknown = {k for k in service["environment"] if k.startswith("UPSTREAM_")} - fields
        assert not unknown, f"{name}: {unknown} are not settings"
        assert service["environment"]["UPSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_prometheus_scrapes_what_the_services_serve() -> None:
    config = _compose_config()
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}  # fmt: skip
    services = _upstream_services(config)
    for target in targets:
        host, port = target.split(":")
        env = services[host]["environment"]
        served = (
            env.get("UPSTREAM_NOTIFIER_PORT")
            if host == "notifier"
            else env.get("UPSTREAM_METRICS_PORT")
        )
        assert served == port, f"{target} is not where {host} serves /metrics"


def test_dashboard_queries_only_metrics_the_code_defines() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/upstream.json").read_text())
    # The series names a query can use: counters end in _total, histograms have _bucket etc.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    defined = {m.name + end for m in REGISTRY.collect() for end in suffixes.get(m.type, ("",))}
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"upstream_\w+", target["expr"])
    }
    assert queried, queried - defined
    assert queried <= defined, queried - defined


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("streams", "schemas", "sinks", "notifier"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'ENTRYPOINT ["upstream"]' in dockerfile
    assert "COPY pyproject.toml setup.py" in dockerfile  # setup.py compiles the domain
    assert 'upstream = "streams.app.cli:main"' in (ROOT / "pyproject.toml").read_text()
