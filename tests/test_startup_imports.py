"""What a run spends outside the networks (issue 28): the app imports only what it runs, nnU-Net's CPU notice stays
out of the log, segment_volume hashes step 2's inputs only for a memo, and the process ends without tearing
down every module, yet as an ordinary exit would (exit handlers, streams, running threads)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
from conftest import ROOT


def run_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_the_pipelines_totalspineseg_functions_come_without_the_rest_of_the_package():
    """nnunet_import.utilities(): totalspineseg's own functions, without its __init__ (whose augment command
    imports gryds, cupy and scipy.stats); the package imported afterwards is whole and holds the same ones."""
    proc = run_python("""
        import sys
        from spineseg.inference import nnunet_import
        u = nnunet_import.utilities()
        unused = [m for m in ("totalspineseg", "totalspineseg.utils.augment", "gryds", "scipy.stats", "torch._dynamo")
                  if m in sys.modules]
        assert unused == [], unused
        import totalspineseg as tss
        import totalspineseg.utils.iterative_label as source
        for name in nnunet_import.UTILITIES:
            assert getattr(u, name) is getattr(tss, name), name
        assert source.iterative_label is u.iterative_label and callable(tss.augment)
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_a_whole_run_imports_no_unused_library_and_leaves_no_thread(phantom_study, tmp_path):
    """A run of the pipeline (scan to SR and pictures): none of totalspineseg's unused commands or what only they
    need, no torch._dynamo, no Holoscan or delivery library; pandas and httpx (imported by nnU-Net's imports)
    still deferred, never run; and no thread left that an ordinary exit would wait for."""
    study = phantom_study["dicom_files"][0].parent
    proc = run_python(f"""
        import sys, threading
        from pathlib import Path
        import app.app
        from spineseg.pipeline import run_all
        from spineseg.report import RunReport
        from spineseg.settings import AppConfig
        out = Path({str(tmp_path / "out")!r})
        run_all(AppConfig.from_settings(Path({str(study)!r}), out, None, {{}}, env={{}}), RunReport(out))
        loaded = [m for m in ("totalspineseg", "totalspineseg.utils.augment", "gryds", "cupy", "scipy.stats",
                              "torch._dynamo", "holoscan", "pynetdicom", "dicomweb_client") if m in sys.modules]
        assert loaded == [], loaded
        run = [m for m in ("pandas", "httpx") if type(sys.modules[m]).__name__ != "Deferred"]
        assert run == [], run
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        assert left == [], left
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_a_deferred_module_runs_once_at_its_first_use_into_the_same_object(tmp_path, monkeypatch):
    from spineseg.inference import nnunet_import
    (tmp_path / "deferred_probe.py").write_text("RUNS = []\nRUNS.append(1)\nVALUE = 42\n")
    (tmp_path / "deferred_broken.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("deferred_probe", "deferred_broken", "deferred_absent"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        nnunet_import.defer_import(name)
    assert "deferred_absent" not in sys.modules                 # not installed: its own import fails, as ever
    probe = sys.modules["deferred_probe"]
    assert type(probe) is nnunet_import.Deferred and probe.__file__.endswith("deferred_probe.py")
    import inspect
    inspect.getmodule(inspect)                                  # reads every module's __file__: runs nothing
    assert type(probe) is nnunet_import.Deferred
    assert probe.VALUE == 42 and probe.RUNS == [1] and type(probe) is type(sys)
    import deferred_probe
    assert deferred_probe is probe and probe.RUNS == [1]
    broken = sys.modules["deferred_broken"]
    for _ in range(2):                                          # its error at each use, as an import's would be
        try:
            broken.anything
        except RuntimeError as exc:
            assert str(exc) == "broken at import"
        else:
            raise AssertionError("a broken module ran without its error")


def test_nnunets_cpu_notice_is_not_printed_and_anything_else_is(monkeypatch, capsys):
    from types import SimpleNamespace

    from spineseg.inference import nnunet_import

    class Predictor:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            print(nnunet_import.CPU_NOTICE)
            print("something else nnU-Net says")

    monkeypatch.setattr(nnunet_import, "predictor_module", lambda: SimpleNamespace(nnUNetPredictor=Predictor))
    predictor = nnunet_import.new_predictor(device="cpu")
    assert predictor.kwargs == {"device": "cpu"}
    assert capsys.readouterr().out == "something else nnU-Net says\n"


def test_loading_the_models_on_the_cpu_prints_nothing():
    """The real predictor (nnU-Net 2.8.1 prints its notice for any device but CUDA) through load_models."""
    proc = run_python(f"""
        from pathlib import Path
        from spineseg.inference import two_step
        m = two_step.load_models(Path({str(ROOT / "models")!r}), "cpu", "auto", "auto")
        assert not m.step1.predictor.perform_everything_on_device and m.step1.predictor.device.type == "cpu"
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "" and "perform_everything_on_device" not in proc.stderr


def test_step2_inputs_are_hashed_only_for_a_memo(monkeypatch):
    import phantom as P
    from test_fast_paths_identical import TruthModel, step1_scheme, step2_scheme

    from spineseg.inference import two_step

    ph = P.make_phantom(5, fov="lumbar")
    geometry = P.series_geometry(ph, "sagittal", slice_thickness=4.0, pixel=1.5, lr_width=40.0, ap_width=96.0)
    image, _ = P.render(ph, geometry.affine, geometry.shape)
    image = np.round(image * 1000)
    models = two_step.ModelPair(TruthModel(ph, step1_scheme), TruthModel(ph, step2_scheme), "cpu")
    hashed = []
    key_of = two_step.NetworkMemo.step2_key_of
    monkeypatch.setattr(two_step.NetworkMemo, "step2_key_of", staticmethod(lambda *a: hashed.append(1) or key_of(*a)))
    plain = two_step.segment_volume(image, geometry.affine, models, dicom_stack=True)
    assert hashed == []
    memo = two_step.NetworkMemo()
    with_memo = two_step.segment_volume(image, geometry.affine, models, dicom_stack=True, memo=memo)
    assert hashed == [1] and memo.step2 is not None
    assert plain.labels.tobytes() == with_memo.labels.tobytes() and plain.labels.any()


LEAVE = textwrap.dedent(f"""
    import atexit, importlib.util, sys, threading, time
    spec = importlib.util.spec_from_file_location("spineseg_app_main", {str(ROOT / "app" / "__main__.py")!r})
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    atexit.register(lambda: print("exit handler ran", flush=True))
    sys.stdout.write("buffered, no newline")
""")


def test_the_process_ends_with_the_apps_status_after_its_exit_handlers():
    proc = run_python(LEAVE + "main._leave(3)\n")
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout == "buffered, no newlineexit handler ran\n"


def test_a_thread_still_running_is_waited_for_as_by_an_ordinary_exit():
    proc = run_python(LEAVE + textwrap.dedent("""
        def late():
            time.sleep(0.5)
            print(" thread done", flush=True)
        threading.Thread(target=late).start()
        main._leave(4)
    """))
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert proc.stdout == "buffered, no newline thread done\nexit handler ran\n"


def test_openvino_sends_no_usage_event_and_a_run_leaves_no_thread_behind(tmp_path):
    """``import openvino`` would send Google Analytics an event from a forked process, in a thread that also holds
    the process's exit (openvino_telemetry): through spineseg it uses OpenVINO's no-op stub, and after loading the
    models and segmenting no thread is left that an ordinary exit would wait for."""
    proc = run_python(f"""
        import multiprocessing, sys, threading
        from pathlib import Path
        from spineseg.inference import two_step
        m = two_step.load_models(Path({str(ROOT / "models")!r}), "cpu", "auto", "openvino")
        import openvino.tools.ovc.telemetry_utils as t
        assert t.tm.__name__ == "openvino.tools.ovc.telemetry_stub", t.tm
        assert multiprocessing.active_children() == []
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        assert left == [], left
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_models_load_with_the_collector_paused_and_are_then_frozen():
    """spineseg.collection.collection_paused: no cyclic collection while loading, what was loaded frozen out of later
    full collections, and the collector left as it was found (enabled or not)."""
    import gc

    from spineseg.collection import collection_paused
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            with collection_paused():
                assert not gc.isenabled()
                kept = [[i] for i in range(1000)]
            assert gc.isenabled() == enabled and gc.get_freeze_count() >= len(kept)
            gc.unfreeze()
    finally:
        (gc.enable if was else gc.disable)()
        gc.unfreeze()


def test_highdicoms_tables_are_read_once_in_the_background_and_the_seg_waits_for_them():
    proc = run_python("""
        import sys, threading
        from spineseg.outputs import seg_writer
        seg_writer.read_standard_tables_in_background()
        first = seg_writer._tables_read
        seg_writer.read_standard_tables_in_background()
        assert seg_writer._tables_read is first and first.daemon and first.name == "spineseg-dicom-tables"
        first.join()
        from highdicom._standard_utils import get_module_attribute_map
        assert get_module_attribute_map.cache_info().currsize == 1
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_a_background_picture_gives_its_value_or_raises_its_error_where_it_is_used():
    from spineseg.pipeline import _Background

    def fails():
        raise FileNotFoundError("DejaVu Sans Bold not found")
    assert _Background(lambda a, b=0: a + b, 2, b=3).result() == 5
    job = _Background(fails)
    for _ in range(2):
        try:
            job.result()
        except FileNotFoundError as exc:
            assert "DejaVu" in str(exc)
        else:
            raise AssertionError("the error was lost")
