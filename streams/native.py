"""Whether the domain core runs compiled: ``setup.py`` builds ``streams/domain/`` with mypyc.

The compiled modules are C extensions beside their sources (``windows.py`` and
``windows.cpython-311-x86_64-linux-gnu.so``), and Python imports the extension first. So a
source edited after the build is *not* what runs until it is built again (``make install``
does that whenever a domain source is newer than its build); :func:`stale_sources` finds such
sources, and the tests refuse to run on them. ``make pure`` removes the extensions, for
line-level profiles (py-spy sees no lines inside compiled functions).
"""

from __future__ import annotations

import importlib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

DOMAIN_DIR = Path(__file__).parent / "domain"


def domain_sources(directory: Path = DOMAIN_DIR) -> list[Path]:
    """The domain core's modules, the ones ``setup.py`` compiles."""
    return sorted(directory.glob("*.py"))


def extension_of(source: Path) -> Path | None:
    """The compiled extension built from ``source``, if there is one."""
    for suffix in EXTENSION_SUFFIXES:
        built = source.with_name(source.stem + suffix)
        if built.exists():
            return built
    return None


def stale_sources(directory: Path = DOMAIN_DIR) -> list[Path]:
    """Sources changed since their extension was built (the extension still runs)."""
    stale = []
    for source in domain_sources(directory):
        built = extension_of(source)
        if built is not None and source.stat().st_mtime > built.stat().st_mtime:
            stale.append(source)
    return stale


def domain_compiled() -> bool:
    """Whether every domain module imports as a compiled extension (False: any runs as Python,
    e.g. after ``make pure`` or an install with ``UPSTREAM_COMPILE=0``)."""
    for source in domain_sources():
        module = importlib.import_module(f"streams.domain.{source.stem}")
        if not str(module.__file__).endswith(tuple(EXTENSION_SUFFIXES)):
            return False
    return True
