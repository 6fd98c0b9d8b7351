"""The private parts of faust-streaming the runtime relies on are all still there."""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version

import pytest

from streams.runtime.faust_private import CHECKED_VERSION, PARTS, Private


def _defines(cls: type, part: Private) -> bool:
    """Whether ``cls`` has the method, or sets the attribute in its own source."""
    if part.kind == "method":
        return callable(vars(cls).get(part.name))
    source = inspect.getsource(cls)
    return any(f"self.{part.name}{sep}" in source for sep in (" =", ":"))


@pytest.mark.parametrize("part", PARTS, ids=lambda p: f"{p.owner.split(':')[1]}.{p.name}")
def test_each_private_part_is_where_the_runtime_expects_it(part: Private) -> None:
    module, name = part.owner.split(":")
    owner = getattr(importlib.import_module(module), name)
    assert _defines(owner, part), (
        f"{part.owner} no longer has {part.name} ({part.use}): read the new faust-streaming "
        "before using it"
    )


def test_the_installed_faust_streaming_is_the_version_the_drain_loop_was_read_against() -> None:
    assert version("faust-streaming") == CHECKED_VERSION, (
        "faust-streaming changed: re-read Consumer._drain_messages and Consumer.ack against "
        "streams/runtime/batches.py and consumer.py, then raise CHECKED_VERSION"
    )


def test_a_part_that_is_not_there_is_reported() -> None:
    """The check can fail: a name Faust does not have is not found."""
    missing = Private("faust.transport.consumer:Consumer", "_no_such_part", "attribute", "x")
    owner = importlib.import_module("faust.transport.consumer").Consumer
    assert not _defines(owner, missing)
    assert not _defines(owner, Private(missing.owner, "_no_such_method", "method", "x"))
