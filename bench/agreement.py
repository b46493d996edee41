"""The one voxel agreement the benches record between two label maps on the same grid: ours against a reference
(the `totalspineseg` command, dcm2niix -> totalspineseg, the exact torch path).

Every bench that compares label maps records :func:`agreement`'s keys. Records made before it (in
bench/results/) name two of its figures otherwise: ``all_voxels`` (bench/backends.py) and ``agreement``
(bench/reference_agreement*.py) for ``agreement_all``, ``foreground`` (bench/backends.py) for
``agreement_foreground``; tools/docs_figures.py reads either.
"""
from __future__ import annotations

import numpy as np

KEYS = ("agreement_all", "agreement_foreground")


def agreement(ours: np.ndarray, reference: np.ndarray) -> dict:
    """How alike ``ours`` is to ``reference`` (label maps of the same shape), voxel for voxel:

    - ``agreement_all``: the share of all voxels with the same label;
    - ``agreement_foreground``: the same over the voxels either map labels (None when neither labels any);
    - ``foreground_voxels``, ``differing_voxels``: how many voxels either map labels, and how many differ;
    - ``reference_to_ours``: ``{"r->o": voxels}`` for each pair of labels that differ (the reference's label
      first), most voxels first;
    - ``same_structures``: whether both maps hold the same labels;
    - ``dice``: the Dice of each label either map holds (``{label: Dice}``), and ``lowest_dice``: the lowest of
      them, ``{"label", "dice"}`` (None when neither map holds a label).
    """
    ours, reference = np.asarray(ours), np.asarray(reference)
    if ours.shape != reference.shape:
        raise ValueError(f"label maps of different shapes: {ours.shape} and {reference.shape}")
    n = int(max(ours.max(initial=0), reference.max(initial=0))) + 1
    # voxels per (reference label, our label): every figure below is a sum over this table
    pairs = np.bincount(reference.ravel().astype(np.int64) * n + ours.ravel().astype(np.int64),
                        minlength=n * n).reshape(n, n)
    total, same, background = int(pairs.sum()), int(np.trace(pairs)), int(pairs[0, 0])
    foreground = total - background
    ref_size, our_size = pairs.sum(axis=1), pairs.sum(axis=0)
    labels = [v for v in range(1, n) if ref_size[v] or our_size[v]]
    dice = {v: round(2.0 * float(pairs[v, v]) / float(ref_size[v] + our_size[v]), 4) for v in labels}
    worst = min(dice, key=dice.get) if dice else None
    differing = {(r, o): int(pairs[r, o]) for r, o in zip(*np.nonzero(pairs)) if r != o}
    return {"agreement_all": round(same / total, 6) if total else None,
            "agreement_foreground": round((same - background) / foreground, 6) if foreground else None,
            "foreground_voxels": foreground, "differing_voxels": total - same,
            "reference_to_ours": {f"{r}->{o}": k for (r, o), k in sorted(differing.items(), key=lambda kv: -kv[1])},
            "same_structures": {v for v in labels if ref_size[v]} == {v for v in labels if our_size[v]},
            "dice": dice, "lowest_dice": {"label": worst, "dice": dice[worst]} if dice else None}


def minimum_agreement(rows: list[dict]) -> dict:
    """The lowest ``agreement_all`` and ``agreement_foreground`` over several :func:`agreement` results."""
    return {k: min((r[k] for r in rows if r[k] is not None), default=None) for k in KEYS}
