"""Builds the domain core (``streams/domain/``) as C extensions with mypyc; the rest of the
package metadata is in ``pyproject.toml``.

The domain is pure, fully typed Python (mypy --strict), which mypyc compiles unchanged: it is
the worker's per-claim CPU (validation, windows, drift tests, the alert lifecycle), and
compiled it runs 20-30 % faster (bench/README.md, "Hot path"). Only the domain: it imports nothing
outside the standard library, so mypyc can type-check it in pip's isolated build environment.
``UPSTREAM_COMPILE=0`` installs it as plain Python (see ``streams/native.py``).
"""

import os

from setuptools import setup

ext_modules = []
if os.environ.get("UPSTREAM_COMPILE", "1") != "0":
    from mypyc.build import mypycify

    # group_name: the shared runtime is one module, upstream_domain__mypyc, not a hash.
    ext_modules = mypycify(["streams/domain/"], opt_level="3", group_name="upstream_domain")

setup(ext_modules=ext_modules)
