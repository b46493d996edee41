"""Size, build time and first-run time of the MAP images, as `make image GPU=1` builds them on a clean engine.

    python -m bench.images [--json bench/results/images.json]

Removes every image of the engine (`docker image prune -af`: the base image is imported again from its cached
root file system tarball, the wheelhouses in build/wheelhouse are kept, as a second CI run on the same machine
would find them), builds both images with `make image GPU=1`, then runs the demo study (`make demo`'s) once in
each as tests/container_helpers.run_map does (non-root, read-only, app.yaml's cpu and memory, no network): the
first run of a fresh container, start to exit. Needs a Docker engine; about 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.official_image import run_in_image
from bench.records import finish_record, start_record
from tools import build_image

ROOT = Path(__file__).resolve().parent.parent

IMAGES = {"cpu": build_image.TAG, "gpu": build_image.GPU_TAG}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    record = start_record("images")
    subprocess.run(["docker", "image", "prune", "-af"], check=True, capture_output=True)
    t0 = time.monotonic()
    subprocess.run(["make", "-C", str(ROOT), "image", "GPU=1"], check=True)
    record["make_image_gpu_s"] = round(time.monotonic() - t0, 1)
    for name, record_file in (("cpu", "build-record.json"), ("gpu", "build-record-gpu.json")):
        built = json.loads((ROOT / "build" / "image" / record_file).read_text())
        record[name] = {"tag": IMAGES[name], "size_gb": round(built["size_bytes"] / 1e9, 2),
                        "build_steps_s": built["seconds"]}
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        study = Path(tmp) / "study"
        subprocess.run([sys.executable, str(ROOT / "tools" / "phantom.py"), "--seed", "7", "--fov", "lumbar",
                        "--slice-thickness", "3.5", "--pixel", "0.6", "--out", str(study)], check=True,
                       capture_output=True)
        subprocess.run(["chmod", "-R", "a+rX", tmp], check=True)
        for name, tag in IMAGES.items():
            run = run_in_image(tag, study / "dicom", Path(tmp) / f"out-{name}", "auto")
            record[name]["first_run"] = {k: run.get(k) for k in ("exit_status", "container_wall_s", "app_wall_s",
                                                                 "peak_memory_gb")}
            record[name]["first_run"]["load_models_s"] = (run.get("stages_s") or {}).get("load_models")
            print(f"{name}: {record[name]['size_gb']} GB, first run {run['container_wall_s']} s", flush=True)
    return finish_record(record, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
