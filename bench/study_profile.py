"""A study of several series, end to end (issue 28, item 4): three stations and a whole-spine localizer of one
phantom in one study, every series asked for (SPINESEG_ALL_SERIES=true), run by ``python app`` in a fresh process as ``bench.stage_profile`` runs the demo study.

Recorded: the process's wall time (fastest of ``--runs``, after one run that fills an empty OpenVINO cache), the
stages' accumulated seconds from report.json, and how many times each stage ran, counted from the app's own
``stage NAME`` log lines: the models load once for the whole study, and each segmented series goes through
step 1 and step 2 once (the no-landmark retry with a partner reuses both, ``two_step.NetworkMemo``). A partner
series (here the localizer, segmented for the stations' numbering) is segmented inside the ``partner`` stage,
once per study: its networks are in that stage's seconds, not in ``networks_s``.

    python -m bench.study_profile [--backend openvino] [--runs 2] [--json bench/results/study_profile.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.records import finish_record, start_record
from bench.stage_profile import NETWORK_STAGES
from tools import phantom as P

ROOT = Path(__file__).resolve().parent.parent
SEED = 5203
LOCALIZER = P.SeriesSpec("localizer", "whole", 5.0, 2.0, 1, "LOC SAG SPINE", localizer=True)
STAGE_LINE = re.compile(r"stage (\w+)\s+[\d.]+ s")


def run_app(study: Path, out: Path, env: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "app"), "-i", str(study), "-o", str(out), "--engine", "plain"],
                          env=env, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"app run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": round(wall, 2), "report": report,
            "stage_runs": dict(Counter(STAGE_LINE.findall(proc.stdout + proc.stderr)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--runs", type=int, default=2, help="measured runs; the fastest is recorded")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    record = start_record("study_profile")
    with tempfile.TemporaryDirectory(prefix="spineseg-study-") as tmp:
        tmp = Path(tmp)
        P.write_study(SEED, tmp / "exam", (*P.STATIONS, LOCALIZER))
        # every series segmented (the stations), the localizer as their partner where one is needed
        env = {**os.environ, "SPINESEG_BACKEND": a.backend, "SPINESEG_OPENVINO_CACHE": str(tmp / "ov-cache"),
               "SPINESEG_ALL_SERIES": "true"}
        run_app(tmp / "exam", tmp / "first", env)                       # fills the IR cache
        runs = [run_app(tmp / "exam", tmp / f"measured-{i}", env) for i in range(a.runs)]
    best = min(runs, key=lambda r: r["wall_s"])
    report, stages = best["report"], best["report"]["timings_seconds"]
    networks = sum(stages.get(s, 0.0) for s in NETWORK_STAGES)
    record.update({
        "study": f"phantom seed {SEED}: {', '.join(s.name for s in (*P.STATIONS, LOCALIZER))} "
                 "(tools/phantom.py write_study)",
        "backend": a.backend, "status": report["status"], "series_processed": len(report["processed"]),
        "process_wall_s": best["wall_s"], "runs_wall_s": [r["wall_s"] for r in runs],
        "networks_s": round(networks, 2), "outside_networks_s": round(best["wall_s"] - networks, 2),
        "stages_s": stages, "stage_runs": best["stage_runs"]})
    return finish_record(record, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
