"""Do two series of one exam name the same vertebrae the same way? (one numbering for a whole study)

Two stations of a whole-spine exam (or a series and its localizer) that share a Frame of Reference
see some anatomy twice. Each may have been numbered from its own landmarks; with transitional
anatomy (six lumbar vertebrae counted up from L5-S1 in one station, down from C2-C3 in the other)
they can disagree by a level where they overlap, which a surgeon reading both would not notice.
This module compares two label maps voxel by voxel in patient space: every vertebra voxel of one
is looked up (nearest voxel) in the other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spineseg.labels import DISCS, L5S1, VERTEBRAE, level_name

MIN_SHARED_VOXELS = 500           # about a vertebral body's slice: less is not an overlap worth judging
# Below this share of shared vertebra voxels named alike, two series disagree; and a level shift that
# explains this share may renumber one of them. Not higher: a low-resolution localizer (5 mm slices, 2 mm
# pixels) names a whole vertebra wrongly now and then (seen: one level duplicated, 15 % of the voxels)
# while the rest of its count is sound.
AGREEMENT_FLOOR = 0.75
# Which count wins when two stations differ: TotalSpineSeg, given one whole-spine image, names the vertebrae
# counting down from C2-C3 (a six-lumbar spine gets an L6, not a missing T1), then from L5-S1, C7-T1, T12-L1.
ANCHOR_PRIORITY = ("C2-C3", "L5-S1", "C7-T1", "T12-L1")


@dataclass
class Comparison:
    shared_voxels: int            # vertebra voxels of ``a`` that fall on a vertebra of ``b``
    agreement: float              # share of those with the same level in both
    offsets: dict[str, str]       # a's level -> the level b gives the same bone, where they differ (most voxels)
    shift: int = 0                # b's name of a's vertebra is this many levels further down, on most voxels
    shift_share: float = 1.0      # share of shared voxels that this one shift explains

    @property
    def judged(self) -> bool:
        return self.shared_voxels >= MIN_SHARED_VOXELS

    @property
    def consistent(self) -> bool:
        return not self.judged or self.agreement >= AGREEMENT_FLOOR

    def describe(self) -> str:
        pairs = ", ".join(f"{a} is {b}" for a, b in list(self.offsets.items())[:3])
        return f"{100 * self.agreement:.0f} % of {self.shared_voxels} shared vertebra voxels agree ({pairs})"


def compare(labels_a: np.ndarray, affine_a: np.ndarray, labels_b: np.ndarray, affine_b: np.ndarray) -> Comparison:
    """Level agreement of ``a`` with ``b`` (label maps with voxel -> LPS affines) where both see vertebrae."""
    lo, hi = VERTEBRAE[0], VERTEBRAE[-1]   # C1 .. L6 (the sacrum is the same bone in every numbering)
    idx = np.argwhere((labels_a >= lo) & (labels_a <= hi))
    if not len(idx):
        return Comparison(0, 1.0, {})
    world = idx @ np.asarray(affine_a)[:3, :3].T + np.asarray(affine_a)[:3, 3]
    inv = np.linalg.inv(np.asarray(affine_b, float))
    jdx = np.rint(world @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    inside = np.all((jdx >= 0) & (jdx < np.array(labels_b.shape)), axis=1)
    va = labels_a[tuple(idx[inside].T)]
    vb = labels_b[tuple(jdx[inside].T)]
    both = (vb >= lo) & (vb <= hi)
    va, vb = va[both], vb[both]
    if not va.size:
        return Comparison(0, 1.0, {})
    offsets = {}
    for value in np.unique(va[va != vb]):
        other = np.bincount(vb[(va == value) & (vb != value)]).argmax()
        offsets[level_name(int(value))] = level_name(int(other))
    index = np.full(max(VERTEBRAE) + 1, -10_000)
    index[VERTEBRAE] = np.arange(len(VERTEBRAE))
    d = index[vb] - index[va]
    d = d[np.abs(d) < len(VERTEBRAE)]          # both are vertebrae of the sequence
    shift, share = 0, 1.0
    if d.size:
        values, counts = np.unique(d, return_counts=True)
        shift, share = int(values[counts.argmax()]), float(counts.max() / va.size)
    return Comparison(int(va.size), float((va == vb).mean()), offsets, shift, share)


def anchor_rank(anchors: list[str]) -> int:
    """Position of the best of ``anchors`` in ANCHOR_PRIORITY (len when none is a landmark name)."""
    return min((ANCHOR_PRIORITY.index(a) for a in anchors if a in ANCHOR_PRIORITY), default=len(ANCHOR_PRIORITY))


def renumber(labels: np.ndarray, shift: int) -> np.ndarray | None:
    """``labels`` with every vertebra and disc moved ``shift`` levels down the spine (negative: up), as a
    count anchored elsewhere names them: T12 -> L1 for +1. The sacrum, canal and cord keep their labels,
    and so does the disc above the sacrum (100), which TotalSpineSeg always calls L5-S1 (so +1 turns the
    last lumbar vertebra into L6 and the disc above it into L5-L6). None where a level would leave the
    scheme (beyond L6, above C1, or a disc onto the one above the sacrum)."""
    table = np.arange(256, dtype=np.uint16)
    discs = DISCS[:-1]                          # without L5-S1 (100)
    for order in (VERTEBRAE, discs):
        for i, value in enumerate(order):
            if i + shift < 0 or i + shift >= len(order):
                if (labels == value).any():
                    return None
                continue
            table[value] = order[i + shift]
    table[L5S1] = L5S1
    return table[labels].astype(labels.dtype)
