"""Agreement with the seed pipeline from the same DICOM study: dcm2niix -> `totalspineseg` versus our DICOM path.

(a) seed pipeline: dcm2niix (DICOM -> NIfTI) -> the unmodified `totalspineseg` command (both steps,
    `--no-stalling`, CPU), its final labels (step2_output);
(b) ours: spineseg's DICOM reader (`load_volume`) -> `segment_volume` (the exact `torch` backend), and,
    with --app, the app itself (`python app`, its default backend or the SPINESEG_BACKEND values given)
    and its label NIfTI.

Same weights (the bundled models, or -m). dcm2niix stores the series in its own voxel order (columns, rows
reversed, slices), so both label maps are compared voxel for voxel through the integer index map that the
two affines give (checked to be a pure permutation and reversal of axes). For each study: bench/agreement.py's
figures (agreement over all voxels and over foreground, the union of both label maps' nonzero voxels, the labels
that disagree, each label's Dice), timings, and the geometry evidence (dcm2niix's affine and ours, the 1 mm grids
the networks see).

    python -m bench.seed_pipeline_agreement [--studies demo clinical] [--app [BACKEND ...]] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bench.agreement import agreement
from spineseg.inference import two_step
from spineseg.input.dicom_input import load_volume, scan_dicom
from tools import phantom as P
from tools import reference_cli as R

ROOT = Path(__file__).resolve().parent.parent

DCM2NIIX = Path(sys.executable).parent / "dcm2niix"
STUDIES = {
    # name: (seed, fov, slice thickness mm, pixel mm, in-plane matrix or None, plane): `make demo`'s study,
    # bench_e2e.STUDIES["clinical"], and axial 4 mm slices, which lie exactly half-way between 1 mm planes
    "demo": (7, "lumbar", 3.5, 0.6, None, "sagittal"),
    "clinical": (5601, "lumbar", 3.5, 0.6, 512, "sagittal"),
    "axial": (7, "lumbar", 4.0, 0.55, None, "axial"),
}


def dcm2niix(dicom: Path, out_dir: Path, name: str = "case") -> Path:
    """The series as dcm2niix converts it (gzipped NIfTI ``out_dir/name.nii.gz``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(DCM2NIIX), "-z", "y", "-f", name, "-o", str(out_dir), str(dicom)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"dcm2niix failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-500:]}")
    return out_dir / f"{name}.nii.gz"


def index_map(ours_affine: np.ndarray, theirs_affine: np.ndarray) -> np.ndarray:
    """The integer 4x4 map from our voxel indices to theirs; refuses grids that are not the same voxels
    (anything but swapped and reversed axes)."""
    m = np.linalg.inv(theirs_affine) @ ours_affine
    exact = np.round(m)
    if np.abs(m - exact).max() > 1e-3 or sorted(np.abs(exact[:3, :3]).sum(axis=0).tolist()) != [1, 1, 1]:
        raise ValueError(f"the two grids are not the same voxels (index map\n{m})")
    return exact.astype(int)


def to_their_layout(data: np.ndarray, m: np.ndarray, shape) -> np.ndarray:
    """``data`` (our voxel order) re-indexed by :func:`index_map` ``m`` into an array of ``shape``."""
    idx = np.indices(data.shape).reshape(3, -1)
    out = np.zeros(shape, data.dtype)
    out[tuple(m[:3, :3] @ idx + m[:3, 3:4])] = data.reshape(-1)
    return out


class _Stop(Exception):
    pass


def one_mm_input(array: np.ndarray, affine_lps: np.ndarray, dicom_stack: bool = False
                 ) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """(source-grid image, 1 mm image) exactly as ``segment_volume`` builds them, stopped before the step-1
    network runs (no network, no model needed). ``dicom_stack`` as segment_volume's (the source-grid image is
    then in dcm2niix's layout)."""
    seen: dict = {}
    canonical = nib.as_closest_canonical

    def spy(image, *a, **kw):
        seen.setdefault("raw", image)
        return canonical(image, *a, **kw)

    class Step1:
        def predict(self, channels):
            seen["iso"] = channels[0]
            raise _Stop

    models = type("Models", (), {"step1": Step1(), "step2": None})()
    nib.as_closest_canonical = spy
    try:
        two_step.segment_volume(array, affine_lps, models, dicom_stack=dicom_stack)
    except _Stop:
        pass
    finally:
        nib.as_closest_canonical = canonical
    return seen["raw"], seen["iso"]


def geometry(volume, nii: Path) -> dict:
    """dcm2niix's stored affine and ours, and whether the 1 mm images the networks get are identical."""
    image = nib.load(nii)
    _, iso_ours = one_mm_input(volume.array, volume.affine, dicom_stack=True)
    _, iso_ref = one_mm_input(*R.stored_input(nii))
    m = index_map(two_step.lps_to_ras(volume.affine), image.affine)
    return {"dcm2niix_affine": image.affine.tolist(), "dcm2niix_shape": list(image.shape),
            "dcm2niix_dtype": str(image.get_data_dtype()),
            "dcm2niix_scl_slope_inter": [float(image.header["scl_slope"]), float(image.header["scl_inter"])],
            "our_affine_ras": two_step.lps_to_ras(volume.affine).tolist(), "our_shape": list(volume.array.shape),
            "ours_to_dcm2niix_index": m[:3].tolist(),
            "voxels_identical": bool(np.array_equal(to_their_layout(volume.array, m, image.shape),
                                                    np.asanyarray(image.dataobj))),
            "one_mm_grid_ours": iso_ours.affine.tolist(), "one_mm_grid_dcm2niix": iso_ref.affine.tolist(),
            "one_mm_grid_identical": bool(iso_ours.shape == iso_ref.shape
                                          and np.array_equal(iso_ours.affine, iso_ref.affine)),
            "one_mm_image_identical": bool(iso_ours.shape == iso_ref.shape and np.array_equal(
                np.asanyarray(iso_ours.dataobj), np.asanyarray(iso_ref.dataobj)))}


def run_app(dicom: Path, out: Path, models: Path, nii: Path, backend: str) -> dict:
    """The app end to end on ``dicom``, its label map in dcm2niix's voxel order; ``backend`` sets
    SPINESEG_BACKEND ("default": the app's own default)."""
    env = dict(os.environ)
    if backend != "default":
        env["SPINESEG_BACKEND"] = backend
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "app"), "-i", str(dicom), "-o", str(out), "-m", str(models)],
                          capture_output=True, text=True, timeout=1800, env=env)
    wall = round(time.perf_counter() - t0, 1)
    labels = sorted(out.glob("series-*_labels.nii.gz"))
    if proc.returncode != 0 or len(labels) != 1:
        return {"error": f"app exit {proc.returncode}, {len(labels)} label maps", "wall_s": wall}
    report = json.loads((out / "report.json").read_text())
    app_img, ref_img = nib.load(labels[0]), nib.load(nii)
    ours = np.asanyarray(app_img.dataobj).round().astype(np.uint8)
    m = index_map(app_img.affine, ref_img.affine)
    return {"setting": backend, "backend": report.get("models", {}).get("backend", "torch"), "wall_s": wall,
            "_labels": to_their_layout(ours, m, ref_img.shape)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", nargs="*", choices=list(STUDIES), default=list(STUDIES))
    ap.add_argument("-m", "--models", type=Path, default=ROOT / "models")
    ap.add_argument("--app", nargs="*", metavar="BACKEND", default=None,
                    help="also run the app end to end, once per SPINESEG_BACKEND given ('default': its own default; "
                         "none given: default)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "seed_pipeline_agreement.json")
    a = ap.parse_args(argv)
    models = two_step.load_models(a.models, "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = R.prepare_data_dir(a.models, tmp / "data")
        for name in a.studies:
            seed, fov, thick, pixel, matrix, plane = STUDIES[name]
            P.write_case(seed, tmp / name, fov=fov, plane=plane, slice_thickness=thick, pixel=pixel, matrix=matrix)
            dicom = tmp / name / "dicom"
            t0 = time.perf_counter()
            nii = dcm2niix(dicom, tmp / name / "nii")
            dcm2niix_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            proc = subprocess.run(R.command(nii, tmp / name / "tss", data_dir), capture_output=True, text=True)
            ref_s = time.perf_counter() - t0
            row = {"study": name, "seed": seed, "fov": fov, "plane": plane, "slice_mm": thick, "pixel_mm": pixel,
                   "matrix": matrix}
            if proc.returncode != 0:
                row["error"] = (proc.stdout + proc.stderr)[-500:]
                rows.append(row)
                print(f"{name}: reference failed: {row['error']}", flush=True)
                continue
            ref = R.final_labels(tmp / name / "tss")
            t0 = time.perf_counter()
            volume = load_volume(scan_dicom(dicom).series[0])
            ours = two_step.segment_volume(volume.array, volume.affine, models, dicom_stack=True).labels
            ours_s = time.perf_counter() - t0
            m = index_map(two_step.lps_to_ras(volume.affine), nib.load(nii).affine)
            row.update(agreement(to_their_layout(ours, m, ref.shape), ref))
            row["geometry"] = geometry(volume, nii)
            row["timings_s"] = {"dcm2niix": round(dcm2niix_s, 2), "totalspineseg_command": round(ref_s, 1),
                                "ours_read_and_segment": round(ours_s, 1)}
            print(f"{name} {volume.array.shape}: DICOM path {100 * row['agreement_all']:.4f} % of all voxels, "
                  f"{100 * row['agreement_foreground']:.4f} % of {row['foreground_voxels']} foreground voxels "
                  f"({row['differing_voxels']} differ: {row['reference_to_ours'] or 'none'}); 1 mm grid identical: "
                  f"{row['geometry']['one_mm_grid_identical']}; reference {ref_s:.0f} s, ours {ours_s:.0f} s",
                  flush=True)
            for backend in ([] if a.app is None else a.app or ["default"]):
                app = run_app(dicom, tmp / name / f"app_{backend}", a.models, nii, backend)
                if "_labels" in app:
                    app.update(agreement(app.pop("_labels"), ref))
                    print(f"{name}: app (SPINESEG_BACKEND {backend}: {app['backend']}) "
                          f"{100 * app['agreement_foreground']:.4f} % of foreground voxels "
                          f"({app['differing_voxels']} differ), {app['wall_s']} s", flush=True)
                row.setdefault("app", []).append(app)
            rows.append(row)
    done = [r for r in rows if "agreement_all" in r]
    if done:
        print(f"minimum foreground agreement {100 * min(r['agreement_foreground'] for r in done):.4f} % "
              f"over {len(done)} studies")
    record = {"what": "final labels of the DICOM path (load_volume -> segment_volume, torch backend) against "
                      "dcm2niix -> totalspineseg (--no-stalling, CPU), same DICOM study and weights",
              "command": " ".join(["python -m bench.seed_pipeline_agreement",
                                   *([] if a.app is None else ["--app", *a.app])]),
              "dcm2niix": subprocess.run([str(DCM2NIIX), "-v"], capture_output=True, text=True).stdout.split("\n")[0],
              "studies": rows}
    a.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if len(done) == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
