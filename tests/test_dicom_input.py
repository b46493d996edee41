"""Header scan, series grouping and checked volume assembly."""
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from spineseg.input.dicom_input import load_volume, plane_of, scan_dicom
from spineseg.errors import InputError


def _copy_series(case, dst, skip=()):
    dst.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted(case["dicom_files"])):
        if i not in skip:
            shutil.copy(f, dst / f.name)
    return dst


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError) as exc:
        scan_dicom(tmp_path)
    assert exc.value.code == "EMPTY_INPUT" and str(tmp_path) in exc.value.message


def test_missing_folder(tmp_path):
    with pytest.raises(InputError) as exc:
        scan_dicom(tmp_path / "nope")
    assert exc.value.code == "INPUT_NOT_FOUND"


def test_non_dicom_files_are_skipped_and_reported(tmp_path, phantom_study):
    (tmp_path / "notes.txt").write_text("not dicom")
    with pytest.raises(InputError) as exc:
        scan_dicom(tmp_path)
    assert exc.value.code == "NO_DICOM"
    _copy_series(phantom_study, tmp_path / "sub" / "dir")
    scan = scan_dicom(tmp_path)
    assert len(scan.series) == 1 and len(scan.skipped) == 1
    assert scan.skipped[0][0].endswith("notes.txt")


def test_shuffled_files_give_the_same_volume(tmp_path, make_case, phantom_study):
    ordered = load_volume(scan_dicom(phantom_study["dicom_files"][0].parent).series[0])
    shuffled_case = make_case(5001, fov="lumbar", slice_thickness=2.0, pixel=1.0, shuffle=True)
    shuffled = load_volume(scan_dicom(shuffled_case["dicom_files"][0].parent).series[0])
    assert np.array_equal(ordered.array, shuffled.array)
    assert np.allclose(ordered.affine, shuffled.affine)


def test_missing_slice_is_detected(tmp_path, phantom_study):
    src = _copy_series(phantom_study, tmp_path / "s", skip={7})
    with pytest.raises(InputError) as exc:
        load_volume(scan_dicom(src).series[0])
    assert exc.value.code == "MISSING_SLICES" and "1 slice" in exc.value.message


def test_truncated_pixel_data_names_the_file(tmp_path, phantom_study):
    src = _copy_series(phantom_study, tmp_path / "s")
    victim = sorted(src.glob("*.dcm"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 500])
    with pytest.raises(InputError) as exc:
        load_volume(scan_dicom(src).series[0])
    assert exc.value.code == "CORRUPT_PIXEL_DATA" and victim.name in exc.value.message


def test_single_slice_series(tmp_path, phantom_study):
    src = tmp_path / "one"
    src.mkdir()
    shutil.copy(phantom_study["dicom_files"][0], src)
    with pytest.raises(InputError) as exc:
        load_volume(scan_dicom(src).series[0])
    assert exc.value.code == "SINGLE_SLICE"


def test_rescale_slope_and_intercept_are_applied(tmp_path, phantom_study):
    src = _copy_series(phantom_study, tmp_path / "s")
    raw = load_volume(scan_dicom(src).series[0]).array
    for f in src.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.RescaleSlope, ds.RescaleIntercept = 2, -10
        ds.save_as(f)
    scaled = load_volume(scan_dicom(src).series[0]).array
    assert np.allclose(scaled, raw * 2 - 10)


def test_real_series_matches_its_nifti_in_world_space(real_t2_dicom):
    from conftest import REAL_T2_NIFTI
    vol = load_volume(scan_dicom(real_t2_dicom).series[0])
    assert plane_of(vol.datasets[0]) == "sagittal"
    assert vol.array.shape == (52, 55, 60)
    nii = nib.load(REAL_T2_NIFTI)
    data = np.asanyarray(nii.dataobj)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    # map every DICOM voxel into the NIfTI's index space and compare values there
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in vol.array.shape], indexing="ij"), -1).reshape(-1, 3)
    world = ras @ np.c_[idx, np.ones(len(idx))].T
    nidx = np.round(np.linalg.inv(nii.affine) @ world)[:3].astype(int).T
    assert np.allclose((np.linalg.inv(nii.affine) @ world)[:3].T, nidx, atol=1e-3)
    assert np.array_equal(vol.array.reshape(-1), data[tuple(nidx.T)].astype(np.float32))


def test_missing_pixel_data_is_named(tmp_path, phantom_study):
    src = _copy_series(phantom_study, tmp_path / "s")
    victim = sorted(src.glob("*.dcm"))[2]
    ds = pydicom.dcmread(victim)
    del ds.PixelData
    ds.save_as(victim)
    with pytest.raises(InputError) as exc:
        load_volume(scan_dicom(src).series[0])
    assert exc.value.code == "NO_PIXEL_DATA" and victim.name in exc.value.message


def test_bad_orientation_is_a_clear_error(tmp_path, phantom_study):
    src = _copy_series(phantom_study, tmp_path / "s")
    victim = sorted(src.glob("*.dcm"))[0]
    ds = pydicom.dcmread(victim)
    ds.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]
    ds.save_as(victim)
    with pytest.raises(InputError) as exc:
        load_volume(scan_dicom(src).series[0])
    assert exc.value.code == "BAD_GEOMETRY" and victim.name in exc.value.message
