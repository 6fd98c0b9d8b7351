"""CPT / HCPCS code → procedure group, following the AMA CPT section ranges.

Level II HCPCS codes (a letter and four digits) group by their letter.
"""

from __future__ import annotations

# (first code, last code, group) over the five-digit numeric CPT Category I codes.
_CPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (100, 1999, "anesthesia"),
    (10004, 69990, "surgery"),
    (70010, 79999, "radiology"),
    (80047, 89398, "pathology_lab"),
    (90281, 99199, "medicine"),
    (99202, 99499, "evaluation_management"),
    (99500, 99607, "medicine"),
)


def cpt_group_for(cpt_code: str) -> str | None:
    """Return the procedure group of a CPT or HCPCS code, or None when it is not a code."""
    code = cpt_code.strip().upper()
    if len(code) != 5:
        return None
    if code.isdigit():
        number = int(code)
        for first, last, group in _CPT_RANGES:
            if first <= number <= last:
                return group
        return None
    if code[:4].isdigit() and code[4] in "FTU":
        return {"F": "category_ii", "T": "category_iii", "U": "pla"}[code[4]]
    if code[0].isalpha() and code[1:].isdigit():
        return f"hcpcs_{code[0].lower()}"
    return None
