"""Peak memory of the app with and without 1 GB of series it does not process.

Builds a study holding the chosen sagittal T2 phantom series plus ~1 GB of other series (axial
512x512 stacks, which the selector ranks below the sagittal T2), runs the app on it and on the chosen
series alone, and prints the peak resident memory of each run (the app decodes pixels only for the
series it processes, so the two should differ by little more than the headers).

    python -m bench.memory_unselected [--gigabytes 1.0]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tools import phantom as P

ROOT = Path(__file__).resolve().parent.parent


WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
           "stderr=subprocess.DEVNULL).returncode; print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def peak_rss_mb(cmd: list[str]) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, exit code) of ``cmd``, measured by a fresh wrapper process."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1024, time.perf_counter() - t0, int(out[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gigabytes", type=float, default=1.0)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case = P.write_case(5500, tmp / "t2", fov="lumbar", slice_thickness=3.5, pixel=0.8)
        study_uid = str(__import__("pydicom").dcmread(case["dicom_files"][0]).StudyInstanceUID)
        study = tmp / "study"
        shutil.copytree(tmp / "t2" / "dicom", study / "t2")
        rng = np.random.default_rng(0)
        per_slice = 512 * 512 * 2
        n_slices = int(a.gigabytes * 1e9 / per_slice)
        ph = case["phantom"]
        written, series = 0, 0
        while written < n_slices:
            series += 1
            n = min(200, n_slices - written)
            geom = P.series_geometry(ph, "axial", 1.0, 0.5)
            geom = P.SeriesGeometry(geom.affine, (n, 512, 512), geom.row_dir, geom.col_dir, geom.spacing)
            image = rng.integers(0, 2000, size=geom.shape).astype(np.float32)
            P.write_dicom_series(image, geom, study / f"ax{series}", 5500, series_number=100 + series,
                                 series_description=f"T2 AX {series}", study_uid=study_uid)
            written += n
        size = sum(f.stat().st_size for f in study.rglob("*.dcm")) / 1e9
        print(f"study: {size:.2f} GB in {series + 1} series ({written} unselected 512x512 slices)")
        app = [sys.executable, str(ROOT / "app"), "--engine", "plain"]
        alone, t_alone, rc1 = peak_rss_mb(app + ["-i", str(tmp / "t2" / "dicom"), "-o", str(tmp / "o1")])
        full, t_full, rc2 = peak_rss_mb(app + ["-i", str(study), "-o", str(tmp / "o2")])
        print(f"selected series alone: peak {alone:.0f} MB, {t_alone:.1f} s (exit {rc1})")
        print(f"with {size:.2f} GB of other series: peak {full:.0f} MB, {t_full:.1f} s (exit {rc2})")
        print(f"difference: {full - alone:+.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
