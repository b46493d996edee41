"""Network-stage time with a full-size network: what users will see with the official weights.

The bundled phantom models are small; the official TotalSpineSeg networks are nnU-Net 3d_fullres
networks at 1 mm. This benchmark plans a full-size network with nnU-Net's own ResEnc-L planner
(``nnUNetPlannerResEncL``) from the fingerprint of 1 mm spine data, saves it with random weights in
the official results layout, loads it through spine-seg's model loader and times spine-seg's
network call (``LoadedModel.predict``: nnU-Net preprocessing, sliding window, resampling back) on
a volume the size of a clinical sagittal lumbar T2 resampled to 1 mm. Random weights cost exactly
what trained ones do.

    python -m bench.network_speed [--device auto|cpu|cuda] [--runs 3] [--shape 72 300 300] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Shapes (z, y, x) = (S-I, A-P, L-R) after cropping, at 1 mm, of the kinds of series TotalSpineSeg is
# trained on: lumbar, cervical and thoracic sagittal stacks and whole-spine composites.
FINGERPRINT_SHAPES = [[300, 300, 72], [260, 260, 60], [330, 320, 80], [420, 300, 70], [880, 320, 80],
                      [300, 280, 64], [250, 250, 56]]


def _placeholders_for_file_io() -> None:
    """nnU-Net imports SimpleITK (image files) and blosc2 (training-data compression) at module
    level; this benchmark uses neither. Where one is not installed (a bare GPU machine), a
    placeholder module lets the import pass; the timed code is unchanged."""
    import importlib
    import types
    for name in ("SimpleITK", "blosc2"):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)


def resencl_plans(work: Path, n_channels: int) -> dict:
    """3d_fullres plans from nnU-Net's ResEnc-L planner for 1 mm spine data."""
    os.environ["nnUNet_raw"] = str(work / "raw")
    os.environ["nnUNet_preprocessed"] = str(work / "preprocessed")
    os.environ["nnUNet_results"] = str(work / "results")
    name = "Dataset901_SpineTiming"
    raw = work / "raw" / name
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(len(FINGERPRINT_SHAPES)):      # the planner lists the cases; it never reads them
        for c in range(n_channels):
            (raw / "imagesTr" / f"case{i:03d}_{c:04d}.nii.gz").touch()
        (raw / "labelsTr" / f"case{i:03d}.nii.gz").touch()
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): ("MRI" if c == 0 else "noNorm") for c in range(n_channels)},
        "labels": {"background": 0, **{f"class{i}": i for i in range(1, 12)}},
        "numTraining": len(FINGERPRINT_SHAPES), "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO"}))   # no example file to sniff
    pre = work / "preprocessed" / name
    pre.mkdir(parents=True, exist_ok=True)
    (pre / "dataset_fingerprint.json").write_text(json.dumps({
        "spacings": [[1.0, 1.0, 1.0]] * len(FINGERPRINT_SHAPES),
        "shapes_after_crop": FINGERPRINT_SHAPES,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 1000.0, "mean": 300.0, "median": 280.0, "min": 0.0, "percentile_00_5": 5.0,
                     "percentile_99_5": 900.0, "std": 150.0} for c in range(n_channels)}}))
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        nnUNetPlannerResEncL)
    planner = nnUNetPlannerResEncL(name)
    planner.plan_experiment()
    plans = json.loads(next(pre.glob("nnUNetResEncUNetLPlans*.json")).read_text())
    plans["configurations"] = {"3d_fullres": plans["configurations"]["3d_fullres"]}
    return plans


def save_random_model(plans: dict, n_channels: int, n_labels: int, folder: Path) -> None:
    """A results folder in the official layout with randomly initialised weights."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"]["3d_fullres"]["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 n_channels, n_labels, allow_init=True, deep_supervision=False)
    dataset = {"channel_names": {str(c): ("MRI" if c == 0 else "noNorm") for c in range(n_channels)},
               "labels": {"background": 0, **{f"class{i}": i for i in range(1, n_labels)}},
               "numTraining": 1, "file_ending": ".nii.gz"}
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2)},
               folder / "fold_0" / "checkpoint_final.pth")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs=3, default=[72, 300, 300], metavar=("LR", "AP", "SI"),
                    help="1 mm volume in voxels (default: a 20-slice 3.5 mm lumbar T2, 300 mm field of view)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    _placeholders_for_file_io()
    import nibabel as nib
    import torch

    from spineseg.inference.two_step import LoadedModel, pick_device

    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    rng = np.random.default_rng(0)
    image = nib.Nifti1Image(rng.normal(300, 80, a.shape).astype(np.float32), np.eye(4))
    # step 2 runs on the image cropped to step 1's spine with a 10 mm margin: about 60 mm L-R and
    # 140 mm A-P of a sagittal stack, the whole S-I extent
    crop = (min(a.shape[0], 60), min(a.shape[1], 140), a.shape[2])
    cropped = nib.Nifti1Image(rng.normal(300, 80, crop).astype(np.float32), np.eye(4))
    odd = nib.Nifti1Image((rng.random(crop) < 0.05).astype(np.float32), np.eye(4))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for step, n_ch, n_lab in (("step1", 1, 10), ("step2", 2, 12)):
            plans = resencl_plans(Path(tmp) / step, n_ch)
            folder = Path(tmp) / step / "model" / "nnUNetTrainer__nnUNetResEncUNetLPlans__3d_fullres"
            save_random_model(plans, n_ch, n_lab, folder)
            model = LoadedModel(folder, device)
            cfg = plans["configurations"]["3d_fullres"]
            params = sum(p.numel() for p in model.predictor.network.parameters())
            channels = [image] if n_ch == 1 else [cropped, odd]
            times = []
            if device == "cuda":
                model.predict(channels)          # warm-up: cuDNN picks its kernels on the first call
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            for _ in range(a.runs):
                t0 = time.perf_counter()
                model.predict(channels)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            rows[step] = {"input_shape": list(channels[0].shape), "seconds": [round(t, 2) for t in times], "median_s": round(float(np.median(times)), 2),
                          "patch": cfg["patch_size"], "features": cfg["architecture"]["arch_kwargs"]["features_per_stage"],
                          "parameters_m": round(params / 1e6, 1)}
            if device == "cuda":
                rows[step]["gpu_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
            print(f"{step}: ResEnc-L {rows[step]['parameters_m']} M parameters, patch {cfg['patch_size']}, "
                  f"{device}: {rows[step]['median_s']} s median of {times}", flush=True)
            del model
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    summary = {"device": name, "volume_1mm": a.shape, "runs": a.runs, **rows,
               "network_total_median_s": round(sum(r["median_s"] for r in rows.values()), 2),
               "peak_rss_gb": round(peak_rss_gb, 2)}
    print(json.dumps(summary, indent=2))
    if a.json:
        a.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
