"""Voxel agreement between spine-seg's in-process pipeline and the unmodified `totalspineseg` command.

Both get the same NIfTI (int16, as dcm2niix writes it) of a phantom and the same weights (the bundled
models, or -m). The command runs both steps with `--no-stalling` on the CPU; our pipeline runs
`segment_volume`. For each case: the share of voxels with the same label, and the labels on which the
two disagree.

    python bench/reference_agreement.py [--cases 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools")]  # dev modules in tools/, not installed (spineseg is)

import reference_cli as R  # noqa: E402
from spineseg.inference.two_step import load_models, segment_volume  # noqa: E402

# (seed, field of view, slice thickness mm, pixel mm); seeds never used in training
CASES = [(5200, "lumbar", 2.0, 1.0), (5201, "cervical", 3.0, 0.8), (5202, "thoracolumbar", 3.5, 0.9),
         (5203, "whole", 2.5, 1.2), (5204, "cervicothoracic", 1.0, 1.0), (5205, "lumbar", 4.0, 0.6)]


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
        for seed, fov, thick, pixel in CASES[:a.cases]:
            if a.seeds and seed not in a.seeds:
                continue
            img, _ = R.phantom_nifti(seed, fov, thick, pixel)
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
            differ = ours != ref
            agreement = 1.0 - float(differ.mean())
            pairs = {}
            for o, r in zip(ours[differ].tolist(), ref[differ].tolist()):
                pairs[f"{r}->{o}"] = pairs.get(f"{r}->{o}", 0) + 1
            rows.append({"seed": seed, "fov": fov, "shape": list(img.shape), "agreement": round(agreement, 6),
                         "differing_voxels": int(differ.sum()), "reference_to_ours": pairs,
                         "reference_s": round(ref_s, 1), "ours_s": round(ours_s, 1)})
            print(f"seed {seed} {fov:16s} {img.shape}: agreement {100 * agreement:.4f} % "
                  f"({int(differ.sum())} voxels differ: {pairs or 'none'}); reference {ref_s:.0f} s, "
                  f"in-process {ours_s:.0f} s", flush=True)
    done = [r for r in rows if "agreement" in r]
    if done:
        print(f"minimum agreement {100 * min(r['agreement'] for r in done):.4f} % over {len(done)} cases")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if len(done) == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
