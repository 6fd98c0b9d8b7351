"""Reference data for ingest: payer names → payer ids, CPT codes → groups, per customer.

The defaults are versioned files in ``streams/reference_data``. A customer's own files,
``<UPSTREAM_REFERENCE_DIR>/<customer_id>/payers.csv`` and ``…/cpt_groups.csv`` in the same
formats, go in front of them: their entries win, the defaults fill the rest.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from streams.domain.cpt import DEFAULT as DEFAULT_CPT
from streams.domain.cpt import CptGroups, data_lines

DEFAULT_PAYERS = Path(__file__).resolve().parent / "reference_data" / "payers.csv"
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise(name: str) -> str:
    """A payer name as aliases are matched: lower case, punctuation and spaces collapsed."""
    return " ".join(_NOT_ALNUM.sub(" ", name.lower()).split())


@dataclass(frozen=True)
class Payer:
    """A payer as claims are keyed by it."""

    payer_id: str
    payer_name: str


class Payers:
    """Aliases of payer names, matched after :func:`normalise`."""

    def __init__(self, aliases: dict[str, Payer], version: str = "") -> None:
        self.aliases = aliases
        self.version = version

    @classmethod
    def parse(cls, text: str, source: str = "") -> Payers:
        """Read ``alias,payer_id,payer_name`` rows; ValueError names the bad line."""
        lines, version = data_lines(text)
        aliases = {}
        for number, row in enumerate(csv.DictReader(lines), start=1):
            alias = normalise(row.get("alias") or "")
            payer_id = (row.get("payer_id") or "").strip()
            if not alias or not payer_id or "|" in payer_id:
                raise ValueError(f"{source}: data row {number}: need alias,payer_id[,payer_name]")
            aliases[alias] = Payer(payer_id, (row.get("payer_name") or "").strip() or payer_id)
        return cls(aliases, version)

    def over(self, defaults: Payers) -> Payers:
        """These aliases in front of ``defaults``."""
        version = "+".join(v for v in (defaults.version, self.version) if v)
        return Payers({**defaults.aliases, **self.aliases}, version)

    def resolve(self, name: str) -> Payer:
        """The payer called ``name``: a known alias, else a slug of the name as its id."""
        key = normalise(name)
        known = self.aliases.get(key)
        if known is not None:
            return known
        return Payer(key.replace(" ", "-"), name.strip())


@dataclass(frozen=True)
class Reference:
    """The payer and CPT mappings one customer's claims are read with."""

    payers: Payers
    cpt: CptGroups

    @property
    def version(self) -> str:
        """Which files, in which versions, made these mappings."""
        return f"payers {self.payers.version or '?'}, cpt {self.cpt.version or '?'}"


def load_reference(customer_id: str | None = None, directory: Path | None = None) -> Reference:
    """The defaults, under ``directory/<customer_id>/``'s files when there are any."""
    payers = Payers.parse(DEFAULT_PAYERS.read_text(encoding="utf-8"), str(DEFAULT_PAYERS))
    cpt = DEFAULT_CPT
    if customer_id and directory:
        own = directory / customer_id
        if (own / "payers.csv").is_file():
            text = (own / "payers.csv").read_text(encoding="utf-8")
            payers = Payers.parse(text, str(own / "payers.csv")).over(payers)
        if (own / "cpt_groups.csv").is_file():
            text = (own / "cpt_groups.csv").read_text(encoding="utf-8")
            cpt = CptGroups.parse(text, str(own / "cpt_groups.csv")).before(cpt)
    return Reference(payers, cpt)
