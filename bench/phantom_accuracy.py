"""Accuracy of the full pipeline (both steps + labelling) on held-out phantoms.

Seeds 5000.. were never used in training (tools/train_phantom_models.py uses 1000-1999).
For each case: mean Dice of cord, canal, vertebrae (all levels together) and discs, and the share
of vertebrae and discs present in the truth whose voxels carry the correct level label.

    python -m bench.phantom_accuracy [--cases 20] [--slice-thickness 1.0] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spineseg.errors import SpineSegError
from spineseg.inference.two_step import load_models, segment_volume
from tests.helpers import GROUPS, group_dice
from tools import phantom as P

ROOT = Path(__file__).resolve().parent.parent

FOVS = ["lumbar", "cervical", "lumbar", "cervical", "whole", "thoracolumbar", "cervicothoracic"]


def level_accuracy(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(correct, total) over vertebrae and discs present in the truth: correct when most of the
    structure's voxels are predicted with its own label."""
    labels = [v for v in np.unique(truth) if v in GROUPS["vertebrae"] + GROUPS["discs"]]
    correct = sum(1 for v in labels if (pred[truth == v] == v).mean() > 0.5)
    return correct, len(labels)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=5000)
    ap.add_argument("--slice-thickness", type=float, default=1.0)
    ap.add_argument("--pixel", type=float, default=1.0)
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    models = load_models(a.models, "cpu")
    rows = []
    for i in range(a.cases):
        seed = a.first_seed + i
        case = P.render_case(seed, FOVS[i % len(FOVS)], slice_thickness=a.slice_thickness, pixel=a.pixel)
        ph, geom, truth = case["phantom"], case["geometry"], case["labels"]
        t0 = time.perf_counter()
        try:
            pred = segment_volume(case["image"], geom.affine, models).labels
            error = None
        except SpineSegError as exc:
            pred, error = np.zeros_like(truth), exc.code
        seconds = time.perf_counter() - t0
        scores = group_dice(pred, truth)
        correct, total = level_accuracy(pred, truth)
        rows.append({"seed": seed, "fov": ph.fov, "shape": list(geom.shape), "seconds": round(seconds, 1),
                     "dice": {k: round(v, 4) for k, v in scores.items()}, "levels_correct": correct,
                     "levels_total": total, "error": error})
        print(f"seed {seed} {ph.fov:16s} {seconds:5.1f} s  " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
              + f"  levels {correct}/{total}" + (f"  ERROR {error}" if error else ""), flush=True)
    summary = {g: round(float(np.mean([r["dice"][g] for r in rows if g in r["dice"]])), 4) for g in GROUPS}
    correct = sum(r["levels_correct"] for r in rows)
    total = sum(r["levels_total"] for r in rows)
    summary["level_accuracy"] = round(correct / max(total, 1), 4)
    summary["cases"] = len(rows)
    summary["slice_thickness_mm"] = a.slice_thickness
    print("mean Dice: " + ", ".join(f"{g} {summary[g]:.3f}" for g in GROUPS)
          + f"; correct level labels {correct}/{total} ({100 * summary['level_accuracy']:.1f} %)")
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "cases": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
