"""CPT / HCPCS code → procedure group.

The ranges come from ``streams/reference_data/cpt_groups.csv`` (versioned with the code, after
the AMA CPT sections); a customer's own ranges can go in front of them
(:mod:`streams.reference`). Level II HCPCS codes (a letter and four digits) group by their
letter; Category II / III and PLA codes by their suffix.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "reference_data" / "cpt_groups.csv"


def data_lines(text: str) -> tuple[list[str], str]:
    """The non-comment lines of a reference-data file, and its ``# version:`` (or "")."""
    version, lines = "", []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if stripped[1:].strip().lower().startswith("version:"):
                version = stripped.split(":", 1)[1].strip()
        elif stripped:
            lines.append(line)
    return lines, version


@dataclass(frozen=True)
class CptRange:
    """Codes ``first``..``last`` (inclusive) belong to ``group``."""

    first: str
    last: str
    group: str

    def covers(self, code: str) -> bool:
        """Whether ``code`` (five characters, upper case) is in the range.

        Ranges of digits hold numeric codes; other ranges hold only codes with a letter, compared
        as text (``J9000``..``J9999``).
        """
        if self.first.isdigit() and self.last.isdigit():
            return code.isdigit() and int(self.first) <= int(code) <= int(self.last)
        return not code.isdigit() and self.first <= code <= self.last


class CptGroups:
    """Ranges looked up in order; the first that covers a code wins."""

    def __init__(self, ranges: Iterable[CptRange], version: str = "") -> None:
        self.ranges = tuple(ranges)
        self.version = version
        # Numeric ranges as integers: the lookup is on the worker's hot path.
        self._numeric = tuple(
            (int(r.first), int(r.last), r.group)
            for r in self.ranges
            if r.first.isdigit() and r.last.isdigit()
        )
        self._other = tuple(r for r in self.ranges if not (r.first.isdigit() and r.last.isdigit()))

    @classmethod
    def parse(cls, text: str, source: str = "") -> CptGroups:
        """Read ``first,last,group`` rows; ValueError names the bad line."""
        lines, version = data_lines(text)
        ranges = []
        for number, row in enumerate(csv.DictReader(lines), start=2):
            first = (row.get("first") or "").strip().upper()
            last = (row.get("last") or "").strip().upper() or first
            group = (row.get("group") or "").strip()
            if len(first) != 5 or len(last) != 5 or not group or first > last:
                raise ValueError(f"{source}: data row {number - 1}: need first,last,group")
            ranges.append(CptRange(first, last, group))
        return cls(ranges, version)

    def before(self, other: CptGroups) -> CptGroups:
        """These ranges, then ``other``'s (a customer's ranges over the defaults)."""
        version = "+".join(v for v in (other.version, self.version) if v)
        return CptGroups((*self.ranges, *other.ranges), version)

    def group_for(self, cpt_code: str) -> str | None:
        """The procedure group of a CPT or HCPCS code, or None when it is not a code."""
        code = cpt_code.strip().upper()
        if len(code) != 5:
            return None
        if not code.isdigit():
            for r in self._other:
                if r.covers(code):
                    return r.group
        else:
            number = int(code)
            for first, last, group in self._numeric:
                if first <= number <= last:
                    return group
            return None
        if code[:4].isdigit() and code[4] in "FTU":
            return {"F": "category_ii", "T": "category_iii", "U": "pla"}[code[4]]
        if code[0].isalpha() and code[1:].isdigit():
            return f"hcpcs_{code[0].lower()}"
        return None


DEFAULT = CptGroups.parse(DEFAULT_FILE.read_text(encoding="utf-8"), str(DEFAULT_FILE))


def cpt_group_for(cpt_code: str) -> str | None:
    """The default procedure group of a CPT or HCPCS code, or None when it is not a code."""
    return DEFAULT.group_for(cpt_code)
