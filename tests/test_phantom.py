"""The phantom generator: reproducible, in the final TotalSpineSeg label scheme, exact DICOM geometry."""
import nibabel as nib
import numpy as np
import pydicom
import pytest

import phantom as P
from spineseg.input.dicom_input import load_volume, scan_dicom

from spineseg.inference.label_scheme import emittable_labels


def test_label_tables_match_the_final_totalspineseg_scheme():
    assert set(P.ALL_LABELS) == set(emittable_labels())
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
    assert present - {0} <= emittable_labels()
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


@pytest.mark.parametrize("variant,absent,present", [
    ("normal", {46, 96}, {32, 45, 82, 95}),
    ("6-lumbar", set(), {45, 46, 95, 96}),
    ("lumbarised-S1", set(), {46, 96}),
    ("4-lumbar", {45, 46, 95, 96}, {44, 94}),
    ("sacralised-L5", {45, 46, 95, 96}, {44, 94}),
    ("11-thoracic", {32, 82, 46, 96}, {31, 81, 45, 95}),
])
def test_variant_phantoms_hold_the_levels_of_their_anatomy(variant, absent, present):
    ph = P.make_phantom(5203, "whole", variant)
    n_thoracic, n_lumbar, _ = P.VARIANTS[variant]
    assert [lv.name for lv in ph.levels] == P.spine_names(n_thoracic, n_lumbar)
    # the lumbosacral and thoracolumbar junction discs keep their landmark labels whatever the count
    assert ph.levels[-1].disc_label == 100 and ph.level(f"T{n_thoracic}").disc_label == 91
    affine, shape = P.canonical_grid(ph, spacing=2.0)
    _, labels = P.render(ph, affine, shape)
    values = set(np.unique(labels).tolist())
    assert present <= values and not (absent & values)
    # each vertebra sits above its own disc, superior to inferior
    z = {lv.label: (lv.z_top + lv.z_bottom) / 2 for lv in ph.levels}
    assert list(z.values()) == sorted(z.values(), reverse=True)


def test_sacrum_length_follows_the_transitional_vertebra():
    length = {v: (lambda ph: ph.sacrum_top - ph.sacrum_bottom)(P.make_phantom(5203, "whole", v))
              for v in ("normal", "lumbarised-S1", "sacralised-L5")}
    assert length["lumbarised-S1"] < length["normal"] < length["sacralised-L5"]


def test_normal_variant_is_the_unchanged_default():
    a, b = P.make_phantom(5203, "whole"), P.make_phantom(5203, "whole", "normal")
    assert a == b and a.variant == "normal"
