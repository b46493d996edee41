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
from helpers import drawn_values, fake_model_description, image_point, reader_label
from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.outputs.codes_table import STRUCTURES
from spineseg.outputs.measurements import STEP_MM, measure_levels
from spineseg.outputs.review_image import PHANTOM_BANNER, render_review
from spineseg.outputs.sc_writer import build_review_sc
from spineseg.outputs.seg_writer import SegSettings, build_seg, write_seg
from spineseg.outputs.sr_writer import build_measurement_sr

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
def test_sr_is_valid_reads_back_and_draws_every_value_where_it_was_measured(demo_like, segmentation_type):
    import highdicom as hd

    from spineseg.outputs.sr_writer import OHIF_ARROW, OHIF_LENGTH

    out, vol, labels = demo_like
    seg, _ = build_seg(vol.datasets, labels, fake_model_description(), SegSettings(segmentation_type=segmentation_type))
    seg_path = write_seg(seg, out / f"seg_{segmentation_type}.dcm")
    levels = measure_levels(labels, vol.affine)
    sr = build_measurement_sr(seg, vol.datasets, levels, True, vol)
    sr_path = out / f"sr_{segmentation_type}.dcm"
    sr.save_as(sr_path, enforce_file_format=True)
    # no Referenced Segment any more, so not even dciodvfy's Label Map false positive is left
    assert run_dciodvfy(sr_path)[0] == []
    assert sr.SeriesDescription.startswith("PHANTOM MODEL NOT FOR CLINICAL USE")
    back = hd.sr.srread(sr_path)
    drawn = drawn_values(back)
    fields = ("volume_mm3", "height_anterior_mm", "height_centre_mm", "height_posterior_mm", "canal_area_mm2",
              "canal_ap_diameter_mm", "cord_area_mm2")
    expected = {(m.label, f): round(getattr(m, f), 2) for m in levels for f in fields if getattr(m, f) is not None}
    assert len(drawn) == len(expected) >= 40
    assert sorted(d["value"] for d in drawn) == sorted(expected.values())
    # a value's NUM has its coordinates as its only child: OHIF drops a value with any other
    assert all(d["nested"] == 1 for d in drawn)
    by_label = {d["label"]: d for d in drawn}
    assert len(by_label) == len(drawn)                      # one label per value, e.g. "L4-L5 disc height, centre"
    segments = {str(s.SegmentLabel): s for s in pydicom.dcmread(seg_path).SegmentSequence}
    lengths = 0
    for m in levels:
        for f in fields:
            value = getattr(m, f)
            if value is None:
                continue
            d = by_label[reader_label(m, f)]
            assert d["value"] == round(value, 2)
            assert d["unit"] == ("mm3" if f == "volume_mm3" else "mm2" if "area" in f else "mm")
            spacing = np.linalg.norm(vol.affine[:3, 1:3], axis=0)[::-1]            # column, row
            if f in ("volume_mm3", "canal_area_mm2", "cord_area_mm2"):
                # a point OHIF loads as its arrow annotation, whose text says what and how much
                assert d["graphic"] == "POINT" and d["tracking_identifier"] == OHIF_ARROW
                assert d["text"] == f"{reader_label(m, f)} {round(value, 2):.2f} {d['unit']}"
            else:
                # a length: a 2-point line on the image nearest it, whose drawn length is the value, with its
                # ends within one pixel of where it was measured (points_mm, also in the JSON)
                assert d["graphic"] == "POLYLINE" and d["tracking_identifier"] == OHIF_LENGTH
                drawn_mm = float(np.linalg.norm((d["points"][1] - d["points"][0]) * spacing))
                assert abs(drawn_mm - value) <= 0.05, (d["label"], drawn_mm, value)
                for p, want in zip(d["points"], m.points_mm[f]):
                    ours = image_point(vol, d["sop"], p)
                    off = ours - np.asarray(want)
                    normal = np.cross(vol.affine[:3, 2], vol.affine[:3, 1])
                    in_plane = off - (off @ normal) / (normal @ normal) * normal
                    assert np.linalg.norm(in_plane) <= spacing.min(), (d["label"], ours, want)
                lengths += 1
            if f == "volume_mm3":        # the link to the SEG: the segment's own Tracking UID
                segment = segments[STRUCTURES[m.label]["name"]]
                assert d["tracking_uid"] == segment.TrackingUID
                assert d["finding"] == segment.SegmentedPropertyTypeCodeSequence[0].CodeValue
    assert lengths >= 30
    units = {d["unit"] for d in drawn}
    assert units == {"mm", "mm2", "mm3"}
    # dcmqi (3D Slicer's reader) parses it, with the same groups
    meta = out / f"sr_{segmentation_type}.json"
    exe = Path(sys.executable).parent / "tid1500reader"
    subprocess.run([str(exe), "--inputDICOM", str(sr_path), "--outputMetadata", str(meta)], check=True,
                   capture_output=True, timeout=120)
    parsed = json.loads(meta.read_text())["Measurements"]
    assert len(parsed) == len(drawn)
    assert {p["TrackingUniqueIdentifier"] for p in parsed} == {d["tracking_uid"] for d in drawn}


def test_a_length_across_the_images_is_a_point_not_a_shorter_line(tmp_path):
    """On an axial series the disc and body heights run across the slices: no image holds them, so each is a
    point on the image nearest its middle (the value stays in the SR and the label says what it is), never a
    line that would measure shorter on screen."""
    import highdicom as hd

    case = P.write_case(5302, tmp_path / "case", fov="lumbar", plane="axial", slice_thickness=6.0, pixel=1.7)
    vol = load_volume(scan_dicom(tmp_path / "case" / "dicom").series[0])
    _, labels = P.render(case["phantom"], vol.affine, vol.array.shape)
    seg, _ = build_seg(vol.datasets, labels, fake_model_description(), SegSettings())
    sr = build_measurement_sr(seg, vol.datasets, measure_levels(labels, vol.affine), True, vol)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    drawn = drawn_values(hd.sr.srread(tmp_path / "sr.dcm"))
    heights = [d for d in drawn if "height" in d["label"]]
    assert heights and all(d["graphic"] == "POINT" and d["tracking_identifier"] != "Cornerstone3DTools@^0.1.0:Length"
                           for d in heights)
    assert len({d["label"] for d in heights}) == len(heights)


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
