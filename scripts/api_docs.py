#!/usr/bin/env python3
"""Write notifier/static/openapi.json (``openapi_doc.py``) and asyncapi.json
(``asyncapi_doc.py``).

The WebSocket messages and the HTTP answers are the types the notifier builds them as
(``notifier/messages.py``, ``notifier/answers.py``), their schemas written by pydantic; the
Kafka payloads are the Avro schema files themselves; the rest (paths, channels, the JSON
payloads of the weekly reports and dead letters) is data, in the two modules. After changing
the API or the protocol: ``python scripts/api_docs.py``; ``--check`` fails when the files are
stale (a unit test runs it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from asyncapi_doc import ASYNCAPI
from openapi_doc import OPENAPI

STATIC = Path(__file__).resolve().parent.parent / "notifier" / "static"


def main(argv: list[str]) -> int:
    """Write the documents, or with ``--check`` report whether they are current."""
    stale = []
    for name, doc in (("openapi", OPENAPI), ("asyncapi", ASYNCAPI)):
        path = STATIC / f"{name}.json"
        text = json.dumps(doc, indent=2) + "\n"
        if path.read_text(encoding="utf-8") != text:
            stale.append(path.name)
            if "--check" not in argv:
                path.write_text(text, encoding="utf-8")
    if stale and "--check" in argv:
        print(f"stale: {', '.join(stale)}; run python scripts/api_docs.py", file=sys.stderr)
        return 1
    print(
        f"{'updated' if stale else 'current'}: {', '.join(stale) or 'openapi.json, asyncapi.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
