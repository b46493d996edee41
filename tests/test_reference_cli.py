"""The unmodified `totalspineseg` command on the bundled models, and our in-process pipeline against it."""
import subprocess

import nibabel as nib
import numpy as np
import pytest

import reference_cli as R
from spineseg.inference.two_step import load_models, segment_volume

# (name, seed, field of view, slice mm, pixel mm); seeds never used in training. The cervical series'
# 3 mm slices and 0.8 mm pixels put source voxel centres half-way between 1 mm voxels, where the way
# back to the source grid depends on the 1 mm grid's origin to its last float32 digit.
CASES = [("lumbar", 5200, "lumbar", 2.0, 1.0), ("cervical", 5201, "cervical", 3.0, 0.8)]


@pytest.fixture(scope="module")
def reference_run(models_dir, tmp_path_factory):
    """Phantoms as NIfTI (int16, as dcm2niix writes them), segmented by one run of the reference command."""
    if not R.CLI.exists():
        pytest.fail(f"{R.CLI} missing: totalspineseg is a pinned requirement")
    tmp = tmp_path_factory.mktemp("reference")
    data_dir = R.prepare_data_dir(models_dir, tmp / "data")
    (tmp / "in").mkdir()
    truths = {}
    for name, seed, fov, slice_mm, pixel_mm in CASES:
        image, truths[name] = R.phantom_nifti(seed, fov, slice_mm, pixel_mm)
        nib.save(image, tmp / "in" / f"{name}.nii.gz")
    # one run over the folder: the command's start-up (about 3 minutes here) is paid once
    proc = subprocess.run(R.command(tmp / "in", tmp / "out", data_dir, workers=1), capture_output=True, text=True,
                          timeout=1500)
    return proc, tmp, truths


def test_reference_command_runs_both_steps_on_the_bundled_models(reference_run):
    proc, tmp, truths = reference_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    labels = R.final_labels(tmp / "out", "lumbar")
    assert labels.shape == truths["lumbar"].shape
    present = set(np.unique(labels).tolist())
    # a labelled lumbar spine (the phantom models' per-class accuracy is measured in bench/, not here)
    assert 2 in present and present & {41, 42, 43, 44, 45} and present & {92, 93, 94, 95, 100}, present


@pytest.mark.parametrize("name", [case[0] for case in CASES])
def test_in_process_pipeline_agrees_with_the_reference(reference_run, models_dir, name):
    proc, tmp, _ = reference_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ref = R.final_labels(tmp / "out", name)
    array, affine_lps = R.stored_input(tmp / "in" / f"{name}.nii.gz")
    ours = segment_volume(array, affine_lps, load_models(models_dir, "cpu")).labels
    agreement = float((ours == ref).mean())
    differ = ours != ref
    pairs = np.unique(np.stack([ref[differ], ours[differ]]), axis=1, return_counts=True)
    assert agreement >= 0.999, f"voxel agreement {agreement:.5f}; (reference, ours): counts {pairs}"
