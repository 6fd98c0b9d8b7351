"""``pytest -p tests.python_domain``: import the domain core from its Python sources, not the
compiled extensions beside them, so that coverage.py sees its lines (``make coverage``).

Python imports an extension module before a source of the same name; this finder, first on
``sys.meta_path``, answers for ``streams.domain`` and its modules with their sources. Loaded
with ``-p``, it is in place before anything imports the domain.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

DOMAIN = Path(__file__).resolve().parents[1] / "streams" / "domain"
PACKAGE = "streams.domain"


class SourceFinder:
    """Finds the domain's modules as Python sources."""

    @staticmethod
    def find_spec(
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        """The spec of ``fullname`` from its source, if it is the domain or one of its modules."""
        if fullname == PACKAGE:
            return importlib.util.spec_from_file_location(
                fullname, DOMAIN / "__init__.py", submodule_search_locations=[str(DOMAIN)]
            )
        package, _, name = fullname.rpartition(".")
        source = DOMAIN / f"{name}.py"
        if package == PACKAGE and source.exists():
            return importlib.util.spec_from_file_location(fullname, source)
        return None


if any(name == PACKAGE or name.startswith(PACKAGE + ".") for name in sys.modules):
    raise RuntimeError("tests.python_domain must be loaded before the domain is imported (-p)")
sys.meta_path.insert(0, SourceFinder)
