"""The unmodified `totalspineseg` command on the bundled models, and our in-process pipeline against it."""
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import phantom as P
from spineseg.inference import load_models, segment_volume

CLI = Path(sys.executable).parent / "totalspineseg"


@pytest.fixture(scope="module")
def reference_run(models_dir, tmp_path_factory):
    """One phantom as NIfTI (int16, as dcm2niix writes it), segmented by the reference command."""
    if not CLI.exists():
        pytest.fail(f"{CLI} missing: totalspineseg is a pinned requirement")
    tmp = tmp_path_factory.mktemp("reference")
    data_dir = tmp / "data"
    shutil.copytree(models_dir / "nnUNet", data_dir / "nnUNet")     # the command writes into its data dir
    ph = P.make_phantom(5200, "lumbar")
    geom = P.series_geometry(ph, "sagittal", 2.0, 1.0)
    image, truth = P.render(ph, geom.affine, geom.shape, oversample=(2, 1, 1))
    img = nib.Nifti1Image(np.clip(np.round(image), 0, 32767).astype(np.int16), P.lps_to_ras(geom.affine))
    (tmp / "in").mkdir()
    nib.save(img, tmp / "in" / "case.nii.gz")
    proc = subprocess.run([str(CLI), str(tmp / "in" / "case.nii.gz"), str(tmp / "out"), "--data-dir", str(data_dir),
                           "--no-stalling", "--device", "cpu", "--max-workers", "1", "--max-workers-nnunet", "1",
                           "--keep-only", "step2_output", "--quiet"],
                          capture_output=True, text=True, timeout=900)
    return proc, tmp, truth


def test_reference_command_runs_both_steps_on_the_bundled_models(reference_run):
    proc, tmp, truth = reference_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = nib.load(tmp / "out" / "step2_output" / "case.nii.gz")
    labels = np.asanyarray(out.dataobj).round().astype(int)
    assert labels.shape == truth.shape
    present = set(np.unique(labels).tolist())
    # a labelled lumbar spine (the phantom models' per-class accuracy is measured in bench/, not here)
    assert 2 in present and present & {41, 42, 43, 44, 45} and present & {92, 93, 94, 95, 100}, present


def test_in_process_pipeline_agrees_with_the_reference(reference_run, models_dir):
    proc, tmp, _ = reference_run
    assert proc.returncode == 0
    img = nib.load(tmp / "in" / "case.nii.gz")
    ref = np.asanyarray(nib.load(tmp / "out" / "step2_output" / "case.nii.gz").dataobj).round().astype(np.uint8)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    ours = segment_volume(np.asanyarray(img.dataobj), lps, load_models(models_dir, "cpu")).labels
    agreement = float((ours == ref).mean())
    differ = ours != ref
    pairs = np.unique(np.stack([ref[differ], ours[differ]]), axis=1, return_counts=True)
    assert agreement >= 0.999, f"voxel agreement {agreement:.5f}; (reference, ours): counts {pairs}"
