"""The DICOM path reaches the same 1 mm grid as the seed pipeline (dcm2niix -> totalspineseg).

No network runs: ``segment_volume`` is stopped at the step-1 network, where it hands over the 1 mm image,
once from our DICOM reader and once from the NIfTI dcm2niix writes of the same series (read as the
``totalspineseg`` command reads it, the path that agrees 100 % with the command). The two 1 mm images
must be identical to the last bit (affine and voxels), and a label map on that grid must come back to
the source grid identically through both source grids (every nearest-neighbour tie decided the same way,
axial 4 mm slices included: the DICOM stack is segmented in dcm2niix's layout).
The full comparison with the command itself is ``bench/seed_pipeline_agreement.py``.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

import phantom as P
import reference_cli as R
from spineseg.inference import two_step
from spineseg.input.dicom_input import load_volume, scan_dicom

from seed_pipeline_agreement import DCM2NIIX, dcm2niix, index_map, one_mm_input, to_their_layout

# (seed, fov, slice mm, pixel mm, in-plane matrix, plane, reverse_slices): the demo study, the clinical
# bench study (whose 1 mm grid was one float32 step off dcm2niix's) and other orientations and orders
GEOMETRIES = {
    "demo": (7, "lumbar", 3.5, 0.6, None, "sagittal", False),
    "clinical": (5601, "lumbar", 3.5, 0.6, 512, "sagittal", False),
    "reversed": (7, "lumbar", 3.0, 0.7, None, "sagittal", True),
    "axial": (7, "lumbar", 4.0, 0.55, None, "axial", False),
    "coronal": (7, "lumbar", 2.5, 0.65, None, "coronal", False),
}


_SERIES: dict = {}


def make_series(name: str, tmp_path_factory):
    """(name, our Volume, dcm2niix's NIfTI) of one geometry, made once per test run."""
    if name not in _SERIES:
        seed, fov, thick, pixel, matrix, plane, reverse = GEOMETRIES[name]
        out = tmp_path_factory.mktemp(name)
        P.write_case(seed, out, fov=fov, plane=plane, slice_thickness=thick, pixel=pixel, matrix=matrix,
                     reverse_slices=reverse)
        nii = dcm2niix(out / "dicom", out / "nii")
        _SERIES[name] = (name, load_volume(scan_dicom(out / "dicom").series[0]), nii)
    return _SERIES[name]


@pytest.fixture(params=list(GEOMETRIES))
def series(request, tmp_path_factory):
    return make_series(request.param, tmp_path_factory)


def test_dcm2niix_is_installed():
    assert DCM2NIIX.is_file(), "dcm2niix (PyPI dcm2niix, in requirements.txt) is missing from the environment"


def test_voxels_reach_both_paths_alike(series):
    """Same intensities and type: dcm2niix stores the int16 pixels unscaled, we read them as float32 with the
    same values (and cast the 1 mm image back to int16 as the command's resample step does)."""
    _, volume, nii = series
    image = nib.load(nii)
    assert image.get_data_dtype() == np.int16
    assert np.isnan(image.header["scl_slope"]) or image.header["scl_slope"] in (0, 1)
    m = index_map(two_step.lps_to_ras(volume.affine), image.affine)
    assert np.array_equal(to_their_layout(volume.array, m, image.shape), np.asanyarray(image.dataobj))


def test_one_mm_grid_is_dcm2niix_s_to_the_bit(series):
    name, volume, nii = series
    _, iso_ours = one_mm_input(volume.array, volume.affine, dicom_stack=True)
    _, iso_ref = one_mm_input(*R.stored_input(nii))
    assert iso_ours.shape == iso_ref.shape
    assert np.array_equal(iso_ours.affine, iso_ref.affine), \
        f"{name}: 1 mm grid\n{iso_ours.affine}\nvs dcm2niix's\n{iso_ref.affine}"
    assert np.array_equal(np.asanyarray(iso_ours.dataobj), np.asanyarray(iso_ref.dataobj))


def labels_back(raw: nib.Nifti1Image, iso: nib.Nifti1Image, iso_affine: np.ndarray | None = None) -> np.ndarray:
    """Random labels on the 1 mm grid (the same for every grid of that shape), brought back to the source grid
    as the final step does."""
    import totalspineseg as tss
    labels = np.random.default_rng(0).integers(1, 250, iso.shape).astype(np.uint8)
    seg = nib.Nifti1Image(labels, iso.affine if iso_affine is None else iso_affine, iso.header)
    return np.asanyarray(tss.transform_seg2image(raw, seg).dataobj)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_labels_come_back_to_the_source_grid_alike(name, tmp_path_factory):
    """The same labels on each path's 1 mm grid come back to the source grid voxel for voxel alike through our
    source grid and through dcm2niix's (ties fall on every 5th row at 0.6 mm and every other slice at 3.5 mm,
    so a float32 difference between the grids would show; axial 4 mm slices lie exactly half-way between
    1 mm planes, where the resampler's rounding noise, which follows the axis order, decides: through the
    stack's own (slice, row, column) layout 4 of its 69 slices came back differently)."""
    _, volume, nii = make_series(name, tmp_path_factory)
    raw_ours, iso_ours = one_mm_input(volume.array, volume.affine, dicom_stack=True)
    raw_ref, iso_ref = one_mm_input(*R.stored_input(nii))
    # segment_volume's last step: back to the source grid, then into the stack's own layout
    ours = two_step.from_dcm2niix_layout(labels_back(raw_ours, iso_ours))
    ref = labels_back(raw_ref, iso_ref)
    m = index_map(two_step.lps_to_ras(volume.affine), raw_ref.affine)
    differ = int((to_their_layout(ours, m, ref.shape) != ref).sum())
    assert differ == 0, f"{name}: {differ} of {ref.size} voxels differ"


def test_the_checks_see_one_float32_step(tmp_path_factory):
    """Not passing by accident: the clinical study segmented in the stack's own layout (its affine rounded
    with the first row as origin, what the DICOM path did before) has its 1 mm grid one float32 step from
    dcm2niix's, and one such step of the 1 mm grid changes about a fifth of the voxels that come back to the
    source grid."""
    _, volume, nii = make_series("clinical", tmp_path_factory)
    raw_ref, iso_ref = one_mm_input(*R.stored_input(nii))
    _, iso_before = one_mm_input(volume.array, volume.affine, dicom_stack=False)
    z_before, z_ref = np.float32(iso_before.affine[2, 3]), np.float32(iso_ref.affine[2, 3])
    assert z_before != z_ref and np.nextafter(z_before, z_ref) == z_ref, (z_before, z_ref)
    shifted = iso_ref.affine.copy()
    shifted[2, 3] = float(np.nextafter(z_ref, np.float32(0)))
    assert (labels_back(raw_ref, iso_ref) != labels_back(raw_ref, iso_ref, shifted)).mean() > 0.1


def test_dcm2niix_layout_keeps_every_voxel_where_it_is():
    """Re-laying a stack out moves no voxel in space and comes back exactly."""
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 1000, (7, 11, 5)).astype(np.int16)        # (slice, row, column)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([3.0, 0.8, 0.7]) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
    affine[:3, 3] = [-37.688, 73.412, -175.822]
    data, moved = two_step.to_dcm2niix_layout(stack, affine)
    assert data.shape == (5, 11, 7)
    assert np.array_equal(two_step.from_dcm2niix_layout(data), stack)
    for index in ((0, 0, 0), (6, 10, 4), (3, 2, 1)):
        s, r, c = index
        assert data[c, 10 - r, s] == stack[index]                        # columns, rows reversed, slices
        assert np.allclose(moved @ [c, 10 - r, s, 1], affine @ [s, r, c, 1], atol=1e-9)
