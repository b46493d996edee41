"""The output folder belongs to one run: a lock, previous results moved aside, partial files removed,
a report on SIGTERM/SIGINT, and coded errors when the folder cannot take the results."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MODELS, ROOT
from helpers import run_app
from spineseg.outputs.atomic import reopen_results, write_atomic
from spineseg.errors import SpineSegError
from spineseg.outputs.output_folder import PREVIOUS, clear_previous, lock_output


def test_a_second_run_fails_busy_and_leaves_the_owners_report(tmp_path):
    out, inp = tmp_path / "out", tmp_path / "in"
    inp.mkdir()
    with lock_output(out):                       # the first run, still going
        (out / "report.json").write_text('{"status": "running", "owner": "first"}')
        proc = run_app(inp, out, engine="plain", timeout=120)
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
    proc = run_app(inp, out, engine="plain", timeout=120)
    report = json.loads((out / "report.json").read_text())
    assert proc.returncode == 3 and report["status"] == "failed" and report["error"]["code"] == "EMPTY_INPUT"
    assert not (out / "series-001_seg.dcm").exists() and (out / PREVIOUS / "series-001_seg.dcm").exists()


# every stage boundary of a one-series run, in order; SPINESEG_TEST_SIGNAL_AT signals as the stage begins
STAGES = ["scan", "select", "load_models", "load_pixels", "write_nifti", "write_seg", "measure", "write_sr",
          "review_image", "measurement_table", "deliver"]
# what the run has placed in the folder when each stage begins (a name ends so)
WRITTEN_BEFORE = {"write_seg": ["_labels.nii.gz"], "measure": ["_labels.nii.gz", "_seg.dcm"],
                  "deliver": ["_labels.nii.gz", "_seg.dcm", "_measurements.json", "_measurements_sr.dcm",
                              "_review.png", "_review_sc.dcm", "_measurements_table.png",
                              "_measurements_table_sc.dcm"]}
WRITTEN_BEFORE["write_sr"] = WRITTEN_BEFORE["measure"] + ["_measurements.json"]
WRITTEN_BEFORE["review_image"] = WRITTEN_BEFORE["write_sr"] + ["_measurements_sr.dcm"]
WRITTEN_BEFORE["measurement_table"] = WRITTEN_BEFORE["review_image"] + ["_review.png", "_review_sc.dcm"]


def assert_interrupted_and_consistent(out, report, stage):
    """INTERRUPTED, and the folder holds exactly what the report lists: no output, nothing referencing one."""
    assert report["status"] == "failed" and report["error"]["code"] == "INTERRUPTED", report["error"]
    left = sorted(p.name for p in out.iterdir() if p.name not in ("report.json", ".spineseg.lock"))
    assert left == [] and report["outputs"] == []
    assert all("outputs" not in e and "dicom_outputs" not in e for e in report["processed"])
    removed = report["output_folder"].get("removed_on_interruption", [])
    assert sorted(name.split("_", 1)[1] for name in removed) == sorted(
        s.lstrip("_") for s in WRITTEN_BEFORE.get(stage, [])), removed


@pytest.fixture(scope="module")
def one_segmentation(phantom_study):
    """The phantom study's segmentation, made once: the runs below are interrupted around it, not in it."""
    from spineseg import pipeline
    from spineseg.settings import AppConfig, load_settings
    from spineseg.report import RunReport
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        report = RunReport(Path(tmp))
        cfg = AppConfig.from_settings(phantom_study["dicom_files"][0].parent, Path(tmp), MODELS, load_settings())
        scan = pipeline.scan_study(cfg, report)
        (series,) = pipeline.choose_series(scan, cfg, report)
        volume = pipeline.load_series(series, cfg, report)
        return pipeline.segment(volume, pipeline.get_models(cfg, report), report)


@pytest.mark.parametrize("stage", STAGES)
def test_a_signal_at_any_stage_leaves_a_consistent_folder(tmp_path, monkeypatch, phantom_study, one_segmentation,
                                                          stage):
    """The plain engine, in this process, stopped by SIGTERM or SIGINT as ``stage`` begins: exit 4, an
    INTERRUPTED report, and none of the run's results left (whatever it had written is removed and named)."""
    import copy
    import app.app as application
    from spineseg import pipeline
    from spineseg.outputs.output_folder import SignalGuard
    monkeypatch.setattr(pipeline, "segment_volume", lambda *a, **k: copy.deepcopy(one_segmentation))
    monkeypatch.setattr(application.logsafe, "configure", lambda level: None)   # keep pytest's log capture
    signum = signal.SIGINT if STAGES.index(stage) % 2 else signal.SIGTERM
    monkeypatch.setenv(application.SIGNAL_HOOK, f"{stage}:{signum.name}")
    for var in [v for v in os.environ if v.startswith("SPINESEG_") and v not in (application.SIGNAL_HOOK,
                                                                               "SPINESEG_OPENVINO_CACHE")]:
        monkeypatch.delenv(var)
    out = tmp_path / "out"
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = application.run(["-i", str(phantom_study["dicom_files"][0].parent), "-o", str(out),
                                "--engine", "plain"], guard := SignalGuard())
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        reopen_results()                       # the interrupted run shut the result gate of this process
    assert guard.signal == signum and code == 4
    assert_interrupted_and_consistent(out, json.loads((out / "report.json").read_text()), stage)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["load_models", "write_sr"])
def test_holoscan_stopped_at_a_stage_ends_with_a_consistent_folder(tmp_path, phantom_study, stage):
    """The Holoscan engine (graph in its own thread, its own signal handlers installed as it starts), as a
    process: SIGTERM as the models load, and between a series' SEG and its SR (where an SR could be left
    referencing a SEG that is gone)."""
    out = tmp_path / "out"
    proc = run_app(phantom_study["dicom_files"][0].parent, out, engine="holoscan", timeout=600,
                   env={"SPINESEG_TEST_SIGNAL_AT": f"{stage}:SIGTERM"})
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert f"test hook: sending SIGTERM at the start of stage {stage}" in proc.stderr
    assert_interrupted_and_consistent(out, json.loads((out / "report.json").read_text()), stage)


def test_a_signal_after_the_work_is_done_leaves_the_result_standing(tmp_path):
    """Disarmed (the run's work is done and its report being written): a signal is noted, not raised."""
    from spineseg.outputs.output_folder import SignalGuard
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with SignalGuard() as guard:
            guard.disarm()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0)                      # the handler runs here, in the main thread
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    assert guard.signal is None


def test_an_output_folder_that_cannot_be_made_is_a_coded_error(tmp_path):
    (tmp_path / "afile").write_text("")
    inp = tmp_path / "in"
    inp.mkdir()
    proc = run_app(inp, tmp_path / "afile" / "out", engine="plain", timeout=120)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "OUTPUT_NOT_WRITABLE" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads(next(ln for ln in proc.stderr.splitlines() if ln.startswith("{")))
    assert report["error"]["code"] == "OUTPUT_NOT_WRITABLE"


def test_a_full_disk_is_disk_full_and_leaves_no_partial_file(tmp_path):
    def write_to_full_device(fh):
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


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_link_planted_as_the_lock_is_replaced_and_its_target_untouched(tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (os.symlink if kind == "symlink" else os.link)(victim, out / ".spineseg.lock")
    with lock_output(out):
        lock = out / ".spineseg.lock"
        assert not lock.is_symlink() and lock.stat().st_nlink == 1
        assert lock.read_text().strip() == str(os.getpid())
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_links_planted_under_result_names_are_replaced_not_written_through(tmp_path, kind):
    """report.json and a result name planted as links to a file outside: the files are replaced (rename does
    not follow a link), the victim keeps its content."""
    from spineseg.outputs.atomic import write_bytes_atomic, write_json_atomic
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.json", "series-001_seg.dcm"):
        (os.symlink if kind == "symlink" else os.link)(victim, out / name)
    write_json_atomic(out / "report.json", {"status": "running"}, result=False)
    write_bytes_atomic(out / "series-001_seg.dcm", b"SEG")
    assert victim.read_text() == "precious"
    assert not (out / "report.json").is_symlink() and (out / "series-001_seg.dcm").read_bytes() == b"SEG"


def test_no_result_is_placed_once_the_gate_is_shut(tmp_path):
    """A graph thread still writing after the main thread removed an interrupted run's results: its file is
    not placed, it gets the interruption, and no temporary file stays."""
    from spineseg.outputs.atomic import write_bytes_atomic
    from spineseg.outputs.output_folder import Interrupted, discard_results
    (tmp_path / "series-001_seg.dcm").write_bytes(b"SEG")
    stop = Interrupted("INTERRUPTED", "stopped")
    try:
        assert discard_results(tmp_path, stop) == ["series-001_seg.dcm"]
        with pytest.raises(Interrupted):
            write_bytes_atomic(tmp_path / "series-001_measurements_sr.dcm", b"SR")
    finally:
        reopen_results()
    assert list(tmp_path.iterdir()) == []
