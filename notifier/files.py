"""The files the notifier serves as they are: the console with its chart library (Plotly's
``plotly.min.js``, from the ``plotly`` package), the generated API documents, and the
interactive API docs page with Swagger UI's assets (from the ``swagger-ui-py`` package). All
are served from here: no page loads anything from another host."""

from __future__ import annotations

import functools
import gzip
from http import HTTPStatus
from importlib import resources
from typing import NamedTuple

from starlette.responses import Response

from notifier.api import response


class File(NamedTuple):
    """A file: its package, its path in the package, its content type, how long to cache it."""

    package: str
    name: str
    content_type: str
    max_age_s: int = 0

    @property
    def compressible(self) -> bool:
        """Whether gzip makes it smaller (text, not images)."""
        return self.content_type.startswith(("text/", "application/json"))


HTML, JS = "text/html; charset=utf-8", "text/javascript; charset=utf-8"
FILES = {  # URL path -> file
    "/": File("notifier", "static/console.html", HTML),
    "/openapi.json": File("notifier", "static/openapi.json", "application/json"),
    "/asyncapi.json": File("notifier", "static/asyncapi.json", "application/json"),
    "/static/plotly.min.js": File("plotly", "package_data/plotly.min.js", JS, 86_400),
    "/docs": File("notifier", "static/docs.html", HTML),
    "/docs/docs.js": File("notifier", "static/docs.js", JS),
    "/docs/swagger-ui.css": File("swagger_ui", "static/swagger-ui.css", "text/css", 86_400),
    "/docs/swagger-ui-bundle.js": File("swagger_ui", "static/swagger-ui-bundle.js", JS, 86_400),
    "/docs/favicon-32x32.png": File("swagger_ui", "static/favicon-32x32.png", "image/png", 86_400),
}


@functools.cache
def read(file: File) -> bytes:
    """The file's bytes, read once: package files do not change while the notifier runs."""
    return resources.files(file.package).joinpath(file.name).read_bytes()


@functools.cache
def read_gzipped(file: File) -> bytes:
    """The file gzip-compressed, once (plotly.min.js: 4.8 MB, 1.4 MB compressed)."""
    return gzip.compress(read(file), compresslevel=6, mtime=0)


def file_response(file: File, accepts: str) -> Response:
    """A served file, gzip-compressed when the client accepts it (text only)."""
    headers = {"Cache-Control": f"public, max-age={file.max_age_s}"} if file.max_age_s else {}
    if file.compressible and "gzip" in accepts:
        headers |= {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return response(HTTPStatus.OK, read_gzipped(file), file.content_type, headers)
    return response(HTTPStatus.OK, read(file), file.content_type, headers)
