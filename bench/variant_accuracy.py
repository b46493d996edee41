"""Level naming on anatomical variants, and whether the app warns when the numbering is wrong.

For each variant phantom (tools/phantom.py VARIANTS: 6 or 4 lumbar vertebrae, 11 thoracic, lumbarised
S1, sacralised L5, and the usual spine for comparison) in a whole-spine and a lumbar field of view:
the share of vertebrae and discs named as the generator's truth names them, the numbering's anchors
and confidence (spineseg.inference.numbering), and its warnings. The property that matters clinically is in the
last column: a numbering below 95 % correct must never come without a warning.

    python -m bench.variant_accuracy [--json bench/results/variant_accuracy.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.phantom_accuracy import level_accuracy
from spineseg.errors import SpineSegError
from spineseg.inference.two_step import load_models, segment_volume
from tools import phantom as P

ROOT = Path(__file__).resolve().parent.parent

SEEDS = {"whole": 5203, "lumbar": 5205}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(P.VARIANTS))
    ap.add_argument("--fovs", nargs="+", default=list(SEEDS))
    ap.add_argument("--slice-thickness", type=float, default=3.0)
    ap.add_argument("--pixel", type=float, default=1.2)
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    models = load_models(a.models, "cpu")
    rows = []
    for variant in a.variants:
        for fov in a.fovs:
            case = P.render_case(SEEDS[fov], fov, variant, slice_thickness=a.slice_thickness, pixel=a.pixel)
            truth = case["labels"]
            t0 = time.perf_counter()
            try:
                result = segment_volume(case["image"], case["geometry"].affine, models)
            except SpineSegError as exc:
                rows.append({"variant": variant, "fov": fov, "error": exc.code})
                print(f"{variant:14s} {fov:7s} failed: {exc.code}")
                continue
            correct, total = level_accuracy(result.labels, truth)
            n = result.numbering
            row = {"variant": variant, "fov": fov, "seed": SEEDS[fov], "levels_correct": correct, "levels": total,
                   "accuracy": round(correct / total, 4), "anchors": n.anchors, "confidence": n.confidence,
                   "short": n.short, "warnings": n.warnings, "seconds": round(time.perf_counter() - t0, 1),
                   "wrong_but_silent": correct / total < 0.95 and not n.warnings,
                   "field_of_view_cannot_verify": n.cannot_verify}
            # wrong without a warning, where the field of view itself cannot show the error and the report
            # and the review picture say what it cannot verify (e.g. 11 rib-bearing vertebrae seen lumbar-only)
            row["silent_but_unverifiable_here"] = row["wrong_but_silent"] and bool(n.cannot_verify)
            rows.append(row)
            print(f"{variant:14s} {fov:7s} {correct:2d}/{total:2d} levels  anchors {'+'.join(n.anchors) or '-':14s} "
                  f"{n.confidence:8s} {n.short!r}  silent-wrong={row['wrong_but_silent']}")
    silent = [r for r in rows if r.get("wrong_but_silent") and not r["silent_but_unverifiable_here"]]
    told = [r for r in rows if r.get("silent_but_unverifiable_here")]
    print(f"\n{len(silent)} case(s) numbered wrong without a warning where the field of view could show it")
    for r in told:
        print(f"{r['variant']} {r['fov']}: wrong without a warning; the field of view cannot verify it, and the report "
              f"and review picture say so: {'; '.join(r['field_of_view_cannot_verify'])}")
    if a.json:
        import datetime
        import platform
        import subprocess
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
        recorded = {"date": datetime.date.today().isoformat(), "commit": commit.strip(),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
        a.json.write_text(json.dumps({"bench": "variant_accuracy", "recorded": recorded,
                                      "models": str(a.models.resolve().relative_to(ROOT) if a.models.resolve().is_relative_to(ROOT) else a.models),
                                      "slice_thickness": a.slice_thickness, "pixel": a.pixel, "rows": rows},
                                     indent=1) + "\n")
    return 1 if silent else 0


if __name__ == "__main__":
    raise SystemExit(main())
