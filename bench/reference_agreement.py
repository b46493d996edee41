"""Voxel agreement between spine-seg's in-process pipeline and the unmodified `totalspineseg` command.

Both get the same NIfTI (int16, as dcm2niix writes it) of a phantom and the same weights (the bundled
models, or -m). The command runs both steps with `--no-stalling` on the CPU; our pipeline runs
`segment_volume`. For each case: bench/agreement.py's figures (the share of voxels with the same label, the
labels on which the two disagree, each label's Dice).

    python -m bench.reference_agreement [--cases 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import nibabel as nib

from bench.agreement import agreement
from spineseg.inference.two_step import load_models, segment_volume
from tools import reference_cli as R

ROOT = Path(__file__).resolve().parent.parent

# (seed, field of view, slice thickness mm, pixel mm); seeds never used in training
CASES = [(5200, "lumbar", 2.0, 1.0), (5201, "cervical", 3.0, 0.8), (5202, "thoracolumbar", 3.5, 0.9),
         (5203, "whole", 2.5, 1.2), (5204, "cervicothoracic", 1.0, 1.0), (5205, "lumbar", 4.0, 0.6)]


def case_inputs(cases=CASES):
    """(seed, field of view, int16 NIfTI as the command reads it) of each case (reference_cli.phantom_nifti)."""
    for seed, fov, thick, pixel in cases:
        yield seed, fov, R.phantom_nifti(seed, fov, thick, pixel)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=len(CASES))
    ap.add_argument("--seeds", type=int, nargs="*", help="only these cases (by seed)")
    ap.add_argument("-m", "--models", type=Path, default=ROOT / "models")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    models = load_models(a.models, "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = R.prepare_data_dir(a.models, tmp / "data")
        for seed, fov, img in case_inputs([c for c in CASES[:a.cases] if not a.seeds or c[0] in a.seeds]):
            case_in = tmp / f"in_{seed}"
            case_in.mkdir()
            nib.save(img, case_in / "case.nii.gz")
            t0 = time.perf_counter()
            proc = subprocess.run(R.command(case_in / "case.nii.gz", tmp / f"out_{seed}", data_dir),
                                  capture_output=True, text=True)
            ref_s = time.perf_counter() - t0
            if proc.returncode != 0:
                rows.append({"seed": seed, "fov": fov, "error": (proc.stdout + proc.stderr)[-500:]})
                print(f"seed {seed} {fov}: reference failed: {rows[-1]['error']}", flush=True)
                continue
            ref = R.final_labels(tmp / f"out_{seed}")
            t0 = time.perf_counter()
            # the very file the command reads (float32 affine)
            ours = segment_volume(*R.stored_input(case_in / "case.nii.gz"), models).labels
            ours_s = time.perf_counter() - t0
            row = {"seed": seed, "fov": fov, "shape": list(img.shape), **agreement(ours, ref),
                   "reference_s": round(ref_s, 1), "ours_s": round(ours_s, 1)}
            rows.append(row)
            print(f"seed {seed} {fov:16s} {img.shape}: agreement {100 * row['agreement_all']:.4f} % "
                  f"({row['differing_voxels']} voxels differ: {row['reference_to_ours'] or 'none'}); reference "
                  f"{ref_s:.0f} s, in-process {ours_s:.0f} s", flush=True)
    done = [r for r in rows if "agreement_all" in r]
    if done:
        print(f"minimum agreement {100 * min(r['agreement_all'] for r in done):.4f} % over {len(done)} cases")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if len(done) == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
