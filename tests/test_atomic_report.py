"""Atomic outputs and the report: a failure never leaves a partial file where a consumer looks."""
import json
import os

import pytest

from spineseg.outputs.atomic import write_atomic, write_json_atomic
from spineseg.errors import DeliveryError, InputError
from spineseg.report import RunReport


def test_a_crash_while_writing_leaves_nothing_behind(tmp_path):
    target = tmp_path / "series-005_seg.dcm"

    def crash(fh):
        fh.write(b"half a SEG")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        write_atomic(target, crash)
    assert list(tmp_path.iterdir()) == []


def test_a_crash_keeps_the_previous_complete_file(tmp_path):
    target = tmp_path / "report.json"
    write_json_atomic(target, {"status": "succeeded"})
    with pytest.raises(ValueError):
        write_atomic(target, lambda fh: (fh.write(b"{"), (_ for _ in ()).throw(ValueError("boom"))))
    assert json.loads(target.read_text()) == {"status": "succeeded"}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_outputs_are_readable_by_other_users(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "r.json", {})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("error,exit_code,code", [
    (None, 0, None),
    (InputError("EMPTY_INPUT", "empty"), 3, "EMPTY_INPUT"),
    (DeliveryError("DELIVERY_FAILED", "down"), 5, "DELIVERY_FAILED"),
    (RuntimeError("bug"), 4, "INTERNAL_ERROR"),
])
def test_report_status_and_exit_codes(tmp_path, error, exit_code, code):
    report = RunReport(tmp_path)
    with report.stage("scan"):
        pass
    assert report.finish(error) == exit_code
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["exit_code"] == exit_code and "scan" in data["timings_seconds"]
    assert data["status"] == ("succeeded" if error is None else "failed")
    assert (data["error"] or {}).get("code") == code
