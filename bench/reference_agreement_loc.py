"""Voxel agreement with `totalspineseg --loc`: a thoracic series labelled with the help of a localizer.

The study of `phantom.write_study` (default LOCALIZER_STUDY, seed 5203: a thoracic T2, 3 mm / 1 mm, and a whole-spine
sagittal localizer, 5 mm / 2 mm, in one Frame of Reference), both saved as int16 NIfTI. The reference:
the unmodified command on the localizer, then on the T2 with `--loc` pointing at the localizer's final
labels. Ours: `segment_volume` on the localizer, then on the T2 with `localizer=` those labels, in
process. Reported: agreement on the localizer and on the T2 (bench/agreement.py's figures), and the time the
partner segmentation adds.

    python -m bench.reference_agreement_loc [--json bench/results/reference_agreement_loc.json]
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
from spineseg.inference.two_step import load_models, localizer_image, segment_volume
from tools import phantom as P
from tools import reference_cli as R

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=5203)
    ap.add_argument("-m", "--models", type=Path, default=ROOT / "models")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    models = load_models(a.models, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = R.prepare_data_dir(a.models, tmp / "data")
        inputs = {}
        for name, fov, thick, pixel in (("loc", "whole", 5.0, 2.0), ("t2", "thoracic", 3.0, 1.0)):
            img, _ = R.phantom_series_nifti(P.make_phantom(a.seed, fov), thick, pixel)
            (tmp / f"in_{name}").mkdir()
            nib.save(img, tmp / f"in_{name}" / f"{name}.nii.gz")
            inputs[name] = tmp / f"in_{name}" / f"{name}.nii.gz"
        t0 = time.perf_counter()
        runs = [R.command(inputs["loc"], tmp / "out_loc", data_dir),
                R.command(inputs["t2"], tmp / "out_t2", data_dir, loc=tmp / "out_loc" / "step2_output" / "loc.nii.gz")]
        for cmd in runs:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print("reference failed:", (proc.stdout + proc.stderr)[-800:])
                return 1
        ref_s = time.perf_counter() - t0
        ref_loc, ref_t2 = R.final_labels(tmp / "out_loc", "loc"), R.final_labels(tmp / "out_t2", "t2")
        t0 = time.perf_counter()
        loc_array, loc_affine = R.stored_input(inputs["loc"])
        ours_loc = segment_volume(loc_array, loc_affine, models).labels
        partner_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours_t2 = segment_volume(*R.stored_input(inputs["t2"]), models,
                                 localizer=localizer_image(ours_loc, loc_affine), localizer_name="localizer").labels
        t2_s = time.perf_counter() - t0
    row = {"seed": a.seed, "localizer": agreement(ours_loc, ref_loc), "t2_with_loc": agreement(ours_t2, ref_t2),
           "reference_s": round(ref_s, 1), "partner_segmentation_s": round(partner_s, 1),
           "t2_with_localizer_s": round(t2_s, 1),
           "labels": sorted(set(int(v) for v in set(ref_t2.ravel().tolist())) - {0})}
    print(json.dumps(row, indent=1))
    if a.json:
        a.json.write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
