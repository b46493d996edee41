"""The MAP image with full-size release weights, built by `make image WEIGHTS=DIR`'s path and run as a hospital
runs it: build time, size, and per backend the wall time and peak memory of the clinical lumbar phantom inside
app.yaml's CPU and memory limits (issue 27, item 3).

    python -m bench.official_image [--backends openvino openvino-bf16 torch] [--json bench/results/official_image.json]

The zips have the shape of TotalSpineSeg's current release (r20251124): ``Dataset10X_.../nnUNetTrainerDAExt__
nnUNetPlans__3d_fullres/fold_0`` with ``checkpoint_best.pth`` and ``checkpoint_final.pth``, ResEnc-L networks
planned by nnU-Net's ``nnUNetPlannerResEncL`` (bench/network_speed.py) with seeded random weights: they cost
what trained ones cost, but their labels mean nothing, so a run may end in a study-level error (recorded with
its time) after its networks ran. Needs the CPU MAP image (`make image`) and a Docker engine; about 15 minutes
and 8 GB of disk on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.backends import CLINICAL, make_full_size_models     # the full-size study and networks
from bench.records import finish_record, start_record
from tools import map_run, release_zips, weights_image
from tools import phantom as P

ROOT = Path(__file__).resolve().parent.parent

RELEASE = "r20251124"
TRAINER_FOLDER = "nnUNetTrainerDAExt__nnUNetPlans__3d_fullres"


def full_size_release(models: Path, work: Path) -> Path:
    """Release zips of both steps (ResEnc-L, random weights: best seed 0, final seed 1) and their SHA256SUMS."""
    full = make_full_size_models(models, work, TRAINER_FOLDER, {"checkpoint_best.pth": 0, "checkpoint_final.pth": 1})
    out = work / "zips"
    for folder in sorted((full / "nnUNet" / "results").glob(f"*/{TRAINER_FOLDER}")):
        release_zips.write_release_zip(folder, out, RELEASE)
    release_zips.write_sums(out)
    return out


def peaks_while(container: str) -> tuple[int, dict]:
    """(exit status, peaks in GB) of a running container, read from its memory cgroup (v1 or v2) five times a
    second: ``anon_gb``, the process memory that counts towards an out-of-memory kill, and ``usage_gb``, the
    cgroup's own peak, which also counts the page cache (the checkpoints and IR read from the image)."""
    full_id = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True,
                             check=True).stdout.strip()
    roots = [Path(f"/sys/fs/cgroup/memory/docker/{full_id}"), Path(f"/sys/fs/cgroup/docker/{full_id}"),
             Path(f"/sys/fs/cgroup/system.slice/docker-{full_id}.scope")]
    peaks = {"anon_gb": 0, "usage_gb": 0}
    done = threading.Event()

    def read(path: Path, key: str | None = None) -> int:
        try:
            text = path.read_text()
        except OSError:
            return 0
        if key is None:
            return int(text)
        return next((int(line.split()[1]) for line in text.splitlines() if line.split()[0] == key), 0)

    def poll():
        while not done.is_set():
            for root in roots:
                anon = read(root / "memory.stat", "total_rss") or read(root / "memory.stat", "anon")
                usage = read(root / "memory.max_usage_in_bytes") or read(root / "memory.peak")
                peaks["anon_gb"], peaks["usage_gb"] = max(peaks["anon_gb"], anon), max(peaks["usage_gb"], usage)
            time.sleep(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    status = int(subprocess.run(["docker", "wait", container], capture_output=True, text=True, check=True).stdout)
    done.set()
    thread.join()
    return status, {k: round(v / 1e9, 2) for k, v in peaks.items()}


def run_in_image(tag: str, study: Path, out: Path, backend: str) -> dict:
    """The study through the image as tests/container_helpers.run_map runs it (tools/map_run.py: app.yaml's cpu and
    memory, non-root, read-only), detached, so that its memory cgroup can be read while it runs."""
    map_run.owned_output(out)
    name = f"spineseg-bench-{backend}-{os.getpid()}"
    t0 = time.monotonic()
    subprocess.run(["docker", "run", "-d", "--name", name,
                    *map_run.run_options(tag, study, out, env_names=["SPINESEG_BACKEND"])],
                   check=True, capture_output=True, text=True, env=dict(os.environ, SPINESEG_BACKEND=backend))
    try:
        status, peaks = peaks_while(name)
        wall = round(time.monotonic() - t0, 1)
        oom = subprocess.run(["docker", "inspect", "-f", "{{.State.OOMKilled}}", name], capture_output=True,
                             text=True).stdout.strip() == "true"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    row = {"exit_status": status, "container_wall_s": wall, "peak_memory_gb": peaks, "oom_killed": oom}
    report = out / "report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        row.update(status=r["status"], error=(r.get("error") or {}).get("code"), app_wall_s=r.get("wall_seconds"),
                   stages_s=r.get("timings_seconds"),
                   models={s: {k: r["models"][s][k] for k in ("kind", "release", "checkpoint", "openvino_ir")
                               if k in r["models"][s]} for s in ("step1", "step2") if s in r.get("models", {})})
    return row


def peaks_text(row: dict) -> str:
    return ", ".join(f"{k.removesuffix('_gb')} {v} GB" for k, v in row["peak_memory_gb"].items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["openvino", "openvino-bf16", "torch"])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    record = start_record("official_image")
    record.update(release_shape=f"{RELEASE}, {TRAINER_FOLDER}", study=CLINICAL,
                  network="ResEnc-L (nnUNetPlannerResEncL saved as nnUNetPlans), random weights")
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        tmp = Path(tmp)
        t = time.monotonic()
        zips = full_size_release(ROOT / "models", tmp)
        record["zips_gb"] = round(sum(z.stat().st_size for z in zips.glob("*.zip")) / 1e9, 2)
        record["make_zips_s"] = round(time.monotonic() - t, 1)
        tag = f"{weights_image.CPU_IMAGE}-{RELEASE}-bench"
        try:
            build = weights_image.build(zips, tag=tag)
            record["build"] = {"seconds": build["seconds"], "size_gb": round(build["size_bytes"] / 1e9, 2)}
            study = tmp / "clinical"
            P.write_case(out_dir=study, **CLINICAL)
            subprocess.run(["chmod", "-R", "a+rX", str(study)], check=True)
            record["backends"] = {}
            for backend in a.backends:
                row = run_in_image(tag, study / "dicom", tmp / f"out-{backend}", backend)
                record["backends"][backend] = row
                print(f"{backend}: exit {row['exit_status']} in {row['container_wall_s']} s, peaks {peaks_text(row)}"
                      f" ({row.get('status')}, {row.get('error')})", flush=True)
        finally:
            subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)
            # the staged release: 2.3 GB of random weights (also when the build failed part-way)
            subprocess.run(["rm", "-rf", *map(str, weights_image.STORE.glob("*"))], check=False)
    return finish_record(record, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
