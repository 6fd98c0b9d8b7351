"""The compiled domain's bookkeeping: which modules run compiled, and which builds are stale."""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from streams.native import domain_compiled, domain_sources, extension_of, stale_sources


def _files(directory: Path, source_mtime: float, built_mtime: float | None) -> Path:
    source = directory / "windows.py"
    source.write_text("X = 1\n")
    os.utime(source, (source_mtime, source_mtime))
    if built_mtime is not None:
        built = directory / f"windows{EXTENSION_SUFFIXES[0]}"
        built.write_bytes(b"")
        os.utime(built, (built_mtime, built_mtime))
    return source


def test_a_source_edited_after_its_build_is_stale(tmp_path: Path) -> None:
    """The extension would still run: the source is reported."""
    source = _files(tmp_path, source_mtime=2_000, built_mtime=1_000)
    assert stale_sources(tmp_path) == [source]


def test_a_source_built_since_it_changed_is_not_stale(tmp_path: Path) -> None:
    _files(tmp_path, source_mtime=1_000, built_mtime=2_000)
    assert stale_sources(tmp_path) == []


def test_a_source_never_compiled_is_not_stale(tmp_path: Path) -> None:
    """Without an extension the source itself runs (``make pure``, ``UPSTREAM_COMPILE=0``)."""
    source = _files(tmp_path, source_mtime=2_000, built_mtime=None)
    assert extension_of(source) is None
    assert stale_sources(tmp_path) == []


def test_the_domain_counts_as_compiled_exactly_when_every_module_has_its_extension() -> None:
    """... and is imported as one (``-p tests.python_domain`` imports the sources instead)."""
    sources = domain_sources()
    assert {path.stem for path in sources} >= {"windows", "claims", "processor", "drift"}
    from_sources = any(type(f).__name__ == "SourceFinder" or getattr(f, "__name__", "") ==
                       "SourceFinder" for f in sys.meta_path)  # fmt: skip
    assert domain_compiled() == (all(extension_of(path) for path in sources) and not from_sources)
