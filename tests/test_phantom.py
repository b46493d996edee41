"""The phantom generator: reproducible, in the final TotalSpineSeg label scheme, exact DICOM geometry."""
import nibabel as nib
import numpy as np
import pydicom
import pytest

import phantom as P
from spineseg.dicom_input import load_volume, scan_dicom

FINAL_SCHEME = {1, 2, 50} | set(range(11, 18)) | set(range(21, 33)) | set(range(41, 46)) | \
    set(range(63, 68)) | set(range(71, 83)) | set(range(91, 96)) | {100}


def test_label_tables_match_the_final_totalspineseg_scheme():
    assert set(P.ALL_LABELS) == FINAL_SCHEME
    assert P.DISC_BELOW["C2"] == 63 and P.DISC_BELOW["C7"] == 71 and P.DISC_BELOW["T12"] == 91
    assert P.DISC_BELOW["L5"] == 100 and P.DISC_BELOW["T11"] == 82 and P.DISC_BELOW["L4"] == 95


def test_same_seed_same_case_other_seed_other_case():
    a, b, c = P.make_phantom(11, "lumbar"), P.make_phantom(11, "lumbar"), P.make_phantom(12, "lumbar")
    grid = P.canonical_grid(a, spacing=2.0)
    img_a, lab_a = P.render(a, *grid)
    img_b, lab_b = P.render(b, *grid)
    img_c, lab_c = P.render(c, *grid)
    assert np.array_equal(img_a, img_b) and np.array_equal(lab_a, lab_b)
    assert not np.array_equal(lab_a, lab_c)


@pytest.mark.parametrize("fov,expected,absent", [
    ("cervical", {11, 12, 63, 71}, {50, 45}),
    ("lumbar", {41, 45, 50, 100, 91}, {11, 12}),
])
def test_field_of_view_covers_the_named_region(fov, expected, absent):
    ph = P.make_phantom(21, fov)
    _, lab = P.render(ph, *P.canonical_grid(ph, spacing=2.0))
    present = set(np.unique(lab).tolist())
    assert expected <= present and not (absent & present)
    assert present - {0} <= FINAL_SCHEME
    assert {1, 2} <= present


def test_dicom_series_geometry_and_ground_truth_share_world_space(tmp_path):
    case = P.write_case(3, tmp_path, fov="lumbar", slice_thickness=3.5, pixel=0.6)
    geom = case["geometry"]
    ds = pydicom.dcmread(case["dicom_files"][0])
    assert ds.Modality == "MR" and ds.PatientPosition == "HFS"
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.6, 0.6])
    assert float(ds.SliceThickness) == pytest.approx(3.5)
    assert [float(v) for v in ds.ImageOrientationPatient] == pytest.approx([0, 1, 0, 0, 0, -1])
    vol = load_volume(scan_dicom(tmp_path / "dicom").series[0])
    assert vol.array.shape == geom.shape
    assert np.allclose(vol.affine, geom.affine, atol=1e-3)
    gt = nib.load(case["ground_truth"])
    assert gt.shape == geom.shape
    assert np.allclose(gt.affine, P.lps_to_ras(vol.affine), atol=1e-3)
    # the written pixels are the rendered image, slice by slice
    assert np.allclose(vol.array, np.clip(np.round(case["image"]), 0, 32767), atol=0.5)


def test_command_line_writes_a_series(tmp_path):
    assert P.main(["--seed", "4", "--fov", "cervical", "--slice-thickness", "3", "--out", str(tmp_path)]) == 0
    assert len(list((tmp_path / "dicom").glob("*.dcm"))) > 10
    assert (tmp_path / "ground_truth.nii.gz").exists()
