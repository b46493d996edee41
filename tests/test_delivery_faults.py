"""Delivery against misbehaving loopback peers: only a real DICOMweb answer listing our instance counts
as stored, the time bounds hold against trickling or silent peers, any fault is a DELIVERY_FAILED entry,
and secrets (bad ones included) never reach a message, a log or the report."""
import base64
import json
import logging
import time

import pydicom
import pytest

from fake_pacs import FakeStoreSCP, FakeStow, elapsed
from helpers import run_app
from spineseg.delivery import send as delivery
from spineseg.delivery.send import CStoreDestination, RetryPolicy, StowDestination, deliver
from spineseg.errors import SpineSegError
from spineseg.settings import destinations_from_settings, policy_from_settings

TOKEN = "tok-3f9a1c77e2"


def uid_of(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.mark.parametrize("mode", ["html", "badjson", "notype", "other"])
def test_an_answer_that_does_not_list_our_instance_is_not_delivered(small_seg, mode):
    with FakeStow(mode, uid_of(small_seg)) as pacs:
        entry = deliver([small_seg], StowDestination(pacs.url, timeout=5), RetryPolicy(total_seconds=10))
    assert entry["status"] == "failed" and entry["retryable"] is False and entry["attempts"] == 1, entry
    assert "instances" not in entry


def test_a_dicomweb_answer_listing_our_instance_is_delivered(small_seg):
    with FakeStow("ok", uid_of(small_seg)) as pacs:
        entry = deliver([small_seg], StowDestination(pacs.url, timeout=5), RetryPolicy(total_seconds=10))
    assert entry["status"] == "delivered", entry
    assert entry["instances"] == [{"sop_instance_uid": uid_of(small_seg), "status": "stored"}]


@pytest.mark.parametrize("gap", [0.5, 5.0])
def test_a_trickling_pacs_is_cut_at_the_total_bound(small_seg, gap):
    """One byte every ``gap`` s never trips a 30 s socket timeout; the 3 s total bound must hold."""
    with FakeStow("trickle", gap=gap) as pacs:
        t0 = time.monotonic()
        entry = deliver([small_seg], StowDestination(pacs.url, timeout=30), RetryPolicy(total_seconds=3))
        took = elapsed(t0)
    assert entry["status"] == "failed" and entry["retryable"] is True, entry
    assert "3 s delivery bound" in entry["reason"] and took < 3 + 1, (entry["reason"], took)


def test_a_silent_pacs_does_not_overrun_the_bound_by_a_timeout(small_seg):
    with FakeStow("silent") as pacs:
        t0 = time.monotonic()
        entry = deliver([small_seg], StowDestination(pacs.url, timeout=2),
                        RetryPolicy(max_attempts=10, initial_delay=0.2, total_seconds=3))
        took = elapsed(t0)
    assert entry["status"] == "failed" and entry["attempts"] >= 2, entry
    assert took < 3 + 1, took


def test_a_silent_c_store_peer_is_cut_at_the_total_bound(small_seg):
    with FakeStoreSCP(status=None) as scp:
        t0 = time.monotonic()
        entry = deliver([small_seg], CStoreDestination("127.0.0.1", scp.port, "FAKEPACS", timeout=30),
                        RetryPolicy(max_attempts=3, initial_delay=0.2, total_seconds=2))
        took = elapsed(t0)
    assert entry["status"] == "failed" and took < 2 + 1, (entry, took)


@pytest.mark.parametrize("status,attempts,retryable", [(0xC000, 1, False), (0xA900, 1, False), (0x0122, 1, False),
                                                       (0xA700, 2, True), (0x0000, 1, None)])
def test_c_store_statuses_permanent_refusals_are_not_retried(small_seg, status, attempts, retryable):
    with FakeStoreSCP(status=status) as scp:
        entry = deliver([small_seg], CStoreDestination("127.0.0.1", scp.port, "FAKEPACS", timeout=5),
                        RetryPolicy(max_attempts=2, initial_delay=0.1, total_seconds=10))
        calls = scp.calls
    assert entry["attempts"] == attempts == calls, entry
    assert entry.get("retryable") is retryable and entry["status"] == ("delivered" if status == 0 else "failed")


def test_a_peer_that_does_not_take_seg_is_a_refusal_not_a_crash(small_seg):
    from pynetdicom.sop_class import CTImageStorage
    with FakeStoreSCP(contexts=[CTImageStorage]) as scp:
        entry = deliver([small_seg], CStoreDestination("127.0.0.1", scp.port, "FAKEPACS", timeout=5),
                        RetryPolicy(max_attempts=3, initial_delay=0.1, total_seconds=10))
    assert entry["status"] == "failed" and entry["retryable"] is False and entry["attempts"] == 1, entry


def test_a_rejected_association_is_not_retried(small_seg):
    with FakeStoreSCP(require_calling_aet=["SOMEONE"]) as scp:
        entry = deliver([small_seg], CStoreDestination("127.0.0.1", scp.port, "FAKEPACS", timeout=5),
                        RetryPolicy(max_attempts=3, initial_delay=0.1, total_seconds=10))
    assert entry["status"] == "failed" and entry["retryable"] is False and entry["attempts"] == 1, entry


def test_a_transient_association_rejection_is_retried(small_seg):
    """A peer at its association limit rejects with result 2 (transient): worth retrying, bounded."""
    from pynetdicom import AE
    from pynetdicom.sop_class import SegmentationStorage
    with FakeStoreSCP(max_associations=1) as scp:
        holder = AE(ae_title="HOLDER")
        holder.add_requested_context(SegmentationStorage)
        held = holder.associate("127.0.0.1", scp.port, ae_title="FAKEPACS")
        try:
            assert held.is_established
            entry = deliver([small_seg], CStoreDestination("127.0.0.1", scp.port, "FAKEPACS", timeout=5),
                            RetryPolicy(max_attempts=2, initial_delay=0.1, total_seconds=10))
        finally:
            held.release()
    assert entry["status"] == "failed" and entry["retryable"] is True and entry["attempts"] == 2, entry
    assert "transient" in entry["reason"]


def test_any_exception_is_a_failed_entry_without_secrets(small_seg, monkeypatch):
    def explode(dest, datasets, attempt):
        raise TypeError(f"library bug with header Bearer {TOKEN} for http://u:pw123@h/")
    monkeypatch.setattr(delivery, "_stow_once", explode)
    entry = deliver([small_seg], StowDestination("http://127.0.0.1:9/dicom-web", token=TOKEN), RetryPolicy())
    assert entry["status"] == "failed" and entry["attempts"] == 1 and "TypeError" in entry["reason"]
    assert TOKEN not in json.dumps(entry) and "pw123" not in json.dumps(entry)


def test_an_unreadable_seg_is_a_failed_entry(tmp_path):
    bad = tmp_path / "series-001_seg.dcm"
    bad.write_bytes(b"not dicom")
    entry = deliver([bad], StowDestination("http://127.0.0.1:9/dicom-web"), RetryPolicy())
    assert entry["status"] == "failed" and entry["attempts"] == 0


def test_pipeline_turns_any_delivery_fault_into_delivery_failed(small_seg, tmp_path, monkeypatch):
    from spineseg.pipeline import deliver_results
    from spineseg.report import RunReport
    from spineseg.settings import AppConfig
    monkeypatch.setattr(delivery, "_stow_once", lambda *a: (_ for _ in ()).throw(MemoryError("odd")))
    cfg = AppConfig(tmp_path, small_seg.parent, destinations=[StowDestination("http://127.0.0.1:9/x")])
    report = RunReport(small_seg.parent)
    with pytest.raises(SpineSegError) as err:
        deliver_results([{"outputs": {"seg": small_seg.name}}], cfg, report)
    assert err.value.code == "DELIVERY_FAILED" and err.value.exit_code == 5


@pytest.mark.parametrize("var", ["SPINESEG_STOW_TOKEN", "SPINESEG_STOW_PASSWORD"])
def test_a_secret_with_a_newline_is_a_bad_setting_that_does_not_quote_it(var):
    env = {"SPINESEG_STOW_URL": "https://pacs.example.org/dicom-web", "SPINESEG_STOW_USER": "ai", var: TOKEN + "\n"}
    with pytest.raises(SpineSegError) as err:
        destinations_from_settings({}, env)
    assert err.value.code == "BAD_SETTING" and var in err.value.message
    assert TOKEN not in err.value.message


def test_url_user_info_moves_into_auth_and_never_reaches_a_log(small_seg, caplog):
    with FakeStow("ok", uid_of(small_seg)) as pacs:
        url = pacs.url.replace("http://", "http://ai:p%40ss-99@")
        (dest,) = destinations_from_settings({}, {"SPINESEG_STOW_URL": url})
        assert (dest.user, dest.password, dest.url) == ("ai", "p@ss-99", pacs.url)
        with caplog.at_level(logging.DEBUG):
            entry = deliver([small_seg], dest, RetryPolicy(total_seconds=10))
        sent = pacs.requests[0]["headers"]["Authorization"]
    assert entry["status"] == "delivered"
    assert sent == "Basic " + base64.b64encode(b"ai:p@ss-99").decode()
    logged = "\n".join(r.getMessage() for r in caplog.records) + json.dumps(entry)
    assert "p@ss-99" not in logged and "p%40ss-99" not in logged and "ai:" not in logged


@pytest.mark.parametrize("var,value", [("SPINESEG_DELIVERY_MAX_ATTEMPTS", "many"), ("SPINESEG_DELIVERY_MAX_ATTEMPTS", "0"),
                                       ("SPINESEG_DELIVERY_MAX_SECONDS", "nan"), ("SPINESEG_DELIVERY_MAX_SECONDS", "-1"),
                                       ("SPINESEG_DELIVERY_INITIAL_DELAY", "inf")])
def test_bad_retry_numbers_are_bad_settings(var, value):
    with pytest.raises(SpineSegError) as err:
        policy_from_settings({}, {var: value})
    assert err.value.code == "BAD_SETTING" and var in err.value.message


@pytest.mark.parametrize("env", [{"SPINESEG_CSTORE_PORT": "70000"}, {"SPINESEG_CSTORE_PORT": "x"},
                                 {"SPINESEG_CSTORE_AET": "A" * 17}, {"SPINESEG_CSTORE_AET": "A\nB"}])
def test_bad_c_store_settings_are_bad_settings(env):
    with pytest.raises(SpineSegError) as err:
        destinations_from_settings({}, {"SPINESEG_CSTORE_HOST": "127.0.0.1", **env})
    assert err.value.code == "BAD_SETTING"


def test_an_interrupted_delivery_ends_the_run_instead_of_retrying(small_seg, monkeypatch):
    from spineseg.outputs.output_folder import Interrupted
    calls = []

    def interrupted(dest, datasets, attempt):
        calls.append(1)
        raise Interrupted("INTERRUPTED", "stopped by SIGTERM")
    monkeypatch.setattr(delivery, "_stow_once", interrupted)
    with pytest.raises(Interrupted):
        deliver([small_seg], StowDestination("http://127.0.0.1:9/dicom-web"), RetryPolicy(max_attempts=5))
    assert calls == [1]


def test_the_app_refuses_a_token_with_a_newline_before_any_work(tmp_path):
    (tmp_path / "in").mkdir()
    env = {"SPINESEG_STOW_URL": "http://127.0.0.1:9/dicom-web", "SPINESEG_STOW_TOKEN": TOKEN + "\n"}
    proc = run_app(tmp_path / "in", tmp_path / "out", engine="plain", env=env, timeout=120)
    text = (tmp_path / "out" / "report.json").read_text()
    report = json.loads(text)
    assert proc.returncode == 4 and report["error"]["code"] == "BAD_SETTING", proc.stderr[-2000:]
    assert "SPINESEG_STOW_TOKEN" in report["error"]["message"]
    assert TOKEN not in text + proc.stderr + proc.stdout
    assert report["delivery"]["configured"] is not False      # it never claims nothing was configured
