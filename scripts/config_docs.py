"""Write ``docs/configuration.md`` from the settings class (``streams/settings.py``).

``python scripts/config_docs.py`` rewrites it; ``--check`` exits 1 when it is stale (a unit
test runs the check).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import SecretStr

from streams.settings import SECTIONS, Settings, env_name

TARGET = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

HEADER = """# Configuration

Every process (`upstream worker`, `sink`, `notifier`, and the CLI commands) reads its settings
from environment variables, once, at start. Each is `UPSTREAM_` and the setting's name in
capitals, except Sentry's own two. A value that does not parse, or is out of range, stops the
process at start with exit code 2 and a message naming the variable.

This page is generated from `streams/settings.py` by `python scripts/config_docs.py`.
"""


def _default(value: object) -> str:
    if isinstance(value, SecretStr):
        return "—" if not value.get_secret_value() else "(set)"
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`"


def _limits(field: object) -> str:
    bounds = []
    for item in getattr(field, "metadata", ()):
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if (bound := getattr(item, attr, None)) is not None:
                bounds.append(f"{sign} {bound}")
    return f" ({', '.join(bounds)})" if bounds else ""


def render() -> str:
    """The page, from the fields of :class:`Settings` in their order."""
    out = [HEADER]
    for name, field in Settings.model_fields.items():
        if name in SECTIONS:
            heading, about = SECTIONS[name]
            out.append(f"\n## {heading}\n\n")
            if about:
                out.append(f"{about}\n")
            out.append("\n| variable | default | meaning |\n|---|---|---|\n")
        if not field.description:
            raise SystemExit(f"settings field {name} has no description")
        meaning = (field.description + _limits(field)).replace("|", "\\|")
        out.append(f"| `{env_name(name)}` | {_default(field.default)} | {meaning} |\n")
    return "".join(out)


def main(argv: list[str]) -> int:
    """Write the page, or with ``--check`` report whether it is current."""
    text = render()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    if current == text:
        print(f"current: {TARGET.name}")
        return 0
    if "--check" in argv:
        print(f"stale: {TARGET.name}; run python scripts/config_docs.py", file=sys.stderr)
        return 1
    TARGET.write_text(text, encoding="utf-8")
    print(f"updated: {TARGET.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
