"""Every inference backend side by side: speed, peak memory and agreement with the exact (torch) path.

Part ``phantom``: the reference-agreement cases (bench/reference_agreement.py) segmented with the bundled
phantom models under each backend; final labels compared with the torch path's, over all voxels and over
foreground voxels (either map non-zero). The torch path equals the ``totalspineseg`` command on these cases
(bench/results/reference_agreement.json), so these figures are also agreement with the command.

Part ``fullsize``: a clinical sagittal lumbar T2 study (21 slices of 512x512 px, 3.5 mm / 0.6 mm, a
phantom) run DICOM in -> SEG, SR and review picture written, through ``spineseg.pipeline.run_all``, with the
networks of the official TotalSpineSeg architecture: TotalSpineSeg's recipe (scripts/train.sh) plans with
nnU-Net's ``nnUNetPlannerResEncL`` and saves the plans as ``nnUNetPlans`` (release folder
``nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres``); the planner, given 1 mm spine data, gives a 7-stage
ResidualEncoderUNet, 32-320 features, 141 M parameters, patch 256x256x80 (see bench/network_speed.py for the
fingerprint assumed). The weights are random (the same for every backend; they cost what trained ones do),
so random logits cannot be labelled: each step runs the full-size network on the real step input (timed,
and its output kept for the argmax comparison), then the bundled network on the same input (not timed)
whose labels continue down the pipeline. A network stage's time below is the full-size network's alone;
every other stage is the pipeline's own.

Each backend runs in its own process, one after another, so its peak resident memory is its own.

    python -m bench.backends [--part phantom|fullsize|both] [--backends torch openvino openvino-bf16]
                             [--device cpu|cuda] [--json bench/results/backends.json]

``--device cuda`` loads the networks on the GPU (``--backends torch`` only: the OpenVINO backends run on the
CPU and are refused there).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.agreement import agreement, minimum_agreement
from bench.records import finish_record, start_record

ROOT = Path(__file__).resolve().parent.parent
FULL_SIZE_FOLDER = "nnUNetTrainerDAExtGPU__nnUNetPlans__3d_fullres"
CLINICAL = dict(seed=5601, fov="lumbar", slice_thickness=3.5, pixel=0.6, matrix=512)


def make_full_size_models(models: Path, work: Path, folder_name: str = FULL_SIZE_FOLDER,
                          checkpoint_seeds: dict[str, int] | None = None) -> Path:
    """Both steps in the official layout with the official architecture and seeded random weights: one
    checkpoint per entry of ``checkpoint_seeds`` (file name -> seed; default checkpoint_final.pth, seed 0)."""
    import torch

    from bench import network_speed as NS
    out = work / "fullsize_models"
    for step, n_ch in (("Dataset101_TotalSpineSeg_step1", 1), ("Dataset102_TotalSpineSeg_step2", 2)):
        bundled = next((models / "nnUNet" / "results" / step).glob("*__*__*"))
        dataset = json.loads((bundled / "dataset.json").read_text())
        plans = NS.resencl_plans(work / f"plan_{step}", n_ch)
        plans["plans_name"] = "nnUNetPlans"
        folder = out / "nnUNet" / "results" / step / folder_name
        for name, seed in (checkpoint_seeds or {"checkpoint_final.pth": 0}).items():
            torch.manual_seed(seed)
            NS.save_random_model(plans, n_ch, len(dataset["labels"]), folder)   # writes checkpoint_final.pth
            (folder / "fold_0" / "checkpoint_final.pth").rename(folder / "fold_0" / f"{name}.saved")
        for saved in (folder / "fold_0").glob("*.saved"):
            saved.rename(saved.with_suffix(""))
        (folder / "dataset.json").write_text(json.dumps({**dataset, "description": "random weights (timing)"}))
    return out


class Shadowed:
    """A step whose output comes from the bundled network while the full-size one is run and timed."""

    def __init__(self, full, bundled, keep: Path, step: str):
        self.full, self.bundled, self.keep, self.step = full, bundled, keep, step
        self.info, self.n_inputs, self.ir_source = bundled.info, bundled.n_inputs, full.ir_source
        self.ir_warning = full.ir_warning
        self.full_s = self.bundled_s = 0.0

    def predict(self, channels):
        t0 = time.perf_counter()
        full = self.full.predict(channels)
        self.full_s += time.perf_counter() - t0
        np.save(self.keep / f"{self.step}_fullsize_argmax.npy", np.asanyarray(full.dataobj))
        t0 = time.perf_counter()
        out = self.bundled.predict(channels)
        self.bundled_s += time.perf_counter() - t0
        return out


def worker_phantom(backend: str, models: Path, keep: Path, device: str = "cpu") -> dict:
    from bench import reference_agreement as RA
    from spineseg.inference.two_step import load_models, lps_to_ras, segment_volume
    t0 = time.perf_counter()
    pair = load_models(models, device, backend=backend)
    rows = {"load_s": round(time.perf_counter() - t0, 2), "ir": pair.describe()["step1"].get("openvino_ir"),
            "cases": []}
    for seed, fov, img in RA.case_inputs():
        t0 = time.perf_counter()
        result = segment_volume(np.asanyarray(img.dataobj), lps_to_ras(img.affine), pair)
        np.save(keep / f"phantom_{seed}.npy", result.labels)
        rows["cases"].append({"seed": seed, "fov": fov, "shape": list(img.shape),
                              "seconds": round(time.perf_counter() - t0, 2),
                              "network_s": round(result.timings["step1_network"] + result.timings["step2_network"], 2)})
    return rows


def worker_fullsize(backend: str, models: Path, full_models: Path, study: Path, keep: Path,
                    device: str = "cpu") -> dict:
    import spineseg.pipeline as pipeline
    from spineseg.inference.two_step import ModelPair, load_models
    from spineseg.report import RunReport
    from spineseg.settings import AppConfig

    t0 = time.perf_counter()
    full = load_models(full_models, device, release="direct", backend=backend)
    load_full_s = time.perf_counter() - t0
    bundled = load_models(models, device, backend="torch")
    shadows = [Shadowed(f, b, keep, s) for f, b, s in ((full.step1, bundled.step1, "step1"),
                                                       (full.step2, bundled.step2, "step2"))]
    pipeline.load_models = lambda *_a, **_k: ModelPair(*shadows, device, backend)
    out = keep / "out"
    cfg = AppConfig.from_settings(study, out, models, env={})
    out.mkdir()
    report = RunReport(out)
    t0 = time.perf_counter()
    pipeline.run_all(cfg, report)
    wall = time.perf_counter() - t0
    stages = dict(report.timings)
    for shadow in shadows:               # a network stage is the full-size network's time alone
        stages[f"{shadow.step}_network"] = round(stages[f"{shadow.step}_network"] - shadow.bundled_s, 2)
    stages["load_models"] = round(load_full_s, 2)
    bundled_s = sum(s.bundled_s for s in shadows)
    return {"stages_s": stages, "dicom_to_outputs_s": round(wall - bundled_s + load_full_s, 1),
            "ir": full.describe()["step1"].get("openvino_ir"),
            "outputs": sorted(p.name for p in out.iterdir() if p.suffix in (".dcm", ".png"))}


def run_worker(a) -> int:
    keep = a.keep
    keep.mkdir(parents=True, exist_ok=True)
    if a.worker_part == "phantom":
        row = worker_phantom(a.worker, a.models, keep, a.device)
    else:
        row = worker_fullsize(a.worker, a.models, a.full_models, a.study, keep, a.device)
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    if a.device.startswith("cuda"):
        import torch
        row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    (keep / "row.json").write_text(json.dumps(row))
    return 0


def spawn(backend: str, part: str, keep: Path, models: Path, env: dict, device: str = "cpu", **paths) -> dict:
    cmd = [sys.executable, "-m", "bench.backends", "--worker", backend, "--worker-part", part, "--keep", str(keep),
           "-m", str(Path(models).resolve()), "--device", device,
           *[x for k, v in paths.items() for x in (f"--{k.replace('_', '-')}", str(v))]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)     # python -m: from the root
    if proc.returncode != 0:
        return {"error": (proc.stdout + proc.stderr)[-1500:]}
    return json.loads((keep / "row.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["phantom", "fullsize", "both"], default="both")
    ap.add_argument("--backends", nargs="+", default=["torch", "openvino", "openvino-bf16"])
    ap.add_argument("-m", "--models", type=Path, default=ROOT / "models")
    ap.add_argument("--device", default="cpu", help="where the networks load: cpu, or cuda (torch backend only)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--timing-only", action="store_true", help="run only the named backends (no torch run to "
                    "compare with: agreement is not measured)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-part", help=argparse.SUPPRESS)
    ap.add_argument("--keep", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--full-models", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--study", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return run_worker(a)
    if "torch" not in a.backends and not a.timing_only:
        a.backends.insert(0, "torch")        # the exact path everything is compared with
    compare = "torch" in a.backends
    import torch

    from spineseg.inference.backends import cpu_has_bf16
    from tools import phantom as P
    # a part not run this time keeps its rows (and load average) from the record being rewritten
    record = json.loads(a.json.read_text()) if a.json and a.json.is_file() else {}
    record.update(start_record("backends"))
    record.update({"cpu": f"{os.cpu_count()} cores, bf16 units: {cpu_has_bf16()}",
                   "torch_threads": torch.get_num_threads(),
                   "device": f"{a.device}: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() and
                   a.device.startswith("cuda") else a.device})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # a fresh cache, so every export is timed, unless one is given (to time runs that find their IR cached)
        env = {**os.environ, "SPINESEG_OPENVINO_CACHE": os.environ.get("SPINESEG_OPENVINO_CACHE") or str(tmp / "ov-cache")}
        if a.part in ("phantom", "both"):
            load_at_start = round(os.getloadavg()[0], 1)
            rows = {b: spawn(b, "phantom", tmp / f"ph_{b}", a.models, env, a.device) for b in a.backends}
            for b, row in rows.items():
                if "error" in row or not compare:
                    continue
                for case in row["cases"]:
                    exact = np.load(tmp / "ph_torch" / f"phantom_{case['seed']}.npy")
                    case["agreement_with_torch"] = agreement(np.load(tmp / f"ph_{b}" / f"phantom_{case['seed']}.npy"),
                                                             exact)
                if row["cases"]:
                    row["minimum_agreement"] = minimum_agreement([c["agreement_with_torch"] for c in row["cases"]])
                    row["same_structures_in_every_case"] = all(c["agreement_with_torch"]["same_structures"]
                                                               for c in row["cases"])
                print(f"phantom {b:14s} " + (f"min agreement {row.get('minimum_agreement')}, network "
                      f"{sum(c['network_s'] for c in row['cases']):.1f} s over {len(row['cases'])} cases, "
                      f"peak {row['peak_rss_gb']} GB" if "cases" in row else row["error"]), flush=True)
            record["phantom_cases"] = rows
            record["phantom_cases_load_average"] = [load_at_start, round(os.getloadavg()[0], 1)]
        if a.part in ("fullsize", "both"):
            load_at_start = round(os.getloadavg()[0], 1)
            full_models = make_full_size_models(a.models, tmp)
            study = tmp / "clinical"
            P.write_case(out_dir=study, **CLINICAL)
            rows = {b: spawn(b, "fullsize", tmp / f"fs_{b}", a.models, env, a.device, full_models=full_models,
                             study=study / "dicom") for b in a.backends}
            for b, row in rows.items():
                if "error" in row:
                    print(f"fullsize {b}: {row['error']}")
                    continue
                for step in ("step1", "step2") if compare else ():
                    exact = np.load(tmp / "fs_torch" / f"{step}_fullsize_argmax.npy")
                    ours = np.load(tmp / f"fs_{b}" / f"{step}_fullsize_argmax.npy")
                    row[f"{step}_argmax_agreement_random_weights"] = round(float((ours == exact).mean()), 6)
                print(f"fullsize {b:14s} DICOM -> outputs {row['dicom_to_outputs_s']} s, stages {row['stages_s']}, "
                      f"argmax agreement {row.get('step1_argmax_agreement_random_weights')}/"
                      f"{row.get('step2_argmax_agreement_random_weights')}, peak {row['peak_rss_gb']} GB", flush=True)
            record["fullsize_clinical_lumbar"] = {"study": CLINICAL, "network": "ResEnc-L (nnUNetPlannerResEncL "
                                                  "saved as nnUNetPlans), random weights", **rows}
            record["fullsize_load_average"] = [load_at_start, round(os.getloadavg()[0], 1)]
    return finish_record(record, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
