"""The application end to end, as a subprocess: DICOM in, SEG + label map + report out."""
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import ROOT, run_dciodvfy
from helpers import app_report, decode_seg, run_app, spine_dice, write_ct_copy
from spineseg.input.dicom_input import load_volume, scan_dicom


@pytest.fixture(scope="module")
def e2e_run(phantom_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e_out")
    proc = run_app(phantom_study["dicom_files"][0].parent, out)
    return proc, app_report(out), out


def test_app_succeeds_and_reports(e2e_run, phantom_study):
    proc, report, out = e2e_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["status"] == "succeeded" and report["error"] is None and report["exit_code"] == 0
    src = pydicom.dcmread(phantom_study["dicom_files"][0], stop_before_pixels=True)
    entry = report["processed"][0]
    assert entry["study_instance_uid"] == src.StudyInstanceUID
    assert entry["series_instance_uid"] == src.SeriesInstanceUID
    names = {s["name"] for s in entry["structures"]}
    assert any(n.endswith(" vertebra") for n in names) and any(n.endswith(" disc") for n in names), names
    assert all(s["voxels"] > 0 and s["volume_mm3"] > 0 for s in entry["structures"])
    for stage in ("scan", "select", "load_models", "step1_network", "step2_network", "write_seg"):
        assert report["timings_seconds"][stage] >= 0
    assert report["delivery"]["configured"] is False
    assert sorted(report["outputs"]) == sorted(p.name for p in out.iterdir()
                                               if p.name != "report.json" and not p.name.startswith("."))
    assert any("PHANTOM" in w for w in report["warnings"])
    # no patient name or ID anywhere in the report or at INFO level in the log
    text = json.dumps(report) + proc.stderr + proc.stdout
    assert str(src.PatientName) not in text and str(src.PatientID) not in text
    # one line per stage with its duration
    assert "stage step1_network" in proc.stderr and "stage write_seg" in proc.stderr


def test_app_seg_is_valid_and_matches_label_map_and_truth(e2e_run, phantom_study):
    _, report, out = e2e_run
    seg_path = out / report["processed"][0]["outputs"]["seg"]
    errors, _ = run_dciodvfy(seg_path)
    assert errors == []
    vol = load_volume(scan_dicom(phantom_study["dicom_files"][0].parent).series[0])
    decoded = decode_seg(seg_path, vol.datasets)
    label_map = nib.load(out / report["processed"][0]["outputs"]["label_map"])
    assert np.allclose(label_map.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine)
    assert np.array_equal(decoded, np.asanyarray(label_map.dataobj))
    truth = nib.load(phantom_study["ground_truth"])
    assert np.allclose(truth.affine, label_map.affine, atol=1e-3)     # same world grid
    # the SEG lands on the phantom's spine in world space (model accuracy: bench/phantom_accuracy.py)
    assert spine_dice(decoded, np.asanyarray(truth.dataobj)) > 0.5


def test_environment_variables_drive_a_map_style_run(phantom_study, tmp_path):
    env = {"HOLOSCAN_INPUT_PATH": str(phantom_study["dicom_files"][0].parent),
           "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "out"), "HOLOSCAN_MODEL_PATH": str(ROOT / "models"),
           "SPINESEG_SEG_TYPE": "LABELMAP"}
    proc = run_app(engine="plain", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processed"][0]["seg"]["segmentation_type"] == "LABELMAP"


@pytest.mark.parametrize("case,code", [
    ("empty", "EMPTY_INPUT"),
    ("no_dicom", "NO_DICOM"),
    ("ct_only", "NO_MR_SERIES"),
    ("missing", "INPUT_NOT_FOUND"),
])
def test_bad_input_exits_3_with_a_report(tmp_path, phantom_study, case, code):
    src = tmp_path / "in"
    if case == "empty":
        src.mkdir()
    elif case == "no_dicom":
        src.mkdir()
        (src / "readme.txt").write_text("these are not images")
        (src / "scan.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    elif case == "ct_only":
        write_ct_copy(phantom_study["dicom_files"], src)
    out = tmp_path / "out"
    proc = run_app(src, out)
    report = app_report(out)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert report["status"] == "failed" and report["error"]["code"] == code
    assert report["error"]["message"]
    assert not [p for p in out.iterdir() if p.suffix in (".dcm", ".gz") or p.name.endswith(".partial")]


def test_usage_error_without_paths(tmp_path):
    proc = run_app(timeout=120)
    assert proc.returncode == 2 and "required" in proc.stderr


def test_real_t2_series(real_t2_dicom, tmp_path):
    """The real cervical T2: either a SEG on exactly the source grid, or a clean, specific failure."""
    proc = run_app(real_t2_dicom, tmp_path / "out")
    report = app_report(tmp_path / "out")
    assert report is not None
    if proc.returncode != 0:
        # the phantom-trained test weights may not recognise real anatomy; that must fail cleanly
        assert proc.returncode == 3 and report["error"]["code"] in ("NO_SPINE_FOUND", "NO_DISCS_FOUND", "NO_LEVEL_LANDMARK", "LABELLING_FAILED")
        pytest.skip(f"phantom models found no spine in the real series ({report['error']['code']})")
    vol = load_volume(scan_dicom(real_t2_dicom).series[0])
    entry = report["processed"][0]
    label_map = nib.load(tmp_path / "out" / entry["outputs"]["label_map"])
    assert label_map.shape == vol.array.shape
    assert np.allclose(label_map.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine)
    if "seg" in entry["outputs"]:
        seg_path = tmp_path / "out" / entry["outputs"]["seg"]
        assert run_dciodvfy(seg_path)[0] == []
        assert np.array_equal(decode_seg(seg_path, vol.datasets), np.asanyarray(label_map.dataobj))
