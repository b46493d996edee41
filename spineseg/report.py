"""``report.json``: the machine-readable account of a run, written on success and on failure.

Holds identifiers (study/series UIDs) but never patient names or IDs.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spineseg import APP_NAME, __version__
from spineseg.outputs.atomic import results_gate, write_json_atomic
from spineseg.outputs.codes_table import STRUCTURES
from spineseg.errors import EXIT_INTERNAL, EXIT_OK, SpineSegError

log = logging.getLogger("spineseg")
REPORT_NAME = "report.json"


def structures_found(labels: np.ndarray, voxel_volume_mm3: float) -> list[dict]:
    values, counts = np.unique(labels, return_counts=True)
    return [{"label": int(v), "name": STRUCTURES.get(int(v), {}).get("name", f"label {int(v)}"),
             "voxels": int(c), "volume_mm3": round(float(c) * voxel_volume_mm3, 1)}
            for v, c in zip(values, counts) if v != 0]


@dataclass
class RunReport:
    output_dir: Path
    started: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    input: dict = field(default_factory=dict)
    series_seen: list[dict] = field(default_factory=list)
    processed: list[dict] = field(default_factory=list)
    models: dict = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    # until the delivery stage runs (or when the run ends before it), say that, not "nothing configured"
    delivery: dict = field(default_factory=lambda: {"configured": None, "destinations": [],
                                                    "note": "the run ended before delivery; nothing was sent"})
    error: dict | None = None
    output_folder: dict = field(default_factory=dict)
    name: str = REPORT_NAME                  # another name when the folder belongs to another run
    # an interrupted run's results, removed from the folder (output_folder.discard_results): then the
    # report lists no output, whatever a graph thread still appends
    removed_outputs: list[str] | None = None
    stage_hook: Callable[[str], None] | None = field(default=None, repr=False)   # a test's, as a stage begins

    @contextmanager
    def stage(self, name: str):
        """Time a stage and log one line for it when it ends."""
        if self.stage_hook is not None:
            self.stage_hook(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.record_stage(name, time.perf_counter() - t0)

    def record_stage(self, name: str, seconds: float) -> None:
        """Add a timed stage (repeats accumulate) and log one line for it."""
        self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 3)
        log.info("stage %-18s %7.2f s", name, seconds)

    def warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)

    def add_output(self, path: Path) -> None:
        rel = str(Path(path).relative_to(self.output_dir))
        with results_gate():                 # an interrupted run lists nothing more
            if rel not in self.outputs:
                self.outputs.append(rel)

    def discard_outputs(self, removed: list[str]) -> None:
        """Record that an interrupted run's results were removed (``removed``: their names)."""
        self.removed_outputs = list(removed)

    def as_dict(self, status: str, exit_code: int) -> dict:
        # copies, each made in one step: a graph thread may still be adding to these lists and dicts
        processed, outputs, folder = list(self.processed), list(self.outputs), dict(self.output_folder)
        if self.removed_outputs is not None:
            processed = [{k: v for k, v in e.items() if k not in ("outputs", "dicom_outputs")} for e in processed]
            outputs, folder["removed_on_interruption"] = [], self.removed_outputs
        return {
            "status": status, "exit_code": exit_code,
            "app": {"name": APP_NAME, "version": __version__},
            "started": dt.datetime.fromtimestamp(self.started, dt.timezone.utc).isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(time.time() - self.started, 2),
            "input": self.input, "series_seen": self.series_seen, "processed": processed,
            "models": self.models, "timings_seconds": dict(self.timings), "warnings": list(self.warnings),
            "outputs": outputs, "delivery": self.delivery, "output_folder": folder,
            "error": self.error,
        }

    def finish(self, error: BaseException | None = None) -> int:
        """Write report.json (atomically) and return the exit code."""
        if error is None:
            status, code = "succeeded", EXIT_OK
        else:
            status = "failed"
            if isinstance(error, SpineSegError):
                code, self.error = error.exit_code, error.as_dict()
            else:
                code = EXIT_INTERNAL
                self.error = {"code": "INTERNAL_ERROR", "category": "InternalError",
                              "message": f"{type(error).__name__}: {error}. This is a bug or an environment "
                                         "problem; the log has the traceback."}
        try:
            write_json_atomic(self.output_dir / self.name, self.as_dict(status, code), result=False)
        except SpineSegError as exc:         # the folder cannot take it: say so on stderr, fail the run
            self.error = exc.as_dict() if error is None else self.error
            code = code or exc.exit_code
            log.error("%s: %s; the report follows on stderr", exc.code, exc.message)
            print(json.dumps(self.as_dict("failed", code), default=str), file=sys.stderr)
        return code
