"""Where a run's seconds go outside the networks (issue 28, item 1): per stage, and inside the slow stages.

For one study (default: the demo study, `make demo`'s phantom) and one backend:

1. ``python app`` in a fresh process, twice (the first fills an empty OpenVINO cache, the second is the
   measured one, as a run after the image's precompile is): its report's per-stage seconds, and the process's
   wall time, whose difference from the stages' sum is start-up (imports, Holoscan-free).
2. The same run in a fresh process under cProfile: the functions that take the most cumulative time, so a
   stage's seconds can be followed into the code that spends them.

    python bench/stage_profile.py [--backend openvino] [--top 30] [--json bench/results/stage_profile_demo.json]
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
sys.path[:0] = [{root!r}]
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


def app_run(study: Path, out: Path, env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "app"), "-i", str(study), "-o", str(out), "--engine", "plain"],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"app run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads((out / "report.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, str(ROOT / "tools" / "phantom.py"), "--seed", "7", "--fov", "lumbar",
                        "--slice-thickness", "3.5", "--pixel", "0.6", "--out", str(tmp / "study")],
                       check=True, capture_output=True)
        study = tmp / "study" / "dicom"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPINESEG_", "HOLOSCAN_"))}
        env.update(SPINESEG_BACKEND=a.backend, SPINESEG_OPENVINO_CACHE=str(tmp / "cache"))
        app_run(study, tmp / "first", env)                       # fills the cache
        wall, report = app_run(study, tmp / "measured", env)
        stages = report["timings_seconds"]
        script = PROFILED.format(root=str(ROOT), study=str(study), out=str(tmp / "profiled"), models=str(a.models),
                                 top=a.top)
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"profiled run failed:\n{proc.stderr[-3000:]}")
        profile = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("PROFILE"))[7:])
    networks = sum(stages.get(s, 0.0) for s in NETWORK_STAGES)
    outside = round(wall - networks, 2)
    record = {
        "bench": "stage_profile", "study": "demo (phantom seed 7, lumbar, 3.5 mm slices, 0.6 mm pixels)",
        "backend": a.backend,
        "recorded": {"date": datetime.date.today().isoformat(),
                     "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                              text=True, cwd=ROOT).stdout.strip(),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores"},
        "process_wall_s": round(wall, 2), "stages_s": stages, "networks_s": round(networks, 2),
        "outside_networks_s": outside, "start_up_s": round(wall - sum(stages.values()), 2),
        "profile_top": profile,
    }
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"{name:20s} {seconds:7.2f} s")
    print(f"{'start-up (imports)':20s} {record['start_up_s']:7.2f} s")
    print(f"process {wall:.2f} s; networks {networks:.2f} s; outside the networks {outside:.2f} s")
    if a.json:
        a.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
