"""Loading models from any results layout, and the in-process two-step inference."""
import shutil

import numpy as np
import pytest

from helpers import group_dice, spine_dice
from spineseg.outputs.codes_table import STRUCTURES
from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.errors import InputError, ModelError
from spineseg.inference.two_step import (STEP1_DATASET, STEP2_DATASET, LoadedModel, find_model_folder, load_models,
                                segment_volume)


def _results(models_dir):
    return models_dir / "nnUNet" / "results"


def test_bundled_models_are_in_the_official_layout(models_dir):
    for dataset in (STEP1_DATASET, STEP2_DATASET):
        folder = find_model_folder(models_dir, dataset)
        assert folder.parent == _results(models_dir) / dataset
        assert (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()
        assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
    assert (models_dir / "PROVENANCE.json").is_file()


def test_release_subfolder_layout_is_found(tmp_path, models_dir):
    release = _results(tmp_path) / "r20260730"
    release.mkdir(parents=True)
    for dataset in (STEP1_DATASET, STEP2_DATASET):
        shutil.copytree(_results(models_dir) / dataset, release / dataset)
    assert find_model_folder(tmp_path, STEP1_DATASET).parent == release / STEP1_DATASET


def test_best_checkpoint_is_preferred(tmp_path, models_dir):
    src = find_model_folder(models_dir, STEP1_DATASET)
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    shutil.copy(dst / "fold_0" / "checkpoint_final.pth", dst / "fold_0" / "checkpoint_best.pth")
    assert LoadedModel(dst).info.checkpoint.name == "checkpoint_best.pth"
    (dst / "fold_0" / "checkpoint_best.pth").unlink()
    assert LoadedModel(dst).info.checkpoint.name == "checkpoint_final.pth"


@pytest.mark.parametrize("damage,code", [
    ("no_dataset", "MODEL_MISSING"),
    ("no_fold", "MODEL_MALFORMED"),
    ("no_plans", "MODEL_MALFORMED"),
    ("bad_checkpoint", "MODEL_MALFORMED"),
])
def test_missing_or_malformed_models_fail_clearly(tmp_path, models_dir, damage, code):
    shutil.copytree(models_dir / "nnUNet", tmp_path / "nnUNet")
    folder = find_model_folder(tmp_path, STEP2_DATASET)
    if damage == "no_dataset":
        shutil.rmtree(folder.parent)
    elif damage == "no_fold":
        shutil.rmtree(folder / "fold_0")
    elif damage == "no_plans":
        (folder / "plans.json").unlink()
    else:
        (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError) as exc:
        load_models(tmp_path, "cpu")
    assert exc.value.code == code and str(tmp_path) in exc.value.message


def test_models_load_once_per_process(models_dir):
    assert load_models(models_dir, "cpu") is load_models(models_dir, "cpu")


@pytest.mark.slow
def test_held_out_phantom_is_segmented_and_labelled(models_dir, phantom_study):
    vol = load_volume(scan_dicom(phantom_study["dicom_files"][0].parent).series[0])
    models = load_models(models_dir, "cpu")
    stages = []
    result = segment_volume(vol.array, vol.affine, models, on_stage=lambda n, s: stages.append(n),
                            dicom_stack=True)
    assert result.labels.shape == vol.array.shape
    assert stages == ["preprocess", "step1_network", "step1_postprocess", "step2_network", "step2_postprocess"]
    truth = phantom_study["labels"]
    # pipeline behaviour, not model accuracy (bench/phantom_accuracy.py measures that): the output is in
    # the final label scheme, on the right grid (the spine overlaps the truth), with named levels
    present = set(np.unique(result.labels).tolist()) - {0}
    assert present and present <= set(STRUCTURES)
    assert spine_dice(result.labels, truth) > 0.5
    assert set(group_dice(result.labels, truth)) == {"cord", "canal", "vertebrae", "discs"}
    levels = [v for v in np.unique(truth) if 11 <= v <= 50]
    hits = [v for v in levels if (result.labels[truth == v] == v).mean() > 0.5]
    assert hits, (levels, present)


@pytest.mark.slow
@pytest.mark.parametrize("seed,fov", [(5300, "cervical"), (5301, "thoracolumbar")])
def test_levels_are_named_from_each_kind_of_landmark(models_dir, seed, fov):
    """Cervical fields of view are named from C1 / C2-C3 / C7-T1, thoracolumbar ones from T12-L1 /
    L5-S1: both labelling paths must give the truth's level names to almost every structure (a wrong
    landmark mapping shifts every level and fails this)."""
    import phantom as P
    ph = P.make_phantom(seed, fov)
    geom = P.series_geometry(ph, "sagittal", 2.0, 1.0)
    image, truth = P.render(ph, geom.affine, geom.shape, oversample=(2, 1, 1))
    labels = segment_volume(image, geom.affine, load_models(models_dir, "cpu")).labels
    named = [v for v in np.unique(truth) if 11 <= v <= 100 and v not in (1, 2)]
    correct = [v for v in named if (labels[truth == v] == v).mean() > 0.5]
    assert len(correct) >= 0.9 * len(named), sorted(set(named) - set(correct))
    assert min(group_dice(labels, truth).values()) > 0.8


@pytest.mark.slow
def test_a_run_leaves_the_labelling_parameters_unchanged(models_dir, phantom_study):
    """totalspineseg's iterative_label removes discarded landmarks from the list it is given; a
    lumbar series discards C2-C3, and must not take it away from the next (cervical) series."""
    from spineseg.inference.two_step import STEP1_LABELLING, STEP2_LABELLING
    vol = load_volume(scan_dicom(phantom_study["dicom_files"][0].parent).series[0])
    segment_volume(vol.array, vol.affine, load_models(models_dir, "cpu"))
    assert STEP1_LABELLING["selected_disc_landmarks"] == [2, 5, 3, 4]
    assert STEP2_LABELLING["selected_disc_landmarks"] == [2, 5, 3, 4]


def test_blank_image_has_no_spine(models_dir):
    models = load_models(models_dir, "cpu")
    rng = np.random.default_rng(0)
    blank = rng.normal(100, 5, (40, 64, 64)).astype(np.float32)
    with pytest.raises(InputError) as exc:
        segment_volume(blank, np.diag([2.0, 1.0, 1.0, 1.0]), models)
    assert exc.value.code in ("NO_SPINE_FOUND", "NO_DISCS_FOUND", "NO_LEVEL_LANDMARK", "LABELLING_FAILED")


def test_integer_storage_type_follows_the_values():
    """The 1 mm image is cast to the type a NIfTI of the series would hold, as the reference does."""
    from spineseg.inference.two_step import integer_storage_dtype
    assert integer_storage_dtype(np.array([[1, 2]], np.int16)) is np.int16
    assert integer_storage_dtype(np.array([0.0, 4095.0], np.float32)) is np.int16
    assert integer_storage_dtype(np.array([0.0, 60000.0], np.float32)) is np.uint16
    assert integer_storage_dtype(np.array([0.5, 3.0], np.float32)) is None       # rescaled: stays float
    assert integer_storage_dtype(np.array([-1.0, 70000.0], np.float32)) is None


def test_stored_affine_is_what_a_saved_nifti_reads_back():
    """Each reference step re-reads the previous step's NIfTI; our chain rounds its affines the same way."""
    import nibabel as nib
    from spineseg.inference.two_step import as_stored_affine
    rng = np.random.default_rng(7)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([3.0, 0.8, 0.8]) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
    affine[:3, 3] = [-37.688030243, 73.411972046, -175.822250366]
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), affine)
    image.set_sform(affine)
    read_back = nib.Nifti1Image.from_bytes(image.to_bytes()).affine
    assert not np.array_equal(read_back, affine)          # the file really does round
    assert np.array_equal(as_stored_affine(affine), read_back)


ISOLATION_PROBE = r'''
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tools"))    # phantom.py, a dev script (spineseg is installed)
import multiprocessing.util
import phantom as P
from spineseg.inference.two_step import load_models, segment_volume

models = load_models(sys.argv[2], "cpu")
ph = P.make_phantom(5200, "lumbar")
geom = P.series_geometry(ph, "sagittal", 2.0, 1.0)
image, _ = P.render(ph, geom.affine, geom.shape, oversample=(2, 1, 1))
seen = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
SPAWNS = {"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "subprocess.Popen"}
CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.link", "os.symlink",
           "shutil.copyfile", "shutil.rmtree", "tempfile.mkstemp", "tempfile.mkdtemp"}

def hook(event, args):
    if event in SPAWNS or event in CHANGES:
        seen.append([event, repr(args)[:200]])
    elif event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and set(mode) & set("wax+")) or (flags or 0) & WRITE_FLAGS:
            seen.append([event, repr(args)[:200]])

_spawnv = multiprocessing.util.spawnv_passfds        # multiprocessing's spawn start method: no audit event
def spawnv_passfds(*args, **kwargs):
    seen.append(["multiprocessing spawn", repr(args)[:200]])
    return _spawnv(*args, **kwargs)
multiprocessing.util.spawnv_passfds = spawnv_passfds

sys.addaudithook(hook)
labels = segment_volume(image, geom.affine, models).labels
print(json.dumps({"events": seen, "labelled": int((labels > 0).sum())}))
'''


@pytest.mark.slow
def test_inference_starts_no_process_and_writes_no_file(models_dir, tmp_path):
    """The whole two-step pipeline runs in this process and in memory: no worker processes, no
    intermediate files, nothing written into site-packages (or anywhere else)."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    probe = tmp_path / "probe.py"
    probe.write_text(ISOLATION_PROBE)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(probe), str(root), str(models_dir)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["labelled"] > 0          # the probe really ran the pipeline
    assert report["events"] == []
