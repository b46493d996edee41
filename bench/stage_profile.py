"""Where a run's seconds go outside the networks (issue 28, item 1): per stage, and inside the slow stages.

For one study (default: the demo study, `make demo`'s phantom) and one backend:

1. ``python app`` in a fresh process, once to fill an empty OpenVINO cache, then ``--runs`` times measured (as
   runs after the image's precompile are); the fastest run's report gives the per-stage seconds, and the
   process's wall time, whose difference from the stages' sum is start-up (imports, Holoscan-free).
2. The same run in a fresh process under cProfile: the functions that take the most cumulative time, so a
   stage's seconds can be followed into the code that spends them.
3. With ``--before REV``: the app as committed at REV (``git archive``, its own bundled models), run the same way
   and interleaved with the current tree's runs, so that both meet the same load on a shared machine; the
   record's ``before`` holds its figures, the rest of the record the current tree's (issue 28's before/after).

    python -m bench.stage_profile [--backend openvino] [--runs 2] [--before REV] [--top 30]
                                  [--json bench/results/stage_profile_demo.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETWORK_STAGES = ("step1_network", "step2_network")

PROFILED = """
import cProfile, pstats, sys, io
from pathlib import Path
from spineseg.pipeline import run_all
from spineseg.report import RunReport
from spineseg.settings import AppConfig, load_settings
cfg = AppConfig.from_settings(Path({study!r}), Path({out!r}), Path({models!r}), load_settings())
profile = cProfile.Profile()
profile.enable()
run_all(cfg, RunReport(Path({out!r})))
profile.disable()
stats = pstats.Stats(profile)
rows = []
for (file, line, name), (cc, nc, tt, ct, callers) in stats.stats.items():
    rows.append({{"function": f"{{Path(file).name}}:{{line}} {{name}}", "cumulative_s": round(ct, 3),
                 "own_s": round(tt, 3), "calls": nc}})
rows.sort(key=lambda r: -r["cumulative_s"])
print("PROFILE" + __import__("json").dumps(rows[:{top}]))
"""


FUNCTIONS = """
import copy, json, sys, time
from pathlib import Path
import numpy as np
from spineseg.inference import postprocess, two_step
from spineseg.input.dicom_input import load_volume, scan_dicom
tss = two_step.nnunet_import.totalspineseg()
calls = []
for name in ("largest_component", "iterative_label"):
    fast = getattr(postprocess, name)
    def keep(*args, _fast=fast, _name=name, **kwargs):
        calls.append((_name, copy.deepcopy(args), copy.deepcopy(kwargs)))
        return _fast(*args, **kwargs)
    setattr(postprocess, name, keep)
    setattr(postprocess, "fast_" + name, fast)
volume = load_volume(scan_dicom(Path({study!r})).series[0])
models = two_step.load_models(Path({models!r}), "cpu", "auto", {backend!r})
two_step.segment_volume(volume.array, volume.affine, models, dicom_stack=True)

def best(function, args, kwargs):
    times, out = [], None
    for _ in range(2):
        a, k = copy.deepcopy(args), copy.deepcopy(kwargs)
        t0 = time.perf_counter(); out = function(*a, **k); times.append(time.perf_counter() - t0)
    return min(times), out

rows = []
for step, (name, args, kwargs) in zip(("step1", "step1", "step2", "step2"), calls):
    ref_s, ref = best(getattr(tss, name), args, kwargs)
    fast_s, got = best(getattr(postprocess, "fast_" + name), args, kwargs)
    same = (np.asanyarray(ref.dataobj).tobytes() == np.asanyarray(got.dataobj).tobytes()
            and ref.header.binaryblock == got.header.binaryblock and np.array_equal(ref.affine, got.affine))
    rows.append({{"step": step, "function": name, "totalspineseg_s": round(ref_s, 3), "fast_s": round(fast_s, 3),
                 "identical": bool(same)}})
print("FUNCTIONS" + json.dumps({{"shape": list(volume.array.shape), "calls": rows}}))
"""


def function_profile(fov: str, backend: str, models: Path, tmp: Path, env: dict) -> dict:
    """totalspineseg's post-processing functions against spineseg.inference.postprocess's, on the inputs a
    run of a ``fov`` phantom study hands them (best of 2 each), and whether their outputs are identical."""
    study = tmp / f"study-{fov}"
    subprocess.run([sys.executable, str(ROOT / "tools" / "phantom.py"), "--seed", "11", "--fov", fov,
                    "--out", str(study)], check=True, capture_output=True)
    script = FUNCTIONS.format(study=str(study / "dicom"), models=str(models), backend=backend)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"function profile failed:\n{proc.stderr[-3000:]}")
    found = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("FUNCTIONS"))[9:])
    return {"study": f"phantom seed 11, {fov}, 1 mm (tools/phantom.py --seed 11 --fov {fov})", **found}


def app_run(study: Path, out: Path, env: dict, root: Path = ROOT) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(root / "app"), "-i", str(study), "-o", str(out), "--engine", "plain",
                           "-m", str(root / "models")], env={**env, "PYTHONPATH": str(root)}, capture_output=True,
                          text=True, cwd=root)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"app run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads((out / "report.json").read_text())


def source_at(rev: str, into: Path) -> Path:
    """The repository's files as committed at ``rev`` (no checkout: the working tree stays as it is)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def summary(runs: list[tuple[float, dict]]) -> dict:
    """The fastest of ``runs`` (wall time): its stages, networks, the rest and start-up; and each stage's
    fastest over all runs (``stages_best_s``: on a loaded machine, a stage's own floor)."""
    wall, report = min(runs, key=lambda run: run[0])
    stages = report["timings_seconds"]
    networks = sum(stages.get(s, 0.0) for s in NETWORK_STAGES)
    best = {name: min(r["timings_seconds"].get(name, seconds) for _, r in runs) for name, seconds in stages.items()}
    return {"process_wall_s": round(wall, 2), "stages_s": stages, "networks_s": round(networks, 2),
            "outside_networks_s": round(wall - networks, 2), "start_up_s": round(wall - sum(stages.values()), 2),
            "runs_wall_s": [round(w, 2) for w, _ in runs], "stages_best_s": best}


def commit_of(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--runs", type=int, default=2, help="measured runs per tree; the fastest is recorded")
    ap.add_argument("--before", metavar="REV", help="also measure the app as committed at REV (interleaved)")
    ap.add_argument("--functions-fov", metavar="FOV", help="also time totalspineseg's post-processing functions "
                    "against the fast equivalents on a phantom of this field of view (e.g. whole)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, str(ROOT / "tools" / "phantom.py"), "--seed", "7", "--fov", "lumbar",
                        "--slice-thickness", "3.5", "--pixel", "0.6", "--out", str(tmp / "study")],
                       check=True, capture_output=True)
        study = tmp / "study" / "dicom"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPINESEG_", "HOLOSCAN_"))}
        env.update(SPINESEG_BACKEND=a.backend, SPINESEG_OPENVINO_CACHE=str(tmp / "cache"))
        trees = {"after": ROOT, **({"before": source_at(a.before, tmp / "before")} if a.before else {})}
        for name, root in trees.items():                         # fills the cache (each tree's own IR key)
            app_run(study, tmp / f"first-{name}", env, root)
        runs: dict[str, list] = {name: [] for name in trees}
        for i in range(a.runs):
            for name, root in trees.items():
                runs[name].append(app_run(study, tmp / f"measured-{name}-{i}", env, root))
        after = summary(runs["after"])
        functions = function_profile(a.functions_fov, a.backend, a.models, tmp, env) if a.functions_fov else None
        script = PROFILED.format(study=str(study), out=str(tmp / "profiled"), models=str(a.models),
                                 top=a.top)
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"profiled run failed:\n{proc.stderr[-3000:]}")
        profile = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("PROFILE"))[7:])
    record = {
        "bench": "stage_profile", "study": "demo (phantom seed 7, lumbar, 3.5 mm slices, 0.6 mm pixels)",
        "backend": a.backend,
        "recorded": {"date": datetime.date.today().isoformat(), "commit": commit_of("HEAD"),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                     "load_average_1min": round(os.getloadavg()[0], 2),
                     "command": "python -m bench.stage_profile " + " ".join(argv if argv is not None else sys.argv[1:])},
        **after,
        **({"before": {"commit": commit_of(a.before), **summary(runs["before"])}} if a.before else {}),
        **({"postprocess_functions": functions} if functions else {}),
        "profile_top": profile,
    }
    before = record.get("before", {}).get("stages_best_s", {})
    print(f"{'stage (best of runs)':20s} {'before':>9s} {'after':>9s}" if before else "")
    for name, seconds in sorted(after["stages_best_s"].items(), key=lambda kv: -kv[1]):
        print(f"{name:20s} {before.get(name, float('nan')):7.2f} s {seconds:7.2f} s" if before
              else f"{name:20s} {seconds:7.2f} s")
    for label, rec in (("before", record.get("before")), ("after", after)):
        if rec:
            print(f"{label}: process {rec['process_wall_s']:.2f} s (runs {rec['runs_wall_s']}); start-up "
                  f"{rec['start_up_s']:.2f} s; networks {rec['networks_s']:.2f} s; outside the networks "
                  f"{rec['outside_networks_s']:.2f} s")
    for row in (functions or {}).get("calls", []):
        print(f"{row['step']} {row['function']:18s} totalspineseg {row['totalspineseg_s']:6.2f} s, fast "
              f"{row['fast_s']:6.2f} s, identical: {row['identical']}")
    if a.json:
        a.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
