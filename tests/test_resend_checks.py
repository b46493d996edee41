"""`spineseg.resend` sends only the SEGs the report recorded: a plain file of the output folder whose
SOP class and UIDs are those in report.json; anything else sends nothing."""
import json
import os
import shutil
import subprocess
import sys

import pydicom
import pytest

from conftest import ROOT
from fake_pacs import FakeStow


def make_output(out, seg, name="series-001_seg.dcm"):
    """An output folder as a run that could not deliver leaves it."""
    out.mkdir()
    shutil.copy(seg, out / "series-001_seg.dcm")
    ds = pydicom.dcmread(seg, stop_before_pixels=True)
    report = {"status": "failed", "exit_code": 5, "error": {"code": "DELIVERY_FAILED"},
              "processed": [{"outputs": {"seg": name}, "seg": {"sop_instance_uid": str(ds.SOPInstanceUID),
                                                              "series_instance_uid": str(ds.SeriesInstanceUID)}}]}
    (out / "report.json").write_text(json.dumps(report))
    return report


def resend(out, url):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPINESEG_", "HOLOSCAN_"))}
    env["SPINESEG_STOW_URL"] = url
    return subprocess.run([sys.executable, "-m", "spineseg.resend", str(out)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)


def test_resend_sends_the_recorded_seg(tmp_path, small_seg):
    make_output(tmp_path / "out", small_seg)
    uid = str(pydicom.dcmread(small_seg, stop_before_pixels=True).SOPInstanceUID)
    with FakeStow("ok", uid) as pacs:
        proc = resend(tmp_path / "out", pacs.url)
        sent = len(pacs.requests)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sent == 1 and json.loads((tmp_path / "out" / "report.json").read_text())["status"] == "succeeded"


def _absolute(out, seg, tmp):
    shutil.copy(seg, tmp / "elsewhere_seg.dcm")
    return str(tmp / "elsewhere_seg.dcm")


def _dotdot(out, seg, tmp):
    shutil.copy(seg, tmp / "elsewhere_seg.dcm")
    return "../elsewhere_seg.dcm"


def _symlink(out, seg, tmp):
    (out / "series-001_seg.dcm").unlink()
    os.symlink(seg, out / "series-001_seg.dcm")
    return "series-001_seg.dcm"


def _swapped_image(out, seg, tmp):
    mr = sorted((seg.parent / "dicom").glob("*.dcm"))[0]       # another object of the same patient
    shutil.copy(mr, out / "series-001_seg.dcm")
    return "series-001_seg.dcm"


def _swapped_uid(out, seg, tmp):
    ds = pydicom.dcmread(out / "series-001_seg.dcm")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(out / "series-001_seg.dcm")
    return "series-001_seg.dcm"


@pytest.mark.parametrize("tamper", [_absolute, _dotdot, _symlink, _swapped_image, _swapped_uid],
                         ids=lambda f: f.__name__.strip("_"))
def test_resend_sends_nothing_that_the_report_did_not_record(tmp_path, small_seg, tamper):
    out = tmp_path / "out"
    report = make_output(out, small_seg)
    report["processed"][0]["outputs"]["seg"] = tamper(out, small_seg, tmp_path)
    (out / "report.json").write_text(json.dumps(report))
    with FakeStow("ok", report["processed"][0]["seg"]["sop_instance_uid"]) as pacs:
        proc = resend(out, pacs.url)
        sent = len(pacs.requests)
    assert sent == 0, "a file the report did not record was sent"
    assert proc.returncode == 3 and "SEG_MISMATCH" in proc.stderr, proc.stderr[-2000:]


def test_resend_sends_seg_sr_and_review_picture_and_refuses_a_swapped_sr(tmp_path, small_seg):
    """A report listing SEG, SR and the Secondary Capture series' two images (review picture and measurement
    table, one series): all four go; an SR replaced by another file, none."""
    out = tmp_path / "out"
    make_output(out, small_seg)
    seg = pydicom.dcmread(small_seg)
    records = [{"kind": "seg", "file": "series-001_seg.dcm", "sop_class_uid": str(seg.SOPClassUID),
                "sop_instance_uid": str(seg.SOPInstanceUID), "series_instance_uid": str(seg.SeriesInstanceUID)}]
    for kind, suffix, series in (("sr", "1", "1"), ("sc", "2", "2"), ("sc_table", "3", "2")):
        other = pydicom.dcmread(small_seg)
        other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = f"{seg.SOPInstanceUID}.{suffix}"
        other.SeriesInstanceUID = f"{seg.SeriesInstanceUID}.{series}"
        other.save_as(out / f"series-001_{kind}.dcm")
        records.append({"kind": kind, "file": f"series-001_{kind}.dcm", "sop_class_uid": str(other.SOPClassUID),
                        "sop_instance_uid": str(other.SOPInstanceUID),
                        "series_instance_uid": str(other.SeriesInstanceUID)})
    report = json.loads((out / "report.json").read_text())
    report["processed"][0]["dicom_outputs"] = records
    (out / "report.json").write_text(json.dumps(report))
    from spineseg.resend import recorded_objects
    assert [p.name for p in recorded_objects(out, report)] == [r["file"] for r in records]
    uids = [r["sop_instance_uid"] for r in records]
    with FakeStow("ok", *uids) as pacs:
        proc = resend(out, pacs.url)
        sent = len(pacs.requests)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sent >= 1 and json.loads((out / "report.json").read_text())["status"] == "succeeded"
    # the SR replaced by a copy of the SEG: nothing at all is sent
    shutil.copy(small_seg, out / "series-001_sr.dcm")
    with FakeStow("ok", *uids) as pacs:
        proc = resend(out, pacs.url)
        sent = len(pacs.requests)
    assert proc.returncode == 3 and "SEG_MISMATCH" in proc.stderr and "SR this run wrote" in proc.stderr
    assert sent == 0


def test_resend_refuses_a_folder_a_run_holds(tmp_path, small_seg):
    from spineseg.outputs.output_folder import lock_output
    make_output(tmp_path / "out", small_seg)
    uid = str(pydicom.dcmread(small_seg, stop_before_pixels=True).SOPInstanceUID)
    with FakeStow("ok", uid) as pacs, lock_output(tmp_path / "out"):
        proc = resend(tmp_path / "out", pacs.url)
        sent = len(pacs.requests)
    assert proc.returncode == 4 and "OUTPUT_BUSY" in proc.stderr and sent == 0, proc.stderr[-2000:]
