"""The output folder belongs to one run: a lock, previous results moved aside, partial files removed,
a report on SIGTERM/SIGINT, and coded errors when the folder cannot take the results."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from spineseg.outputs.atomic import write_atomic
from spineseg.errors import SpineSegError
from spineseg.outputs.output_folder import PREVIOUS, clear_previous, lock_output


def run_app(inp, out, timeout=600, background=False, engine="plain"):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPINESEG_", "HOLOSCAN_"))}
    cmd = [sys.executable, str(ROOT / "app"), "-i", str(inp), "-o", str(out), "--engine", engine]
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_second_run_fails_busy_and_leaves_the_owners_report(tmp_path):
    out, inp = tmp_path / "out", tmp_path / "in"
    inp.mkdir()
    with lock_output(out):                       # the first run, still going
        (out / "report.json").write_text('{"status": "running", "owner": "first"}')
        proc = run_app(inp, out, timeout=120)
        assert json.loads((out / "report.json").read_text())["owner"] == "first"
    assert proc.returncode == 4, proc.stderr[-2000:]
    (refused,) = out.glob("report.refused-*.json")
    data = json.loads(refused.read_text())
    assert data["error"]["code"] == "OUTPUT_BUSY" and data["status"] == "failed"


def test_the_lock_is_exclusive_between_processes(tmp_path):
    code = ("import sys; from spineseg.outputs.output_folder import lock_output\n"
            "try:\n    lock_output(sys.argv[1]).__enter__()\nexcept Exception as e:\n    print(e.code)\n")
    with lock_output(tmp_path):
        held = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert held.stdout.strip() == "OUTPUT_BUSY" and free.stdout.strip() == ""


def test_a_run_moves_the_previous_results_aside_and_removes_partial_files(tmp_path):
    for name in ("report.json", "series-001_seg.dcm", "series-001_labels.nii.gz", ".series-001_seg.dcm.x1.partial"):
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("not ours")
    done = clear_previous(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS, "notes.txt"]
    assert sorted(p.name for p in (tmp_path / PREVIOUS).iterdir()) == ["report.json", "series-001_labels.nii.gz",
                                                                       "series-001_seg.dcm"]
    assert done["partial_files_removed"] == 1


def test_a_failed_run_does_not_leave_the_previous_seg_beside_its_report(tmp_path):
    out, inp = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    inp.mkdir()
    (out / "series-001_seg.dcm").write_text("previous SEG")
    (out / "report.json").write_text('{"status": "succeeded"}')
    proc = run_app(inp, out, timeout=120)
    report = json.loads((out / "report.json").read_text())
    assert proc.returncode == 3 and report["status"] == "failed" and report["error"]["code"] == "EMPTY_INPUT"
    assert not (out / "series-001_seg.dcm").exists() and (out / PREVIOUS / "series-001_seg.dcm").exists()


@pytest.mark.parametrize("engine,signum", [("plain", signal.SIGTERM), ("plain", signal.SIGINT),
                                           ("holoscan", signal.SIGTERM)], ids=["plain-SIGTERM", "plain-SIGINT",
                                                                               "holoscan-SIGTERM"])
def test_a_signal_ends_the_run_with_an_interrupted_report(tmp_path, phantom_study, engine, signum):
    """The signal comes once the models are loaded, in the middle of the run (with Holoscan: while its
    graph runs, after it installed its own signal handlers)."""
    out = tmp_path / "out"
    proc = run_app(phantom_study["dicom_files"][0].parent, out, background=True, engine=engine)
    lines, mid_run = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "stage load_models" in line:
                mid_run.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert mid_run.wait(180), "".join(lines[-30:])
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signum)
        t0 = time.monotonic()
        proc.wait(60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
    report = json.loads((out / "report.json").read_text())
    assert proc.returncode == 4, "".join(lines[-30:])
    assert report["status"] == "failed" and report["error"]["code"] == "INTERRUPTED"
    assert not list(out.glob("*_seg.dcm")) and not list(out.glob(".*.partial"))
    assert took < 10, took


def test_an_output_folder_that_cannot_be_made_is_a_coded_error(tmp_path):
    (tmp_path / "afile").write_text("")
    inp = tmp_path / "in"
    inp.mkdir()
    proc = run_app(inp, tmp_path / "afile" / "out", timeout=120)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "OUTPUT_NOT_WRITABLE" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads(next(ln for ln in proc.stderr.splitlines() if ln.startswith("{")))
    assert report["error"]["code"] == "OUTPUT_NOT_WRITABLE"


def test_a_full_disk_is_disk_full_and_leaves_no_partial_file(tmp_path):
    def write_to_full_device(tmp):
        with open("/dev/full", "wb") as dev:    # the kernel answers every write with ENOSPC
            dev.write(b"x" * 4096)
            dev.flush()
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with pytest.raises(SpineSegError) as err:
        write_atomic(tmp_path / "series-001_seg.dcm", write_to_full_device)
    assert err.value.code == "DISK_FULL" and err.value.exit_code == 4
    assert list(tmp_path.iterdir()) == []


def test_a_file_system_without_locks_runs_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with lock_output(tmp_path):
        entered = True
    assert entered and any("does not support locks" in r.getMessage() for r in caplog.records)
