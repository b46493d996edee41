"""spine-seg: spine MRI (DICOM) -> TotalSpineSeg -> DICOM SEG, as a MONAI Deploy application.

Graph::

    DICOMScan -> SpineSeriesSelector -> TotalSpineSeg -> SpineSEGWriter -> Delivery -> Report

Paths come from ``-i/-o/-m`` or, as in a MAP container, from HOLOSCAN_INPUT_PATH,
HOLOSCAN_OUTPUT_PATH and HOLOSCAN_MODEL_PATH; ``-m`` defaults to the bundled ``models/``.
Whatever happens, ``report.json`` is written to the output folder and the exit status says how
the run ended (see ``spineseg.errors``).
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
from pathlib import Path

from spineseg import APP_NAME, __version__, logsafe
from spineseg.errors import InputError, SpineSegError
from spineseg.outputs.atomic import reopen_results
from spineseg.outputs.output_folder import (SignalGuard, clear_previous, discard_results, lock_output, signal_at_stage,
                                            write_running)
from spineseg.pipeline import run_all
from spineseg.report import RunReport
from spineseg.settings import DEFAULT_MODELS, AppConfig, load_settings

log = logging.getLogger("spineseg")
SIGNAL_HOOK = "SPINESEG_TEST_SIGNAL_AT"   # test hook: STAGE[:SIGNAME] (spineseg.outputs.output_folder.signal_at_stage)


def _preload_cuda_runtime() -> None:
    """Holoscan's wheels link libcudart.so.13 even on CPU-only hosts; the pip package
    nvidia-cuda-runtime ships it. Loading it by path first spares every user LD_LIBRARY_PATH."""
    import importlib.util
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        lib = Path(base) / "cu13" / "lib" / "libcudart.so.13"
        if lib.exists():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            return


def build_application(config: AppConfig, report: RunReport):
    """The Holoscan application object (imported lazily: Holoscan is heavy)."""
    _preload_cuda_runtime()
    from holoscan.conditions import CountCondition
    from monai.deploy.core import Application

    from operators import (DeliveryOperator, DICOMScanOperator, ReportOperator, SpineSEGWriterOperator,
                           SpineSeriesSelectorOperator, TotalSpineSegOperator)

    class SpineSegApp(Application):
        name = APP_NAME
        description = "Segments and labels vertebrae, discs, spinal cord and canal in spine MRI (TotalSpineSeg)."
        version = __version__

        def compose(self):
            common = dict(config=config, report=report)
            scan = DICOMScanOperator(self, CountCondition(self, 1), name="dicom_scan", **common)
            select = SpineSeriesSelectorOperator(self, name="series_selector", **common)
            infer = TotalSpineSegOperator(self, name="totalspineseg", **common)
            write = SpineSEGWriterOperator(self, name="seg_writer", **common)
            deliver = DeliveryOperator(self, name="delivery", **common)
            self.report_op = ReportOperator(self, name="report", report=report)
            self.add_flow(scan, select, {("scan", "scan")})
            self.add_flow(select, infer, {("series", "series")})
            self.add_flow(infer, write, {("results", "results")})
            self.add_flow(write, deliver, {("written", "written")})
            self.add_flow(deliver, self.report_op, {("delivered", "delivered")})

    return SpineSegApp()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--input", type=Path, default=os.environ.get("HOLOSCAN_INPUT_PATH"),
                   help="folder with the study's DICOM files (env HOLOSCAN_INPUT_PATH)")
    p.add_argument("-o", "--output", type=Path, default=os.environ.get("HOLOSCAN_OUTPUT_PATH"),
                   help="output folder (env HOLOSCAN_OUTPUT_PATH)")
    p.add_argument("-m", "--model", type=Path, default=os.environ.get("HOLOSCAN_MODEL_PATH") or DEFAULT_MODELS,
                   help="models folder in nnU-Net results layout (env HOLOSCAN_MODEL_PATH; default: bundled models/)")
    p.add_argument("-w", "--workdir", type=Path, default=os.environ.get("HOLOSCAN_WORKDIR"),
                   help="accepted for MONAI Deploy compatibility; spine-seg writes no intermediate files")
    p.add_argument("-l", "--log-level", default=os.environ.get("SPINESEG_LOG_LEVEL", "INFO"))
    p.add_argument("--engine", choices=["holoscan", "plain"], default=os.environ.get("SPINESEG_ENGINE", "holoscan"),
                   help="run the Holoscan graph (default) or the same stages as plain calls")
    p.add_argument("--version", action="version", version=f"{APP_NAME} {__version__}")
    a = p.parse_args(argv)
    if a.input is None or a.output is None:
        p.error("the input (-i or HOLOSCAN_INPUT_PATH) and output (-o or HOLOSCAN_OUTPUT_PATH) folders are required")
    return a


def main(argv: list[str] | None = None) -> int:
    guard = SignalGuard()
    code = run(argv, guard)
    if guard.signal is not None:            # (a signal after the work was done is not recorded)
        # the signal may have cut an import or a framework call in half (Holoscan then crashed in
        # its teardown): the report is written, so leave without running that teardown
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def run(argv: list[str] | None, guard: SignalGuard) -> int:
    """The whole run under ``guard``; the exit status. report.json is written whatever happens."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)          # argparse exits 2 (EXIT_USAGE) on bad arguments
    logsafe.configure(getattr(logging, str(args.log_level).upper(), logging.INFO))
    logging.getLogger("highdicom").setLevel(logging.WARNING)   # per-module copy notices are noise
    output = Path(args.output)
    report = RunReport(output)
    report.input["path"] = str(args.input)
    if os.environ.get(SIGNAL_HOOK):
        report.stage_hook = signal_at_stage(os.environ[SIGNAL_HOOK], guard)
    log.info("%s %s: input %s -> output %s (models %s)", APP_NAME, __version__, args.input, output, args.model)
    try:
        with guard:
            if Path(args.input).resolve() == output.resolve():
                raise InputError("OUTPUT_IS_INPUT", "The output folder is the input folder; use a separate folder "
                                 "so results never mix with the study.")
            with lock_output(output):
                error = run_owned(args, output, report, guard)
                guard.disarm()             # the work is done: a late signal does not undo its result
                code = report.finish(error)
    except SpineSegError as exc:           # the folder is not ours (busy, not writable), or a signal came early
        error = interrupted(output, report, guard) if guard.signal else exc
        if error.code == "OUTPUT_BUSY":
            report.name = f"report.refused-{os.getpid()}.json"   # the owner's report.json stays as it is
        log.error("%s: %s", error.code, error.message)
        code = report.finish(error)
    log.info("finished: %s (exit %d); report %s", "succeeded" if error is None else "failed", code,
             output / report.name)
    if error is None:
        for rel in report.outputs:
            log.info("output: %s", output / rel)
    return code


def run_owned(args: argparse.Namespace, output: Path, report: RunReport, guard: SignalGuard) -> BaseException | None:
    """The run in a folder it holds: previous results moved aside, then the stages; the error, if any."""
    error: BaseException | None = None
    reopen_results()                       # an earlier interrupted run in this process (tests) shut the gate
    try:
        report.output_folder = clear_previous(output)
        write_running(output, report.as_dict("running", 0)["started"])
        config = AppConfig.from_settings(args.input, output, args.model, load_settings())
        if args.engine == "plain":
            run_all(config, report)
        else:
            app = build_application(config, report)
            guard.wait(app.run_async())    # in the main thread, signals still end the run with a report
            if not app.report_op.completed:
                raise SpineSegError("GRAPH_INCOMPLETE", "The application graph stopped before its last operator.")
    except SpineSegError as exc:
        error = exc
    except Exception as exc:  # anything else is a bug: report it, keep the traceback in the log
        error = exc
        log.error("internal error: %s", exc, exc_info=True)
    if guard.signal is not None:           # a framework may have swallowed the Interrupted exception
        error = interrupted(output, report, guard)
    if isinstance(error, SpineSegError):
        log.error("%s: %s", error.code, error.message)
    return error


def interrupted(output: Path, report: RunReport, guard: SignalGuard) -> SpineSegError:
    """The error of a run a signal stopped, once its results are removed (all or none: an SR must never
    stay without the SEG it references, nor a report list a file that is not there)."""
    error = guard.error()
    if report.output_folder and report.removed_outputs is None:   # the previous run's results were moved
        report.discard_outputs(discard_results(output, error))    # aside: every result here is this run's
    return error
