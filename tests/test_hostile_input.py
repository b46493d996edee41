"""Hostile input: special files, allocation bombs in headers and codestreams, series too large once
resampled, series that mix patients, studies or frames of reference, forged log lines, and SEG
identity that follows the exact source instances."""
import io
import logging
import os
import shutil
import struct
import threading
import tracemalloc
import zlib

import numpy as np
import pydicom
import pytest

from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.errors import InputError, SpineSegError
from spineseg.input.safe_read import Unreadable, read_dataset


@pytest.fixture
def series_dir(tmp_path, small_series_files):
    folder = tmp_path / "in"
    folder.mkdir()
    for f in small_series_files:
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def small_series_files(tmp_path_factory):
    from helpers import write_small_series
    return write_small_series(tmp_path_factory.mktemp("hostile"), 5402)


def test_a_fifo_named_like_dicom_is_skipped_not_read(series_dir):
    fifo = series_dir / "IM9999.dcm"
    os.mkfifo(fifo)
    box = {}
    scanner = threading.Thread(target=lambda: box.update(scan=scan_dicom(series_dir)), daemon=True)
    scanner.start()
    scanner.join(30)
    if scanner.is_alive():                       # unblock the reader so the test process can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        scanner.join(5)
        pytest.fail("the scan blocked on a FIFO")
    scan = box["scan"]
    assert len(scan.series) == 1 and len(scan.series[0].files) == 6
    assert [(os.path.basename(p), r) for p, r in scan.skipped] == [("IM9999.dcm", "not a regular file (FIFO)")]


def _file_with_huge_element(path, claimed=0xFFFFFFF0):
    """A 200-byte DICOM file whose private element claims ``claimed`` bytes."""
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", pydicom.uid.generate_uid()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path.write_bytes(buf.getvalue() + struct.pack("<HH2sHI", 0x0011, 0x1010, b"OB", 0, claimed) + b"\0" * 16)
    return path


def test_an_element_claiming_4_gb_in_a_tiny_file_allocates_nothing_large(tmp_path):
    _file_with_huge_element(tmp_path / "IM0001.dcm")
    tracemalloc.start()
    try:
        with pytest.raises(InputError):
            scan_dicom(tmp_path)                 # nothing readable: NO_DICOM
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2, f"reading a 200-byte file peaked at {peak / 1024**2:.0f} MiB"


def test_a_deflate_bomb_is_refused_before_pydicom_inflates_it(tmp_path):
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", pydicom.uid.generate_uid()
    ds.add_new(0x00111010, "OB", b"\0" * (64 * 1024**2))
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 1024**2
    with pytest.raises(Unreadable, match="inflates past"):
        read_dataset(path, headers_only=True, limit=16 * 1024**2)


def _patch_codestream(folder, syntax, find, pack):
    """Compress every file with ``syntax`` and make one frame's codestream declare 40000x40000."""
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.compress(syntax)
        ds.save_as(f)
    f = sorted(folder.glob("*.dcm"))[2]
    ds = pydicom.dcmread(f)
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    at = frame.find(find)
    patched = frame[:at] + pack(frame[at:]) + frame[at + len(pack(frame[at:])):]
    ds.PixelData = pydicom.encaps.encapsulate([patched])
    ds.save_as(f)


@pytest.mark.parametrize("syntax,find,pack", [
    (pydicom.uid.JPEG2000Lossless, b"\xff\x4f\xff\x51",
     lambda b: b[:8] + struct.pack(">II", 40000, 40000)),
    (pydicom.uid.JPEGLSLossless, b"\xff\xf7",
     lambda b: b[:5] + struct.pack(">HH", 40000, 40000)),
], ids=["jpeg2000", "jpeg-ls"])
def test_a_codestream_declaring_a_huge_frame_is_refused_before_decoding(tmp_path, syntax, find, pack):
    from helpers import write_small_series
    files = write_small_series(tmp_path, 5403, pixel=1.0)     # openjpeg wants frames of 32+ pixels a side
    _patch_codestream(files[0].parent, syntax, find, pack)
    with pytest.raises(InputError) as err:
        load_volume(scan_dicom(files[0].parent).series[0])
    assert err.value.code == "CORRUPT_PIXEL_DATA" and "40000x40000" in err.value.message


def test_the_voxel_limit_applies_to_the_1mm_grid(series_dir):
    """6 slices of about 78x28 (12 mm slices, 4 mm pixels): some 13000 voxels as sent, 2.4 million at 1 mm."""
    series = scan_dicom(series_dir).series[0]
    rows, cols = int(series.first.Rows), int(series.first.Columns)
    assert load_volume(series, max_voxels=72 * rows * 4 * cols * 4).array.shape == (6, rows, cols)
    with pytest.raises(InputError) as err:
        load_volume(series, max_voxels=72 * rows * 4 * cols * 4 - 1)
    assert err.value.code == "SERIES_TOO_LARGE" and "1 mm" in err.value.message
    assert f"72x{rows * 4}x{cols * 4}" in err.value.message


@pytest.mark.parametrize("attribute,code", [("PatientID", "MIXED_PATIENTS"), ("StudyInstanceUID", "MIXED_STUDIES"),
                                            ("FrameOfReferenceUID", "MIXED_FRAME_OF_REFERENCE")])
def test_a_series_mixing_subjects_is_refused_before_inference(series_dir, attribute, code):
    for f in sorted(series_dir.glob("*.dcm"))[3:]:
        ds = pydicom.dcmread(f)
        setattr(ds, attribute, "SECOND-PATIENT-77" if attribute == "PatientID" else pydicom.uid.generate_uid())
        ds.save_as(f)
    scan = scan_dicom(series_dir)
    assert len(scan.series) == 1
    with pytest.raises(InputError) as err:
        load_volume(scan.series[0])
    assert err.value.code == code
    assert "SECOND-PATIENT-77" not in err.value.message and "PHANTOM-" not in err.value.message


def test_a_file_name_cannot_forge_a_log_line(series_dir, tmp_path):
    from spineseg import logsafe
    from spineseg.pipeline import scan_study
    from spineseg.report import RunReport
    from spineseg.settings import AppConfig
    (series_dir / "x\n12:00:00 ERROR   forged line").write_bytes(b"junk")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logsafe.SafeFormatter(logsafe.FORMAT))
    logger = logging.getLogger("spineseg")
    logger.addHandler(handler)
    try:
        scan_study(AppConfig(series_dir, tmp_path / "out"), RunReport(tmp_path))
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert any("forged line" in ln for ln in lines)
    assert not any(ln.startswith("12:00:00") for ln in lines), lines


def test_a_traceback_cannot_start_a_log_line_either():
    from spineseg import logsafe
    try:
        raise ValueError("bad name\n12:00:00 ERROR   forged")
    except ValueError:
        record = logging.LogRecord("spineseg", logging.ERROR, __file__, 1, "failed", None, __import__("sys").exc_info())
    lines = logsafe.SafeFormatter(logsafe.FORMAT).format(record).splitlines()
    assert all(ln.startswith("  | ") for ln in lines[1:]) and len(lines) > 2


def _seg_of(files, **settings):
    from helpers import fake_model_description
    from spineseg.outputs.seg_writer import SegSettings, build_seg
    datasets = [pydicom.dcmread(f) for f in files]
    labels = np.zeros((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)), np.uint8)
    labels[:, 5:9, 5:9] = 1
    return build_seg(datasets, labels, fake_model_description(), SegSettings(**settings))[0]


def test_seg_identity_follows_the_exact_source_instances(small_series_files):
    full, again = _seg_of(small_series_files), _seg_of(small_series_files)
    missing_last = _seg_of(small_series_files[:-1])
    assert (full.SOPInstanceUID, full.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert missing_last.SOPInstanceUID != full.SOPInstanceUID
    assert missing_last.SeriesInstanceUID != full.SeriesInstanceUID
    assert _seg_of(small_series_files, series_number=7).SOPInstanceUID != full.SOPInstanceUID


def test_a_huge_source_series_number_still_gives_a_valid_seg(tmp_path, small_series_files):
    from conftest import run_dciodvfy
    from spineseg.outputs.seg_writer import write_seg
    files = []
    for f in small_series_files:
        ds = pydicom.dcmread(f)
        ds.SeriesNumber = 2147483000
        ds.save_as(tmp_path / f.name)
        files.append(tmp_path / f.name)
    seg = _seg_of(files)
    assert int(seg.SeriesNumber) == 2**31 - 1
    errors, _ = run_dciodvfy(write_seg(seg, tmp_path / "seg.dcm"))
    assert not [e for e in errors if "SeriesNumber" in e or "Series Number" in e], errors


@pytest.mark.parametrize("var,value", [("SPINESEG_SERIES_NUMBER", "99999999999"), ("SPINESEG_SERIES_NUMBER", "-3"),
                                       ("SPINESEG_SERIES_NUMBER", "12.5"), ("SPINESEG_MAX_VOXELS", "0"),
                                       ("SPINESEG_MAX_VOXELS", "lots"), ("SPINESEG_ALL_SERIES", "perhaps"),
                                       ("SPINESEG_DEVICE", "gpu9")])
def test_bad_numeric_and_choice_settings_are_bad_settings(tmp_path, var, value):
    from spineseg.settings import AppConfig
    with pytest.raises(SpineSegError) as err:
        AppConfig.from_settings(tmp_path, tmp_path, None, {}, {var: value})
    assert err.value.code == "BAD_SETTING" and var in err.value.message


def _add_private_element(folder, size):
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.add_new(0x00111010, "OB", b"\x01" * size)
        ds.save_as(f)


def test_the_scan_does_not_hold_large_header_values(series_dir):
    """The scan keeps every header; a 32 MiB private element in each file must stay on disk."""
    _add_private_element(series_dir, 32 * 1024**2)
    tracemalloc.start()
    try:
        scan = scan_dicom(series_dir)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(scan.series[0].headers) == 6 and held < 16 * 1024**2, f"{held / 1024**2:.0f} MiB held"
    assert load_volume(scan.series[0]).array.shape[0] == 6


def test_the_pixel_read_does_not_load_large_header_values(series_dir, small_series_files):
    """The volume keeps every slice's header too: a 32 MiB private element in each of the 6 files is
    never read, not even for a moment (it was: 192 MiB held), and the pixels are those sent."""
    _add_private_element(series_dir, 32 * 1024**2)
    series = scan_dicom(series_dir).series[0]
    tracemalloc.start()
    try:
        volume = load_volume(series)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2, f"{held / 1024**2:.0f} MiB held, {peak / 1024**2:.0f} MiB at the peak"
    assert np.array_equal(volume.array, load_volume(scan_dicom(small_series_files[0].parent).series[0]).array)
    assert len(volume.datasets[0][0x00111010].value) == 32 * 1024**2      # still there, read when used


def test_a_deferred_value_is_read_back_through_the_bounded_reader(tmp_path):
    """A value left on disk is read, when used, the way the first read was: a 4 GB claim in a small
    file is a short read, not a 4 GB allocation."""
    ds = read_dataset(_file_with_huge_element(tmp_path / "IM0001.dcm"), headers_only=True)
    tracemalloc.start()
    try:
        try:
            ds[0x00111010].value
        except Exception:        # a short value may be refused; what matters is what was allocated
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2, f"reading a 16-byte value back peaked at {peak / 1024**2:.0f} MiB"


def test_a_deflated_file_with_a_pad_byte_after_the_stream_is_read(series_dir):
    """pydicom pads an odd-length deflate stream with a byte after its end; for a data set that inflates
    past the check's 1 MiB step, the inflate check looped on that byte forever (zlib hands it back as
    unconsumed input once the stream has ended)."""
    _add_private_element(series_dir, 2 * 1024**2)
    for f in sorted(series_dir.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
        ds.save_as(f, enforce_file_format=True)
        with open(f, "ab") as out:
            out.write(b"\0\0")            # data after the stream's end, whether or not pydicom padded
    box = {}
    scanner = threading.Thread(target=lambda: box.update(volume=load_volume(scan_dicom(series_dir).series[0])),
                               daemon=True)
    scanner.start()
    scanner.join(60)
    assert not scanner.is_alive(), "the deflate check did not end"
    assert box["volume"].array.shape[0] == 6


def test_a_study_1100_folders_deep_is_scanned(tmp_path, small_series_files):
    """os.walk recurses once per folder: Python 3.11 ended this study with RecursionError (INTERNAL_ERROR)."""
    top = bottom = tmp_path / "deep"
    top.mkdir()
    for _ in range(1100):                     # Path.mkdir(parents=True) and os.makedirs recurse as well
        bottom = bottom / "d"
        bottom.mkdir()
    try:
        for f in small_series_files:
            shutil.copy(f, bottom / f.name)
        scan = scan_dicom(top)
        assert len(scan.series) == 1 and scan.series[0].files == sorted(bottom / f.name for f in small_series_files)
        assert scan.skipped == []
    finally:                       # shutil.rmtree recurses too; take the chain down from the bottom
        for f in bottom.iterdir():
            f.unlink()
        for folder in [bottom, *bottom.parents][:1101]:
            folder.rmdir()


def _stack_limit_code(monkeypatch):
    """app/__main__.py's module, with resource limits that make it try the re-exec, and an execv the
    running user may not use."""
    import importlib.util
    import resource
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("spineseg_app_main", ROOT / "app" / "__main__.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)

    class Limits:
        RLIMIT_STACK, RLIM_INFINITY = resource.RLIMIT_STACK, resource.RLIM_INFINITY
        now = (8 * 1024**2, resource.RLIM_INFINITY)

        def getrlimit(self, which):
            return self.now

        def setrlimit(self, which, limits):
            self.now = tuple(limits)

    def refuse(path, args):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(main, "resource", Limits())
    monkeypatch.setattr(main.os, "execv", refuse)
    return main


def test_a_failed_stack_limit_re_exec_goes_on_without_it(monkeypatch, capsys):
    main = _stack_limit_code(monkeypatch)
    main._raise_stack_limit()
    assert main.resource.now == (8 * 1024**2, main.resource.RLIM_INFINITY)     # put back as it was
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not restart" in err[0] and "PermissionError" in err[0], err


def test_the_app_reports_when_its_re_exec_is_refused(tmp_path):
    """End to end: exit 1, a traceback and no report before; now the run goes on and reports."""
    import json
    import resource
    import subprocess
    import sys
    from conftest import ROOT
    hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
    if hard != resource.RLIM_INFINITY and hard < 32 * 1024**2:
        pytest.skip("the hard stack limit is below 32 MiB: the app does not try to re-exec")
    (tmp_path / "in").mkdir()
    code = ("import os, runpy, sys\n"
            "def refuse(path, args): raise PermissionError(13, 'Permission denied', path)\n"
            "os.execv = refuse\n"
            f"sys.argv = [{str(ROOT / 'app')!r}, '-i', {str(tmp_path / 'in')!r}, '-o', {str(tmp_path / 'out')!r},"
            " '--engine', 'plain']\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPINESEG_", "HOLOSCAN_"))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_STACK, (8 * 1024**2, hard)))
    assert "Traceback" not in proc.stderr and "could not restart" in proc.stderr, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert proc.returncode not in (0, 1) and report["error"]["code"] == "EMPTY_INPUT", (proc.returncode, report)


def test_a_series_too_large_at_1mm_is_refused_before_the_models_load(series_dir, tmp_path):
    from spineseg.pipeline import run_all
    from spineseg.report import RunReport
    from spineseg.settings import AppConfig
    report = RunReport(tmp_path)
    with pytest.raises(InputError) as err:
        run_all(AppConfig(series_dir, tmp_path / "out", max_voxels=1_000_000), report)
    assert err.value.code == "SERIES_TOO_LARGE" and "1 mm" in err.value.message
    assert "select" in report.timings and "load_models" not in report.timings
