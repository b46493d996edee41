"""TotalSpineSeg's final labels: the one table of their values, names, anatomical order and region.

The values are those ``totalspineseg`` writes in its final (step 2) label map: 1 spinal cord, 2 spinal
canal, 11-17 C1-C7, 21-32 T1-T12, 41-46 L1-L6, 50 sacrum, and a disc named after the vertebra above it,
63-67 C2-C3 to C6-C7, 71-82 C7-T1 to T11-T12, 91-96 T12-L1 to L5-L6, 100 L5-S1 (the disc above the sacrum,
whatever the lumbar count). L6 and the L5-L6 disc exist only with lumbosacral transitional anatomy.
Every module that needs a value, a name or the order of levels takes it from here; the coded concepts of
each value (SNOMED CT, colours) are ``spineseg.outputs.codes_table``'s.
"""
from __future__ import annotations

CORD, CANAL, SACRUM = 1, 2, 50
L5, L6, L5L6, L5S1 = 45, 46, 96, 100

# (value, level) of each vertebra, cranial to caudal
VERTEBRA_LEVELS: tuple[tuple[int, str], ...] = (
    *((11 + i, f"C{i + 1}") for i in range(7)),
    *((21 + i, f"T{i + 1}") for i in range(12)),
    *((41 + i, f"L{i + 1}") for i in range(6)),
)
# (value, upper level, lower level) of each disc, cranial to caudal
DISC_LEVELS: tuple[tuple[int, str, str], ...] = (
    *((63 + i, f"C{i + 2}", f"C{i + 3}") for i in range(5)),
    (71, "C7", "T1"),
    *((72 + i, f"T{i + 1}", f"T{i + 2}") for i in range(11)),
    (91, "T12", "L1"),
    *((92 + i, f"L{i + 1}", f"L{i + 2}") for i in range(5)),
    (L5S1, "L5", "S1"),
)

VERTEBRAE: list[int] = [value for value, _ in VERTEBRA_LEVELS]      # C1 .. L6
DISCS: list[int] = [value for value, _, _ in DISC_LEVELS]           # C2-C3 .. L5-L6, L5-S1
LEVELS: frozenset[int] = frozenset(VERTEBRAE) | frozenset(DISCS) | {SACRUM}
# head to foot: C1, C2, C2-C3, C3, ..., L5, L5-L6, L6, L5-S1, sacrum (each disc below the vertebra it is named
# after; L5-L6 and L6 only where present)
ANATOMICAL_SEQUENCE: list[int] = [VERTEBRAE[0], *(v for pair in zip(VERTEBRAE[1:], DISCS) for v in pair), SACRUM]

NAMES: dict[int, str] = {
    CORD: "Spinal cord", CANAL: "Spinal canal", SACRUM: "Sacrum",
    **{value: f"{level} vertebra" for value, level in VERTEBRA_LEVELS},
    **{value: f"{upper}-{lower} intervertebral disc" for value, upper, lower in DISC_LEVELS},
}


def level_name(value: int) -> str:
    """Short level name: ``L6``, ``L5-L6``, ``Sacrum``, ``Spinal canal``."""
    name = NAMES[value]
    return name.split(" ")[0] if value in LEVELS and value != SACRUM else name


def rank(value: int) -> int:
    """Head-to-foot position of a level in :data:`ANATOMICAL_SEQUENCE`."""
    return ANATOMICAL_SEQUENCE.index(value)


def region(value: int) -> str | None:
    """``cervical``, ``thoracic``, ``lumbar`` or ``sacral`` for a vertebra, disc or the sacrum (a disc takes the
    region of the vertebra above it: C7-T1 is cervical, L5-S1 lumbar); None for the cord and canal."""
    if value == SACRUM:
        return "sacral"
    if value not in LEVELS:
        return None
    first = level_name(value)[0]
    return {"C": "cervical", "T": "thoracic", "L": "lumbar"}[first]


THORACIC_VERTEBRAE: list[int] = [v for v in VERTEBRAE if region(v) == "thoracic"]
LUMBAR_VERTEBRAE: list[int] = [v for v in VERTEBRAE if region(v) == "lumbar"]       # L1 .. L6
