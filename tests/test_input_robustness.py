"""Real-world input: compressed transfer syntaxes, DICOMDIR, and fuzzed headers and pixels."""
import os
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import (JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless,
                         RLELossless)

import phantom as P
from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.errors import SpineSegError
from spineseg.input.selection import select_series


@pytest.fixture(scope="module")
def small_series(tmp_path_factory):
    """A tiny 6-slice sagittal phantom series (fast to copy and mutate)."""
    from helpers import write_small_series
    return write_small_series(tmp_path_factory.mktemp("small"))


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda u: u.name)
def test_lossless_compressed_series_give_the_same_volume(tmp_path, phantom_study, syntax):
    src = phantom_study["dicom_files"][0].parent
    reference = load_volume(scan_dicom(src).series[0])
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.compress(syntax)
        ds.save_as(tmp_path / f.name)
    assert pydicom.dcmread(next(tmp_path.glob("*.dcm"))).file_meta.TransferSyntaxUID == syntax
    volume = load_volume(scan_dicom(tmp_path).series[0])
    assert np.array_equal(volume.array, reference.array)
    assert np.allclose(volume.affine, reference.affine)


def dcmcjpeg() -> str:
    """DCMTK's JPEG encoder (pydicom decodes JPEG but cannot encode it); .ci/run installs dcmtk."""
    exe = shutil.which("dcmcjpeg")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("dcmcjpeg is not installed; .ci/run installs the Debian package dcmtk")
        pytest.skip("dcmcjpeg is not installed (apt-get install dcmtk)")
    return exe


def _rescaled_copy(src_files, out_dir, bits: int):
    """The series with its pixels rescaled to ``bits`` unsigned bits (JPEG baseline takes 8,
    extended 12), as a scanner exporting such files would write them."""
    out_dir.mkdir()
    for f in src_files:
        ds = pydicom.dcmread(f)
        px = np.round(ds.pixel_array.astype(np.float64) / 32767 * (2 ** bits - 1))
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits == 8 else 16), bits, \
            bits - 1, 0
        ds.PixelData = px.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
        ds.save_as(out_dir / f.name, enforce_file_format=True)
    return sorted(out_dir.glob("*.dcm"))


def _jpeg_copy(src_files, out_dir, option: str):
    """Copy a series through ``dcmcjpeg option`` (its default keeps the SOP Instance UIDs)."""
    out_dir.mkdir()
    for f in src_files:
        subprocess.run([dcmcjpeg(), option, str(f), str(out_dir / f.name)], check=True, capture_output=True)
    return sorted(out_dir.glob("*.dcm"))


def test_jpeg_lossless_series_gives_the_same_volume(tmp_path, phantom_study):
    src = phantom_study["dicom_files"][0].parent
    reference = load_volume(scan_dicom(src).series[0])
    files = _jpeg_copy(sorted(src.glob("*.dcm")), tmp_path / "jpeg", "+e1")   # process 14, first-order prediction
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    volume = load_volume(scan_dicom(tmp_path / "jpeg").series[0])
    assert np.array_equal(volume.array, reference.array)
    assert np.allclose(volume.affine, reference.affine)


@pytest.mark.parametrize("option,bits,syntax", [("+eb", 8, JPEGBaseline8Bit), ("+ee", 12, JPEGExtended12Bit)],
                         ids=["baseline-8bit", "extended-12bit"])
def test_lossy_jpeg_series_is_decoded_close_to_its_source(tmp_path, phantom_study, option, bits, syntax):
    """Lossy JPEG cannot match to the voxel: the decoded volume must match the uncompressed
    series it was made from within JPEG's error, on the same grid."""
    plain = _rescaled_copy(sorted(phantom_study["dicom_files"][0].parent.glob("*.dcm")), tmp_path / "plain", bits)
    files = _jpeg_copy(plain, tmp_path / "jpeg", option)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    volume = load_volume(scan_dicom(tmp_path / "jpeg").series[0])
    reference = load_volume(scan_dicom(tmp_path / "plain").series[0])
    assert volume.array.shape == reference.array.shape
    assert np.allclose(volume.affine, reference.affine)
    error = np.abs(volume.array.astype(float) - reference.array.astype(float))
    assert error.mean() < 0.01 * (2 ** bits - 1), error.mean()
    assert not np.array_equal(volume.array, reference.array)   # it really was lossy-coded


def test_dicomdir_file_set_is_read_through(tmp_path, small_series):
    from pydicom.fileset import FileSet
    fs = FileSet()
    for f in small_series:
        fs.add(pydicom.dcmread(f))
    fs.write(tmp_path / "media")
    scan = scan_dicom(tmp_path / "media")
    assert [s.series_uid for s in scan.series] == [pydicom.dcmread(small_series[0]).SeriesInstanceUID]
    assert any("DICOMDIR" in reason for _, reason in scan.skipped)
    assert load_volume(scan.series[0]).array.shape[0] == len(small_series)


ATTRIBUTES = ["Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
              "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel", "SOPClassUID", "Modality",
              "SeriesInstanceUID", "StudyInstanceUID", "NumberOfFrames", "RescaleSlope", "RescaleIntercept",
              "PhotometricInterpretation", "ImageType", "SeriesDescription", "SliceThickness", "PixelData"]
VALUES = st.one_of(st.none(), st.integers(-70000, 70000), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=20), st.lists(st.one_of(st.floats(-1e4, 1e4), st.just(float("nan"))), max_size=7),
                   st.binary(max_size=64))


@st.composite
def mutations(draw):
    kind = draw(st.sampled_from(["set", "delete", "truncate", "flip"]))
    return (kind, draw(st.integers(0, 5)), draw(st.sampled_from(ATTRIBUTES)), draw(VALUES),
            draw(st.integers(0, 10_000)), draw(st.integers(1, 255)))


def _mutate(path, kind, attribute, value, offset, byte):
    if kind in ("truncate", "flip"):
        data = bytearray(path.read_bytes())
        if not data:
            return
        pos = offset % len(data)
        if kind == "truncate":
            del data[pos:]
        else:
            data[pos] ^= byte
        path.write_bytes(bytes(data))
        return
    try:   # a mutation that pydicom itself cannot write is not a test input
        ds = pydicom.dcmread(path, force=True)
        if kind == "delete":
            if attribute in ds:
                delattr(ds, attribute)
        else:
            setattr(ds, attribute, value)
        ds.save_as(path)
    except Exception:
        return


@settings(max_examples=1000, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@pytest.mark.slow
@given(st.lists(mutations(), min_size=1, max_size=3))
def test_fuzzed_series_end_in_a_volume_or_a_clear_error(tmp_path_factory, small_series, muts):
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    files = [shutil.copy(f, folder / f.name) for f in small_series]
    for kind, index, attribute, value, offset, byte in muts:
        _mutate(folder / files[index % len(files)].name, kind, attribute, value, offset, byte)
    try:
        scan = scan_dicom(folder)
        chosen, _ = select_series(scan.series)
        volume = load_volume(chosen[0].series, max_voxels=50_000_000)
    except SpineSegError as exc:
        assert exc.code and exc.message      # a clear, coded error
        return
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert volume.array.ndim == 3 and np.isfinite(volume.affine).all()


def test_a_file_meta_without_a_transfer_syntax_is_a_clear_error():
    """Found by the fuzz test above (a flipped byte in the file meta group): nothing says how the pixel data
    is encoded, which must end as a coded error (CORRUPT_PIXEL_DATA), not an AttributeError."""
    from spineseg.input.codestream import BadCodestream, check_frames
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    with pytest.raises(BadCodestream, match=r"no Transfer Syntax UID \(0002,0010\)"):
        check_frames(ds, 4, 4, 1)


def test_enhanced_multiframe_mr_gives_the_same_volume_and_a_valid_seg(tmp_path, phantom_study):
    import highdicom as hd

    from conftest import run_dciodvfy
    from helpers import fake_model_description
    from spineseg.outputs.seg_writer import build_seg, write_seg
    src = phantom_study["dicom_files"][0].parent
    classic = load_volume(scan_dicom(src).series[0])
    legacy = [pydicom.dcmread(f) for f in np.random.default_rng(1).permutation(sorted(src.glob("*.dcm")))]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy, series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "in").mkdir()
    enhanced.save_as(tmp_path / "in" / "enhanced.dcm")
    scan = scan_dicom(tmp_path / "in")
    chosen, _ = select_series(scan.series)
    assert chosen[0].series.n_images == classic.array.shape[0] and chosen[0].plane == "sagittal"
    volume = load_volume(chosen[0].series)
    assert np.array_equal(volume.array, classic.array)
    assert np.allclose(volume.affine, classic.affine, atol=1e-4)
    _, labels = P.render(phantom_study["phantom"], volume.affine, volume.array.shape)
    sources, frame_labels = volume.in_source_order(labels)
    seg, _ = build_seg(sources, frame_labels, fake_model_description())
    path = write_seg(seg, tmp_path / "seg.dcm")
    assert run_dciodvfy(path)[0] == []
    decoded = hd.seg.segread(path).get_pixels_by_source_frame(
        str(enhanced.SOPInstanceUID), list(range(1, len(sources[0].PerFrameFunctionalGroupsSequence) + 1)),
        combine_segments=True, assert_missing_frames_are_empty=True)
    assert np.array_equal(decoded > 0, frame_labels > 0)


def multiframe_copy(src, out_dir, kind: str, series_number: int = 99):
    """The classic series in ``src`` as one multi-frame object in ``out_dir`` (returned, as read back): "legacy",
    a Legacy Converted Enhanced MR Image (highdicom); "enhanced", an Enhanced MR Image as Siemens XA or recent
    Philips scanners send it (that object's SOP class, image type and MR frame type, the orientation in each
    frame's functional groups). Neither has ImageOrientationPatient or ImagePositionPatient at its top level."""
    import copy

    import highdicom as hd
    from pydicom.uid import EnhancedMRImageStorage
    legacy = [pydicom.dcmread(f) for f in np.random.default_rng(1).permutation(sorted(src.glob("*.dcm")))]
    mf = hd.legacy.LegacyConvertedEnhancedMRImage(legacy, series_instance_uid=hd.UID(), series_number=series_number,
                                                  sop_instance_uid=hd.UID(), instance_number=1)
    if kind == "enhanced":
        mf.SOPClassUID = mf.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
        mf.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        shared = mf.SharedFunctionalGroupsSequence[0]
        orientation = shared.PlaneOrientationSequence
        del shared.PlaneOrientationSequence
        for frame in mf.PerFrameFunctionalGroupsSequence:
            frame.PlaneOrientationSequence = copy.deepcopy(orientation)
            frame_type = pydicom.Dataset()
            frame_type.FrameType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
            frame_type.PixelPresentation, frame_type.VolumetricProperties = "MONOCHROME", "VOLUME"
            frame_type.VolumeBasedCalculationTechnique, frame_type.ComplexImageComponent = "NONE", "MAGNITUDE"
            frame_type.AcquisitionContrast = "T2"
            frame.MRImageFrameTypeSequence = [frame_type]
    assert "ImageOrientationPatient" not in mf and "ImagePositionPatient" not in mf
    out_dir.mkdir(parents=True, exist_ok=True)
    mf.save_as(out_dir / f"{kind}.dcm", enforce_file_format=True)
    return pydicom.dcmread(out_dir / f"{kind}.dcm", stop_before_pixels=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["enhanced", "legacy"])
def test_the_app_writes_seg_sr_and_review_from_one_multiframe_mr_object(tmp_path, phantom_study, kind):
    """Issue 24: a study sent as one Enhanced (or Legacy Converted Enhanced) MR object ended in INTERNAL_ERROR
    (exit 4) once the label map was written, because the Secondary Capture looked for the source's geometry at
    the dataset's top level. The whole app now delivers SEG, SR and review picture, each valid, each tied to
    the multi-frame source (the picture to the frame nearest its plane)."""
    import json

    import highdicom as hd

    from conftest import run_dciodvfy
    from helpers import run_app
    source = multiframe_copy(phantom_study["dicom_files"][0].parent, tmp_path / "in", kind)
    n_frames = int(source.NumberOfFrames)
    out = tmp_path / "out"
    proc = run_app(tmp_path / "in", out, engine="plain")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    (entry,) = report["processed"]
    assert report["status"] == "succeeded" and entry["series_instance_uid"] == source.SeriesInstanceUID
    files = {key: out / entry["outputs"][key] for key in ("seg", "measurements_sr", "review_sc", "review_png",
                                                           "measurements_table_sc", "measurements_table_png",
                                                           "measurements_json", "label_map")}
    assert all(p.is_file() for p in files.values())
    assert [r["kind"] for r in entry["dicom_outputs"]] == ["seg", "sr", "sc", "sc_table"]
    for key in ("seg", "measurements_sr", "review_sc", "measurements_table_sc"):
        assert run_dciodvfy(files[key])[0] == [], key
    seg = pydicom.dcmread(files["seg"], stop_before_pixels=True)
    assert {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence
            for r in s.ReferencedInstanceSequence} == {str(source.SOPInstanceUID)}
    sc = pydicom.dcmread(files["review_sc"], stop_before_pixels=True)
    (ref,) = sc.SourceImageSequence
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID and ref.ReferencedSOPClassUID == source.SOPClassUID
    assert 1 <= int(ref.ReferencedFrameNumber) <= n_frames
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.PatientID == source.PatientID
    sr = hd.sr.srread(files["measurements_sr"])
    assert str(seg.SOPInstanceUID) in {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                                       for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    # every value is drawn on a frame of the one multi-frame source
    drawn = [c.ContentSequence[0].ReferencedSOPSequence[0] for g in sr.content.get_image_measurement_groups()
             for m in g.get_measurements() for c in m.referenced_coordinates]
    assert drawn and all(r.ReferencedSOPInstanceUID == source.SOPInstanceUID
                         and 1 <= int(r.ReferencedFrameNumber) <= n_frames for r in drawn)
