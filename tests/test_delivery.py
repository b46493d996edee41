"""Delivery to a real Orthanc: STOW-RS and C-STORE, retries, refusals, and re-sending later."""
import json
import subprocess
import sys
import threading
import time

import pydicom
import pytest

from conftest import ROOT, OrthancServer, free_port, require_orthanc
from helpers import app_env, run_app
from spineseg.delivery.send import CStoreDestination, RetryPolicy, StowDestination, deliver
from spineseg.settings import destinations_from_settings


@pytest.fixture(scope="module")
def seg_path(phantom_seg):
    return phantom_seg


def test_destinations_come_from_environment_and_hide_secrets():
    env = {"SPINESEG_STOW_URL": "https://user:pw@pacs.example.org:8443/dicom-web", "SPINESEG_STOW_PASSWORD": "s3cret",
           "SPINESEG_STOW_USER": "ai", "SPINESEG_CSTORE_HOST": "10.1.2.3", "SPINESEG_CSTORE_PORT": "11112",
           "SPINESEG_CSTORE_AET": "PACS"}
    stow, cstore = destinations_from_settings({}, env)
    assert isinstance(stow, StowDestination) and stow.user == "ai" and stow.verify_tls is True
    assert stow.name == "https://pacs.example.org:8443/dicom-web"
    assert "s3cret" not in repr(stow) and "pw" not in stow.name
    assert isinstance(cstore, CStoreDestination) and cstore.port == 11112 and cstore.called_aet == "PACS"
    assert cstore.calling_aet == "SPINESEG"
    assert destinations_from_settings({}, {}) == []


def test_retry_policy_backs_off_exponentially_to_a_cap():
    gen = RetryPolicy(initial_delay=0.5, max_delay=3).delays()
    assert [next(gen) for _ in range(5)] == [0.5, 1, 2, 3, 3]


def test_stow_delivers_and_reads_back(orthanc, seg_path):
    dest = StowDestination(orthanc.url, OrthancServer.USER, OrthancServer.PASSWORD)
    result = deliver([seg_path], dest, RetryPolicy(total_seconds=20))
    assert result["status"] == "delivered" and result["attempts"] == 1
    uid = pydicom.dcmread(seg_path).SOPInstanceUID
    assert len(orthanc.find(uid)) == 1
    again = deliver([seg_path], dest, RetryPolicy(total_seconds=20))   # same SEG twice: harmless
    assert again["status"] == "delivered" and len(orthanc.find(uid)) == 1


def test_wrong_password_fails_at_once_without_retry_storm(orthanc, seg_path):
    dest = StowDestination(orthanc.url, OrthancServer.USER, "not-the-password")
    t0 = time.monotonic()
    result = deliver([seg_path], dest, RetryPolicy(initial_delay=1, total_seconds=60))
    assert result["status"] == "failed" and result["attempts"] == 1 and result["retryable"] is False
    assert "401" in result["reason"] and time.monotonic() - t0 < 10
    assert "not-the-password" not in json.dumps(result)


def test_c_store_delivers(orthanc, seg_path, tmp_path):
    dest = CStoreDestination("127.0.0.1", orthanc.dicom_port, "ORTHANC")
    result = deliver([seg_path], dest, RetryPolicy(total_seconds=20))
    assert result["status"] == "delivered", result
    assert len(orthanc.find(pydicom.dcmread(seg_path).SOPInstanceUID)) == 1


def test_pacs_down_at_start_then_up_is_delivered(seg_path, tmp_path):
    require_orthanc()
    server = OrthancServer(tmp_path / "late")
    starter = threading.Timer(2.0, server.start)
    starter.start()
    try:
        dest = StowDestination(server.url, OrthancServer.USER, OrthancServer.PASSWORD, timeout=5)
        result = deliver([seg_path], dest, RetryPolicy(max_attempts=8, initial_delay=0.5, max_delay=4,
                                                       total_seconds=40))
        assert result["status"] == "delivered", result
        assert result["attempts"] > 1
        assert len(server.find(pydicom.dcmread(seg_path).SOPInstanceUID)) == 1
    finally:
        starter.join()
        server.stop()


def test_cstore_peer_down_is_bounded(seg_path):
    dest = CStoreDestination("127.0.0.1", free_port(), "NOBODY", timeout=2)
    t0 = time.monotonic()
    result = deliver([seg_path], dest, RetryPolicy(max_attempts=3, initial_delay=0.2, total_seconds=10))
    assert result["status"] == "failed" and result["retryable"] is True and result["attempts"] == 3
    assert time.monotonic() - t0 < 15


def test_app_keeps_results_when_pacs_is_down_and_resend_delivers_later(orthanc, phantom_study, tmp_path):
    out = tmp_path / "out"
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    env = dict(SPINESEG_STOW_URL=down, SPINESEG_STOW_USER=OrthancServer.USER,
               SPINESEG_STOW_PASSWORD=OrthancServer.PASSWORD, SPINESEG_DELIVERY_MAX_SECONDS="4",
               SPINESEG_DELIVERY_INITIAL_DELAY="0.5")
    t0 = time.monotonic()
    proc = run_app(phantom_study["dicom_files"][0].parent, out, env=env)
    assert proc.returncode == 5, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["error"]["code"] == "DELIVERY_FAILED" and report["status"] == "failed"
    dest = report["delivery"]["destinations"][0]
    assert dest["status"] == "failed" and dest["retryable"] is True and dest["attempts"] >= 2
    seg_file = out / report["processed"][0]["outputs"]["seg"]
    assert seg_file.is_file() and run_ok(seg_file)
    assert OrthancServer.PASSWORD not in (out / "report.json").read_text() + proc.stderr + proc.stdout
    assert time.monotonic() - t0 < 600

    resend = [sys.executable, "-m", "spineseg.resend", str(out)]
    env_bad = dict(env, SPINESEG_STOW_URL=orthanc.url, SPINESEG_STOW_PASSWORD="wrong")
    proc = subprocess.run(resend, capture_output=True, text=True, timeout=120, env=app_env(env_bad), cwd=ROOT)
    assert proc.returncode == 5 and "401" in (out / "report.json").read_text()
    env_ok = dict(env, SPINESEG_STOW_URL=orthanc.url)
    proc = subprocess.run(resend, capture_output=True, text=True, timeout=120, env=app_env(env_ok), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "succeeded" and report["delivery"]["destinations"][0]["status"] == "delivered"
    assert len(orthanc.find(pydicom.dcmread(seg_file).SOPInstanceUID)) == 1
    # the measurement SR and the review Secondary Capture (picture and measurement table) travel with the SEG:
    # Orthanc holds all four
    records = report["processed"][0]["dicom_outputs"]
    assert [r["kind"] for r in records] == ["seg", "sr", "sc", "sc_table"]
    for r in records:
        found = orthanc.find(r["sop_instance_uid"])
        assert len(found) == 1, r
        assert found[0]["00080016"]["Value"][0] == r["sop_class_uid"]


def run_ok(path) -> bool:
    ds = pydicom.dcmread(path)
    return ds.Modality == "SEG" and len(ds.SegmentSequence) > 0


def test_resend_without_a_report_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spineseg.resend", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=app_env())
    assert proc.returncode == 3 and "NO_REPORT" in proc.stderr
