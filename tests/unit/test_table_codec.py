"""The worker's tables keep integers wider than 64 bits, whatever JSON library is installed."""

from __future__ import annotations

from faust.serializers import codecs

from streams.domain.windows import Contribution
from streams.runtime.state import TABLE_SERIALIZER


def test_packed_contributions_survive_the_table_codec() -> None:
    packed = Contribution(20_000, True, False, 45, 12_345).pack()
    assert packed >= 2**64  # wider than orjson (Faust's json codec when installed) accepts
    value = [3, packed, {"w": -(2**70)}]
    codec = codecs.get_codec(TABLE_SERIALIZER)
    assert codec.loads(codec.dumps(value)) == value
