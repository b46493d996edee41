"""DICOM SEG: valid (dciodvfy), exact to the voxel (highdicom round trip), coded, referenced."""
import numpy as np
import pydicom
import pytest

import phantom as P
from conftest import run_dciodvfy
from helpers import decode_seg, decode_seg_with_dcmqi, fake_model_description
from spineseg.outputs.codes_table import STRUCTURES
from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.outputs.seg_writer import SegSettings, build_seg, encoding_record, write_label_nifti, write_seg


def test_code_table_has_exactly_one_entry_per_model_label():
    assert set(STRUCTURES) == set(P.ALL_LABELS)
    type_codes = [v["type"] for v in STRUCTURES.values()]
    assert len(set(type_codes)) == len(type_codes)
    vertebrae = [STRUCTURES[v]["rgb"] for v in sorted(STRUCTURES) if 11 <= v <= 45]
    assert all(a != b for a, b in zip(vertebrae, vertebrae[1:])), "neighbouring vertebrae share a colour"


@pytest.mark.parametrize("plane,oblique,reverse,shuffle", [
    ("sagittal", 0, False, False),
    ("sagittal", 0, True, True),
    ("axial", 0, False, True),
    ("coronal", 0, False, False),
    ("sagittal", 17, False, False),
])
def test_seg_is_valid_and_exact_in_every_orientation(tmp_path, plane, oblique, reverse, shuffle):
    case = P.write_case(5100, tmp_path / "case", fov="cervical", plane=plane, slice_thickness=4.0, pixel=1.5,
                        oblique_deg=oblique, reverse_slices=reverse, shuffle=shuffle)
    vol = load_volume(scan_dicom(tmp_path / "case" / "dicom").series[0])
    # ground truth in the loader's slice order: render the labels on the loader's own grid
    _, labels = P.render(case["phantom"], vol.affine, vol.array.shape)
    seg, present = build_seg(vol.datasets, labels, fake_model_description(), None)
    path = write_seg(seg, tmp_path / "seg.dcm")
    errors, _ = run_dciodvfy(path)
    assert errors == []
    decoded = decode_seg(path, vol.datasets)
    assert np.array_equal(decoded, labels)
    assert present == sorted(int(v) for v in np.unique(labels) if v)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    assert np.array_equal(decode_seg_with_dcmqi(path, labels.shape, ras, tmp_path / "dcmqi"), labels)


def test_seg_references_codes_and_identity(tmp_path, phantom_study):
    vol = load_volume(scan_dicom(phantom_study["dicom_files"][0].parent).series[0])
    _, labels = P.render(phantom_study["phantom"], vol.affine, vol.array.shape)
    seg, present = build_seg(vol.datasets, labels, fake_model_description(), SegSettings(series_number=77))
    path = write_seg(seg, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(path)
    src = vol.datasets[0]
    assert ds.Modality == "SEG" and ds.SeriesNumber == 77
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert ds.PatientID == src.PatientID
    refs = {r.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs == {str(d.SOPInstanceUID) for d in vol.datasets}
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert ds.SeriesDescription.startswith("PHANTOM MODEL NOT FOR CLINICAL USE")
    for item in ds.SegmentSequence:
        value = present[int(item.SegmentNumber) - 1]
        assert item.SegmentLabel == STRUCTURES[value]["name"]
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == STRUCTURES[value]["type"][0]
        assert item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentAlgorithmName == "TotalSpineSeg"
        assert "phantom" in item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion
        assert len(item.RecommendedDisplayCIELabValue) == 3
    # same input, same weights: same identity (a repeated delivery replaces, not duplicates)
    again, _ = build_seg(vol.datasets, labels, fake_model_description(), SegSettings(series_number=77))
    assert again.SOPInstanceUID == ds.SOPInstanceUID
    other, _ = build_seg(vol.datasets, labels, fake_model_description("official"), SegSettings(series_number=77))
    assert other.SOPInstanceUID != ds.SOPInstanceUID and "PHANTOM" not in other.SeriesDescription


def test_labelmap_type_is_smaller_and_exact(tmp_path, phantom_study):
    vol = load_volume(scan_dicom(phantom_study["dicom_files"][0].parent).series[0])
    _, labels = P.render(phantom_study["phantom"], vol.affine, vol.array.shape)
    binary, _ = build_seg(vol.datasets, labels, fake_model_description(), SegSettings(segmentation_type="BINARY"))
    labelmap, _ = build_seg(vol.datasets, labels, fake_model_description(), SegSettings(segmentation_type="LABELMAP"))
    p_bin, p_lab = write_seg(binary, tmp_path / "b.dcm"), write_seg(labelmap, tmp_path / "l.dcm")
    assert p_lab.stat().st_size < p_bin.stat().st_size
    assert np.array_equal(decode_seg(p_lab, vol.datasets), labels)
    errors, _ = run_dciodvfy(p_lab)
    assert errors == []


@pytest.mark.parametrize("seg_type,compression", [("BINARY", "jpeg2000"), ("LABELMAP", "rle"),
                                                   ("LABELMAP", "jpeg2000"), ("FRACTIONAL", "rle"),
                                                   ("AUTO", "jpeg2000")])
def test_compressed_segs_are_exact(tmp_path, phantom_study, seg_type, compression):
    vol = load_volume(scan_dicom(phantom_study["dicom_files"][0].parent).series[0])
    _, labels = P.render(phantom_study["phantom"], vol.affine, vol.array.shape)
    settings = SegSettings(segmentation_type=seg_type, compression=compression)
    seg, _ = build_seg(vol.datasets, labels, fake_model_description(), settings)
    path = write_seg(seg, tmp_path / "seg.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(decode_seg(path, vol.datasets), labels)
    assert run_dciodvfy(path)[0] == []


def test_invalid_seg_settings_are_refused():
    from spineseg.errors import SpineSegError
    for settings in (SegSettings(segmentation_type="PROBABILITY"), SegSettings(compression="zip"),
                     SegSettings(segmentation_type="BINARY", compression="rle"),
                     SegSettings(segmentation_type="AUTO", compression="rle")):
        with pytest.raises(SpineSegError) as exc:
            settings.validate()
        assert exc.value.code == "BAD_SETTING"


def test_real_series_seg_matches_source_geometry(tmp_path, real_t2_dicom):
    import nibabel as nib

    from conftest import SHARED_DATA
    vol = load_volume(scan_dicom(real_t2_dicom).series[0])
    manual = nib.load(SHARED_DATA / "sct_testing_data" / "t2" / "t2_seg-manual_labeled.nii.gz")
    # the manual cord labels (C2..C5) on the DICOM grid, as cord (1) and canal (2) to exercise two segments
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in vol.array.shape], indexing="ij"), -1).reshape(-1, 3)
    nidx = np.round(np.linalg.inv(manual.affine) @ ras @ np.c_[idx, np.ones(len(idx))].T)[:3].astype(int)
    cord = np.asanyarray(manual.dataobj)[tuple(nidx)].reshape(vol.array.shape)
    labels = np.where(cord >= 4, 1, np.where(cord > 0, 2, 0)).astype(np.uint8)
    seg, _ = build_seg(vol.datasets, labels, fake_model_description(), None)
    path = write_seg(seg, tmp_path / "seg.dcm")
    errors, _ = run_dciodvfy(path)
    assert errors == []
    assert np.array_equal(decode_seg(path, vol.datasets), labels)
    assert np.array_equal(decode_seg_with_dcmqi(path, labels.shape, ras, tmp_path / "dcmqi"), labels)
    ds = pydicom.dcmread(path)
    src_iop = [float(v) for v in vol.datasets[0].ImageOrientationPatient]
    seg_iop = [float(v) for v in ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    assert seg_iop == pytest.approx(src_iop)
    positions = {tuple(round(float(v), 3) for v in d.ImagePositionPatient) for d in vol.datasets}
    for frame in ds.PerFrameFunctionalGroupsSequence:
        pos = tuple(round(float(v), 3) for v in frame.PlanePositionSequence[0].ImagePositionPatient)
        assert pos in positions


def test_label_nifti_is_in_source_geometry(tmp_path, phantom_study):
    import nibabel as nib
    vol = load_volume(scan_dicom(phantom_study["dicom_files"][0].parent).series[0])
    labels = (vol.array > vol.array.mean()).astype(np.uint8)
    path = write_label_nifti(labels, vol.affine, tmp_path / "l.nii.gz")
    img = nib.load(path)
    assert np.array_equal(np.asanyarray(img.dataobj), labels)
    assert np.allclose(img.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("setting,rows,columns,written,warns", [
    ("AUTO", 462, 187, "LABELMAP", True), ("AUTO", 96, 96, "BINARY", False), ("AUTO", 512, 512, "BINARY", False),
    ("AUTO", 67, 43, "LABELMAP", True), ("BINARY", 462, 187, "BINARY", True), ("BINARY", 96, 96, "BINARY", False),
    ("FRACTIONAL", 462, 187, "FRACTIONAL", False), ("LABELMAP", 96, 96, "LABELMAP", False)])
def test_auto_writes_binary_only_for_byte_aligned_frames(setting, rows, columns, written, warns):
    """AUTO: BINARY when Rows x Columns is a multiple of 8 (PS3.5 8.1.1 packs 1-bit frames with no
    padding), else the encoding measured to display exactly in OHIF (README, 'SEG encoding'); the reason
    (report.json) says so, and says when a configured BINARY has frames that are not byte-aligned."""
    from spineseg.outputs.seg_writer import encoding_for
    encoding, reason = encoding_for(SegSettings(segmentation_type=setting), rows, columns)
    assert encoding == written
    assert reason.startswith("auto") == (setting == "AUTO")
    assert (" not " in reason) == warns, reason


@pytest.mark.parametrize("seg_type", ["AUTO", "FRACTIONAL"])
# the 0.6 mm sagittal case (the largest frames, 15-30 s in dcmqi) runs in `make test` only
@pytest.mark.parametrize("plane,oblique,pixel", [pytest.param("sagittal", 0, 0.6, marks=pytest.mark.slow),
                                                 ("axial", 0, 1.7), ("sagittal", 17, 1.3), ("sagittal", 0, 2.0)])
def test_default_and_fractional_segs_decode_exactly_in_dcmqi(tmp_path, seg_type, plane, oblique, pixel):
    """The default (AUTO) and FRACTIONAL SEGs are valid and exact in highdicom and in 3D Slicer's dcmqi,
    on byte-aligned and unaligned matrices."""
    case = P.write_case(5110, tmp_path / "case", fov="lumbar", plane=plane, slice_thickness=5.0, pixel=pixel,
                        oblique_deg=oblique, matrix=96 if pixel == 2.0 else None)
    vol = load_volume(scan_dicom(tmp_path / "case" / "dicom").series[0])
    _, labels = P.render(case["phantom"], vol.affine, vol.array.shape)
    seg, _ = build_seg(vol.datasets, labels, fake_model_description(), SegSettings(segmentation_type=seg_type))
    rows, columns = int(seg.Rows), int(seg.Columns)
    assert seg.SegmentationType == ("FRACTIONAL" if seg_type == "FRACTIONAL" else
                                    "BINARY" if rows * columns % 8 == 0 else "LABELMAP")
    record = encoding_record(SegSettings(segmentation_type=seg_type), seg)      # what report.json says
    assert record["segmentation_type"] == seg.SegmentationType and record["segmentation_type_setting"] == seg_type
    assert f"{rows}x{columns}" in record["segmentation_type_reason"] or seg_type == "FRACTIONAL"
    path = write_seg(seg, tmp_path / "seg.dcm")
    assert run_dciodvfy(path)[0] == []
    assert np.array_equal(decode_seg(path, vol.datasets), labels)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    assert np.array_equal(decode_seg_with_dcmqi(path, labels.shape, ras, tmp_path / "dcmqi"), labels)
