"""The machine a bench ran on, for its JSON report: the results are only comparable with it."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from typing import Any

from streams.native import domain_compiled


def machine() -> dict[str, Any]:
    """Python, cores, CPU model, platform, and whether the domain core ran compiled (the
    services a bench starts use the same install as the bench)."""
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"python": sys.version.split()[0], "cpus": os.cpu_count(), "cpu": model,
            "platform": platform.platform(), "domain_compiled": domain_compiled()}  # fmt: skip
