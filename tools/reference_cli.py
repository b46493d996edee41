"""The unmodified `totalspineseg` command as the equivalence test and the benchmarks run it.

One place for the command line (CPU, `--no-stalling`, only the final labels kept), for the data
folder it needs, and for a phantom saved as the NIfTI a user would feed it (int16, as dcm2niix
writes MR), so the test and the benches compare against the same reference run.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from tools import phantom as P

CLI = Path(sys.executable).parent / "totalspineseg"


def prepare_data_dir(models_dir: Path, data_dir: Path) -> Path:
    """A copy of the models' ``nnUNet`` folder as the command's ``--data-dir``.

    The command writes into its data folder (it registers a trainer, may unpack weights), so it
    never gets the repository's ``models/`` itself.
    """
    shutil.copytree(Path(models_dir) / "nnUNet", Path(data_dir) / "nnUNet")
    return Path(data_dir)


def phantom_nifti(seed: int, fov: str, slice_mm: float, pixel_mm: float) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A sagittal phantom series as an int16 NIfTI (RAS affine) and its true labels on the same grid.

    Rendered as :func:`phantom.write_case` renders its DICOM series (:func:`phantom.render_case`).
    """
    return phantom_series_nifti(P.make_phantom(seed, fov), slice_mm, pixel_mm)


def phantom_series_nifti(ph, slice_mm: float, pixel_mm: float) -> tuple[nib.Nifti1Image, np.ndarray]:
    """:func:`phantom_nifti` of a given phantom (e.g. one field of view of a multi-series study)."""
    case = P.render_series(ph, "sagittal", slice_mm, pixel_mm)
    stored = np.clip(np.round(case["image"]), 0, 32767).astype(np.int16)
    return nib.Nifti1Image(stored, P.lps_to_ras(case["geometry"].affine)), case["labels"]


def command(source: Path, output_dir: Path, data_dir: Path, workers: int | None = None,
            loc: Path | None = None) -> list[str]:
    """The command line: both steps on the CPU, keeping only ``step2_output`` (the final labels).

    ``source`` is one ``.nii.gz`` or a folder of them; ``workers`` caps its worker processes
    (both its own and nnU-Net's), None leaves its default (one per core).
    """
    cmd = [str(CLI), str(source), str(output_dir), "--data-dir", str(data_dir), "--no-stalling", "--device", "cpu",
           "--keep-only", "step2_output", "--quiet"]
    if workers is not None:
        cmd += ["--max-workers", str(workers), "--max-workers-nnunet", str(workers)]
    if loc is not None:                      # a labelled localizer (its step2_output) names the levels
        cmd += ["--loc", str(loc)]
    return cmd


def stored_input(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(voxels, LPS affine) of a NIfTI exactly as the command reads it (float32 affine from the file),
    ready for :func:`spineseg.inference.segment_volume`."""
    image = nib.load(path)
    return np.asanyarray(image.dataobj), P.lps_to_ras(image.affine)      # the L/P flip is its own inverse


def final_labels(output_dir: Path, name: str = "case") -> np.ndarray:
    """The command's final label map for the input called ``name``, as uint8."""
    labels = nib.load(Path(output_dir) / "step2_output" / f"{name}.nii.gz")
    return np.asanyarray(labels.dataobj).round().astype(np.uint8)
