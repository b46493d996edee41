"""Train the two bundled TotalSpineSeg-compatible models on synthetic spine phantoms (CPU).

The models reproduce the *interface* of the official TotalSpineSeg release, not its accuracy on
patients: same nnU-Net results layout (``Dataset101_TotalSpineSeg_step1`` and
``Dataset102_TotalSpineSeg_step2``, ``<Trainer>__<Plans>__3d_fullres/fold_0/checkpoint_final.pth``),
same input channels and the same intermediate label values as the official step 1 and step 2
networks (read from ``totalspineseg/inference/two_step.py``):

step 1 (input: MRI)             1 disc, 2 C2C3, 3 C7T1, 4 T12L1, 5 L5S, 6 sacrum, 7 C1, 8 canal, 9 cord
step 2 (input: MRI, odd discs)  1 disc, 2 C2C3, 3 C7T1, 4 T12L1, 5 L5S, 6 vertebra (general),
                                7 odd vertebra (C1, C3, ...), 8 even vertebra (C2, C4, ...),
                                9 sacrum, 10 canal, 11 cord

The network is nnU-Net's PlainConvUNet built from the plans written here, trained by a short
loop of our own (nnU-Net's trainer needs worker processes and, through its trainer lookup,
torchvision, which the CPU build of torch here cannot import). Only the project's phantom
generator provides data; nothing is downloaded.

    python -m tools.train_phantom_models --out models [--iterations 1500] [--cases 48]      # from the repository root
    python -m tools.train_phantom_models --device cuda --batch 16 --minutes 3.5 --cases 240 --workers 14

The same script trains on the CPU (the defaults) or on a CUDA GPU (``--device cuda``); with
``--minutes`` the learning-rate schedule follows the time budget instead of an iteration count.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from tools import phantom as P

TRAIN_SEEDS = range(1000, 2000)     # held-out evaluation uses seeds >= 5000 (bench/phantom_accuracy.py)
# The phantom networks work at 1.5 mm (nnU-Net resamples the 1 mm TotalSpineSeg input to the plans'
# spacing and back): 3.4x fewer voxels than 1 mm makes CPU training fit the budget, and a patch
# then spans 120 mm of spine, enough context to tell the landmark discs apart.
SPACING = 1.5
PATCH = (80, 48, 32)                # nnU-Net array axes after SimpleITK reading of a RAS image: (S-I, A-P, L-R)
FEATURES = (8, 16, 32, 64, 80)
TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"

STEP1 = {
    "dataset": "Dataset101_TotalSpineSeg_step1",
    "channels": {"0": "MRI"},
    "labels": {"background": 0, "disc": 1, "disc_C2_C3": 2, "disc_C7_T1": 3, "disc_T12_L1": 4,
               "disc_L5_S": 5, "sacrum": 6, "vertebrae_C1": 7, "canal": 8, "cord": 9},
}
STEP2 = {
    "dataset": "Dataset102_TotalSpineSeg_step2",
    "channels": {"0": "MRI", "1": "noNorm"},
    "labels": {"background": 0, "disc": 1, "disc_C2_C3": 2, "disc_C7_T1": 3, "disc_T12_L1": 4,
               "disc_L5_S": 5, "vertebrae": 6, "vertebrae_O": 7, "vertebrae_E": 8, "sacrum": 9,
               "canal": 10, "cord": 11},
}
LANDMARK_DISCS = {63: 2, 71: 3, 91: 4, 100: 5}


def step1_target(final: np.ndarray) -> np.ndarray:
    """Final TotalSpineSeg labels -> step 1 training labels."""
    out = np.zeros_like(final)
    out[np.isin(final, P.DISC_LABELS)] = 1
    for lab, v in LANDMARK_DISCS.items():
        out[final == lab] = v
    out[final == P.SACRUM] = 6
    out[final == P.VERTEBRA_LABELS["C1"]] = 7
    out[final == P.CANAL] = 8
    out[final == P.CORD] = 9
    return out


def step2_target(final: np.ndarray) -> np.ndarray:
    """Final labels -> step 2 training labels (vertebrae alternate odd 7 / even 8 from C1)."""
    out = step1_target(final)
    out[out >= 6] = 0
    # counted from C1 over C1..T12, L1..L6: an L6 (six lumbar vertebrae) continues the alternation
    for idx, label in enumerate(P.VERTEBRA_LABELS.values()):
        out[final == label] = 7 if idx % 2 == 0 else 8
    out[final == P.SACRUM] = 9
    out[final == P.CANAL] = 10
    out[final == P.CORD] = 11
    return out


def odd_disc_channel(final: np.ndarray) -> np.ndarray:
    """Second step-2 channel: every other disc from the most superior one, as totalspineseg's
    ``extract_alternate`` builds it at inference."""
    present = [lab for lab in P.DISC_LABELS if (final == lab).any()]
    return np.isin(final, present[::2]).astype(np.float32)


def plans_json(dataset: str, n_channels: int, median_shape, patch=PATCH, batch: int = 2) -> dict:
    n = len(FEATURES)
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": list(FEATURES),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resampling = lambda is_seg, order: {"is_seg": is_seg, "order": order, "order_z": 0, "force_separate_z": None}  # noqa: E731
    return {
        "dataset_name": dataset, "plans_name": PLANS,
        "original_median_spacing_after_transp": [SPACING] * 3,
        "original_median_shape_after_transp": [int(s) for s in median_shape],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": f"{PLANS}_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": int(batch), "patch_size": [int(p) for p in patch],
            "median_image_size_in_voxels": [int(s) for s in median_shape],
            "spacing": [SPACING] * 3,
            "normalization_schemes": ["ZScoreNormalization"] + ["NoNormalization"] * (n_channels - 1),
            "use_mask_for_norm": [False] * n_channels,
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": resampling(False, 3),
            "resampling_fn_seg_kwargs": resampling(True, 1),
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": resampling(False, 1),
            "architecture": arch, "batch_dice": False,
        }},
        "experiment_planner_used": "tools/train_phantom_models.py",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 1.0, "mean": 0.0, "median": 0.0, "min": 0.0, "percentile_00_5": 0.0,
                     "percentile_99_5": 1.0, "std": 1.0} for c in range(n_channels)},
    }


def build_network(plans: dict, n_in: int, n_out: int) -> torch.nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  n_in, n_out, allow_init=True, deep_supervision=False)


def zscore(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float32)
    return (img - img.mean()) / max(float(img.std()), 1e-8)


def render_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Phantom image and final labels in nnU-Net array layout (z, y, x) = (S-I, A-P, L-R) at the
    network spacing."""
    ph = P.make_phantom(seed)
    A, shape = P.canonical_grid(ph, spacing=SPACING)
    img, final = P.render(ph, A, shape, oversample=(2, 2, 2))
    return img.transpose(2, 1, 0).astype(np.float32), final.transpose(2, 1, 0).astype(np.uint8)


def crop_like_inference(seed: int, img: np.ndarray, final: np.ndarray):
    """Step 2 sees the image cropped to step 1's output (discs, C1, sacrum, canal, cord) with a
    10 mm margin, and nnU-Net z-scores that crop: train on the same crop, or the intensities the
    network learns differ from those it is given (the margin varies a little, as step 1's does)."""
    mask = step1_target(final) > 0
    if not mask.any():
        return img, final
    margin = int(np.random.default_rng(seed).integers(5, 10))     # ~10 mm at 1.5 mm, jittered
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, final.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    return img[sl], final[sl]


def make_case(seed: int, step: int):
    """One training case: (channels, target) at the network spacing."""
    img, final = render_case(seed)
    if step == 2:
        img, final = crop_like_inference(seed, img, final)
        chans, target = [zscore(img), odd_disc_channel(final)], step2_target(final)
    else:
        chans, target = [zscore(img)], step1_target(final)
    target = target.astype(np.uint8)
    # a few thousand voxels per class are plenty to centre patches on (rare landmarks included)
    rng = np.random.default_rng(seed)
    class_voxels = {}
    for c in np.unique(target)[1:]:
        vox = np.argwhere(target == c).astype(np.int32)
        class_voxels[int(c)] = vox[rng.choice(len(vox), min(len(vox), 2000), replace=False)]
    return np.stack(chans).astype(np.float32), target, class_voxels


def _make_case_args(args):
    return make_case(*args)


def make_cases(seeds, step: int, workers: int) -> list:
    if workers <= 1:
        return [make_case(s, step) for s in seeds]
    import multiprocessing as mp
    with mp.get_context("fork").Pool(workers) as pool:
        return pool.map(_make_case_args, [(s, step) for s in seeds], chunksize=1)


def sample_patch(rng, data, target, class_voxels, patch=PATCH):
    """Random patch; 60% are centred near a voxel of a random class present (rare landmarks too)."""
    shape = np.array(target.shape)
    patch = np.array(patch)
    if rng.random() < 0.6 and class_voxels:
        present = sorted(class_voxels)
        vox = class_voxels[present[rng.integers(len(present))]]
        centre = vox[rng.integers(len(vox))] + rng.integers(-12, 13, size=3)
    else:
        centre = np.array([rng.integers(0, s) for s in shape])
    lo = np.clip(centre - patch // 2, 0, np.maximum(shape - patch, 0))
    d = data[:, lo[0]:lo[0] + patch[0], lo[1]:lo[1] + patch[1], lo[2]:lo[2] + patch[2]]
    t = target[lo[0]:lo[0] + patch[0], lo[1]:lo[1] + patch[1], lo[2]:lo[2] + patch[2]]
    pad = [(0, 0)] + [(0, int(p - s)) for p, s in zip(patch, t.shape)]
    if any(p[1] for p in pad):
        d = np.pad(d, pad, mode="constant")
        t = np.pad(t, pad[1:], mode="constant")
    return d, t


def augment_batch(rng, x: "torch.Tensor", y: "torch.Tensor"):
    """Intensity and thick-slice augmentation of the MRI channel (channel 0), and left-right
    mirroring of image and target together; runs on whatever device the batch is on."""
    F = torch.nn.functional
    x = x.clone()
    for b in range(x.shape[0]):
        v = x[b, 0]
        if rng.random() < 0.4:   # thick sagittal slices resampled to 1 mm blur the L-R axis
            k = int(rng.integers(2, 5))
            pooled = F.avg_pool3d(v[None, None], kernel_size=(1, 1, k), stride=(1, 1, k))
            v = F.interpolate(pooled, size=v.shape, mode="trilinear", align_corners=False)[0, 0]
        if rng.random() < 0.3:
            v = v + torch.randn_like(v) * float(rng.uniform(0.05, 0.2))
        if rng.random() < 0.4:
            lo, hi = v.min(), v.max()
            v = ((v - lo) / (hi - lo + 1e-6)) ** float(rng.uniform(0.7, 1.5)) * (hi - lo) + lo
            v = (v - v.mean()) / (v.std() + 1e-6)
        x[b, 0] = v * float(rng.uniform(0.85, 1.15)) + float(rng.uniform(-0.15, 0.15))
    flip = torch.from_numpy(rng.random(x.shape[0]) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None, None], y.flip(-1), y)
    return x, y


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    ce = torch.nn.functional.cross_entropy(logits, target)
    probs = logits.softmax(1)
    onehot = torch.nn.functional.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    present = onehot.sum(dims) > 0
    return ce + (1 - dice[1:][present[1:]]).mean() if present[1:].any() else ce


def learning_rate(progress: float, peak: float = 3e-3) -> float:
    """Warm-up over the first 5 % then cosine decay to zero; ``progress`` runs from 0 to 1."""
    if progress < 0.05:
        return peak * (0.1 + 0.9 * progress / 0.05)
    return peak * 0.5 * (1 + np.cos(np.pi * min((progress - 0.05) / 0.95, 1.0)))


def train_step_model(step: int, out_root: Path, iterations: int, n_cases: int, seed0: int, log,
                     resume: bool = False, device: str = "cpu", batch: int = 2, minutes: float | None = None,
                     workers: int = 1, patch=PATCH, peak_lr: float = 3e-3) -> Path:
    spec = STEP1 if step == 1 else STEP2
    n_in, n_out = len(spec["channels"]), len(spec["labels"])
    torch.manual_seed(seed0 + step)
    rng = np.random.default_rng(seed0 + step)
    folder = out_root / "nnUNet" / "results" / spec["dataset"] / f"{TRAINER}__{PLANS}__3d_fullres"
    old = None
    if resume and (folder / "fold_0" / "checkpoint_final.pth").is_file():
        old = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    previous = (old or {}).get("spine_seg_provenance", {})
    used = [r[1] for r in previous.get("seed_ranges", [])]
    first = max(used) + 1 if used else TRAIN_SEEDS[0] + (step - 1) * 500   # a resumed run sees fresh phantoms
    seeds = [first + i for i in range(n_cases)]
    if seeds[-1] > TRAIN_SEEDS[-1]:
        raise SystemExit(f"step {step}: training seeds would pass {TRAIN_SEEDS[-1]}; use fewer --cases")
    t0 = time.time()
    cases = make_cases(seeds, step, workers)
    log(f"step {step}: generated {len(cases)} phantoms (seeds {seeds[0]}-{seeds[-1]}) in {time.time() - t0:.0f} s")
    median_shape = np.median([t.shape for _, t, _ in cases], axis=0)
    plans = plans_json(spec["dataset"], n_in, median_shape, patch, batch)
    net = build_network(plans, n_in, n_out)
    if old is not None:
        net.load_state_dict(old["network_weights"])
        log(f"step {step}: resuming from {previous.get('iterations', '?')} iterations")
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-5)
    use_bf16 = device.startswith("cuda")
    net.train()

    def make_batch(seed: int):
        r = np.random.default_rng(seed)
        items = [sample_patch(r, *cases[r.integers(len(cases))], patch=patch) for _ in range(batch)]
        x = torch.from_numpy(np.stack([d for d, _ in items]))
        y = torch.from_numpy(np.stack([t for _, t in items]).astype(np.int64))
        return x, y

    # patches are cut in background threads (numpy copies release the GIL) while the network trains
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(max(1, min(4, workers)))
    pending = [pool.submit(make_batch, int(rng.integers(2**31))) for _ in range(4)]

    def next_batch():
        pending.append(pool.submit(make_batch, int(rng.integers(2**31))))
        return pending.pop(0).result()

    t0 = time.time()
    running = None
    it = 0
    budget = None if minutes is None else minutes * 60
    while True:
        progress = (time.time() - t0) / budget if budget else it / iterations
        if progress >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(progress, peak_lr)
        x, y = next_batch()
        x, y = augment_batch(rng, x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = net(x)
        loss = dice_ce_loss(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()
        it += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if it % 50 == 0:
            log(f"step {step}: iteration {it} ({100 * progress:.0f} %) loss {running:.3f} ({time.time() - t0:.0f} s)")
    pool.shutdown(cancel_futures=True)
    net.to("cpu")
    iterations = it
    train_s = time.time() - t0 + float(previous.get("train_seconds", 0))
    samples = iterations * batch + int(previous.get("samples", previous.get("iterations", 0) * 2))
    iterations += int(previous.get("iterations", 0))
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    dataset = {"channel_names": spec["channels"], "labels": spec["labels"], "numTraining": len(seeds),
               "file_ending": ".nii.gz", "name": spec["dataset"],
               "description": "PHANTOM model trained on synthetic spines by spine-seg; not for clinical use"}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    ckpt = {
        "network_weights": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "trainer_name": TRAINER,
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset},
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": iterations,
        "spine_seg_provenance": {"kind": "phantom", "iterations": iterations, "samples": samples,
                                 "batch": batch, "patch": [int(p) for p in patch], "device": device,
                                 "seed_ranges": previous.get("seed_ranges", [previous["seeds"]] if "seeds" in previous else [])
                                 + [[seeds[0], seeds[-1]]],
                                 "train_seconds": round(train_s, 1), "script": "tools/train_phantom_models.py"},
    }
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    digest = hashlib.sha256((folder / "fold_0" / "checkpoint_final.pth").read_bytes()).hexdigest()
    log(f"step {step}: trained {iterations} iterations in {train_s:.0f} s -> {folder} (sha256 {digest[:16]})")
    return folder


def write_provenance(out: Path, cases: int, threads: int) -> None:
    """models/PROVENANCE.json from what each checkpoint says about its own training."""
    steps = {}
    for spec in (STEP1, STEP2):
        ckpt = out / "nnUNet" / "results" / spec["dataset"] / f"{TRAINER}__{PLANS}__3d_fullres" / "fold_0" / \
            "checkpoint_final.pth"
        if ckpt.is_file():
            prov = torch.load(ckpt, map_location="cpu", weights_only=False).get("spine_seg_provenance", {})
            steps[spec["dataset"]] = {**prov, "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
    record = {
        "kind": "phantom", "clinical_use": False,
        "script": "tools/train_phantom_models.py", "generator": "tools/phantom.py",
        "trained_on": dt.date.today().isoformat(), "cases_per_run": cases,
        "train_seed_range": [TRAIN_SEEDS[0], TRAIN_SEEDS[-1]], "torch": torch.__version__, "threads": threads,
        "network": {"features": list(FEATURES), "spacing_mm": SPACING},
        "steps": steps,
    }
    (out / "PROVENANCE.json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--minutes", type=float, default=None,
                    help="train each step for this long instead of --iterations")
    ap.add_argument("--cases", type=int, default=48)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="processes generating phantoms")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--patch", type=int, nargs=3, default=list(PATCH), metavar=("SI", "AP", "LR"),
                    help="patch in voxels at the network spacing (each a multiple of 16)")
    ap.add_argument("--resume", action="store_true", help="continue training the models already in --out")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (lower it to fine-tune with --resume)")
    a = ap.parse_args(argv)
    if any(p % 16 for p in a.patch):
        ap.error("--patch sizes must be multiples of 16 (four 2x poolings)")
    torch.set_num_threads(a.threads)
    if a.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    started = time.time()

    def log(msg):
        print(f"[{time.time() - started:7.0f} s] {msg}", flush=True)
    for step in a.steps:
        train_step_model(step, a.out, a.iterations, a.cases, a.seed + (1000 if a.resume else 0), log, a.resume,
                         a.device, a.batch, a.minutes, a.workers, tuple(a.patch), a.lr)
    write_provenance(a.out, a.cases, a.threads)
    log(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
