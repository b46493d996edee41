"""Inference backends: which one runs where, their agreement with the exact path, and the exported-IR cache."""
import logging
import shutil

import numpy as np
import pytest

from spineseg.errors import ModelError, SpineSegError
from spineseg.inference import backends
from spineseg.inference.precompile import precompile
from spineseg.inference.two_step import (STEP1_DATASET, LoadedModel, find_model_folder, load_models, lps_to_ras,
                                         segment_volume)
from spineseg.settings import AppConfig

openvino = pytest.importorskip("openvino", reason="openvino is in requirements.txt; install it")
CPU_BACKENDS = ["openvino"] + (["openvino-bf16"] if backends.cpu_has_bf16() else [])
# Final-label agreement with the torch path, as a share of all voxels and of foreground voxels (either map
# non-zero): the default backend (fp32) must reach 99.9 % of both; bf16, measured at 99.89-99.93 % of the
# phantoms' foreground (bench/results/backends.json) and so never the default, is held to 99.8 %.
AGREEMENT_FLOOR = 0.999
FOREGROUND_FLOOR = {"openvino": 0.999, "openvino-bf16": 0.998}


def test_auto_is_torch_on_cuda_and_openvino_fp32_on_the_cpu(monkeypatch):
    """bf16 is never the default, even where the CPU has bf16 units: its labels fall below the agreement floor
    on foreground voxels (README, Inference backends)."""
    assert backends.resolve("auto", "cuda") == "torch"
    assert backends.resolve("auto", "cuda:1") == "torch"
    for bf16 in (True, False):
        monkeypatch.setattr(backends, "cpu_has_bf16", lambda: bf16)
        assert backends.resolve("auto", "cpu") == "openvino"
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert backends.resolve("auto", "cpu") == "torch"
    assert backends.resolve("TORCH", "cpu") == "torch"


@pytest.mark.parametrize("setting,device,bf16,code,says", [
    ("tpu", "cpu", True, "BACKEND_UNKNOWN", "openvino-bf16"),
    ("openvino", "cuda", True, "BACKEND_UNAVAILABLE", "SPINESEG_BACKEND=torch"),
    ("openvino-bf16", "cpu", False, "BACKEND_UNAVAILABLE", "AMX or AVX512-BF16"),
])
def test_a_backend_that_cannot_run_is_refused_with_what_to_change(monkeypatch, setting, device, bf16, code, says):
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: bf16)
    with pytest.raises(ModelError) as err:
        backends.resolve(setting, device)
    assert err.value.code == code and says in str(err.value)


def test_the_backend_setting_is_read_and_checked(tmp_path):
    cfg = AppConfig.from_settings(tmp_path, tmp_path, None, {"backend": "openvino"}, env={})
    assert cfg.backend == "openvino"
    assert AppConfig.from_settings(tmp_path, tmp_path, None, {}, env={"SPINESEG_BACKEND": "Torch"}).backend == "torch"
    assert AppConfig.from_settings(tmp_path, tmp_path, None, {}, env={}).backend == "auto"
    with pytest.raises(SpineSegError, match="SPINESEG_BACKEND='gpu' must be one of auto, torch, openvino"):
        AppConfig.from_settings(tmp_path, tmp_path, None, {}, env={"SPINESEG_BACKEND": "gpu"})


@pytest.fixture(scope="module")
def lumbar_case():
    import reference_cli as R
    img, _ = R.phantom_nifti(5200, "lumbar", 2.0, 1.0)
    return np.asanyarray(img.dataobj), lps_to_ras(img.affine)


@pytest.fixture(scope="module")
def exact_labels(lumbar_case, models_dir):
    return segment_volume(*lumbar_case, load_models(models_dir, "cpu", backend="torch")).labels


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_each_cpu_backend_agrees_with_the_exact_path_above_the_floor(backend, lumbar_case, exact_labels, models_dir):
    pair = load_models(models_dir, "cpu", backend=backend)
    assert pair.describe()["backend"] == backend
    assert pair.describe()["step1"]["openvino_ir"] in ("exported", "cache")
    labels = segment_volume(*lumbar_case, pair).labels
    same = labels == exact_labels
    foreground = (labels > 0) | (exact_labels > 0)
    assert foreground.sum() > 10_000                      # a real segmentation, not two empty maps
    assert same.mean() >= AGREEMENT_FLOOR, f"{backend}: {same.mean():.5f} of voxels agree with torch"
    assert same[foreground].mean() >= FOREGROUND_FLOOR[backend], f"{backend}: {same[foreground].mean():.5f} of foreground"
    assert set(np.unique(labels)) == set(np.unique(exact_labels))       # the same levels, named the same


def test_openvino_without_the_hint_would_not_be_fp32():
    """Why ``openvino`` sets INFERENCE_PRECISION_HINT: on a CPU with bf16 units the plugin's default is bf16."""
    if not backends.cpu_has_bf16():
        pytest.skip("this CPU has no bf16 units: OpenVINO's default is fp32 here")
    assert str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"


def _copy_model(models_dir, tmp_path):
    src = find_model_folder(models_dir, STEP1_DATASET)
    dst = tmp_path / "nnUNet" / "results" / STEP1_DATASET / src.name
    shutil.copytree(src, dst)
    return dst


def _change_checkpoint(folder):
    import torch
    path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    weights = ckpt["network_weights"]
    # the last segmentation head is the one that reaches the output (no deep supervision at inference)
    head = max((k for k in weights if "seg_layers" in k and k.endswith("bias")), key=lambda k: int(k.split(".")[-2]))
    weights[head] = weights[head] + torch.linspace(-1, 1, weights[head].numel()).reshape(weights[head].shape)
    torch.save(ckpt, path)


def _patch(model):
    return np.random.default_rng(1).normal(size=(1, model.n_inputs, *model.patch_size)).astype(np.float32)


def test_the_ir_is_exported_once_then_reused_and_a_changed_checkpoint_replaces_it(tmp_path, models_dir):
    import torch
    folder, cache = _copy_model(models_dir, tmp_path), tmp_path / "cache"
    first = LoadedModel(folder, backend="openvino", cache_dir=cache)
    assert first.ir_source == "exported"
    (entry,) = [p.parent for p in cache.glob("*/model.xml")]
    with pytest.MonkeyPatch.context() as mp:
        # a cached IR is run as it is: no PyTorch network is built, no weights are read into memory
        mp.setattr(LoadedModel, "torch_network", lambda *_: pytest.fail("built the PyTorch network"))
        assert LoadedModel(folder, backend="openvino", cache_dir=cache).ir_source == "cache"
    x = torch.from_numpy(_patch(first))
    before = first.predictor.network(x).numpy()

    _change_checkpoint(folder)
    changed = LoadedModel(folder, backend="openvino", cache_dir=cache)
    assert changed.ir_source == "exported"                           # a stale IR is never run
    (new_entry,) = [p.parent for p in cache.glob("*/model.xml")]     # and the stale one is removed
    assert new_entry != entry
    exact = LoadedModel(folder, backend="torch")
    with torch.inference_mode():
        want = exact.predictor.network(x).numpy()
    got = changed.predictor.network(x).numpy()
    # the new IR computes the new weights (fp32: within rounding), the old one did not
    assert np.abs(got - want).max() < 0.01 * np.abs(want).max()
    assert np.abs(got - want).max() * 10 < np.abs(before - want).max()


def test_a_read_only_model_folder_uses_its_precompiled_ir(tmp_path, models_dir, caplog):
    models = tmp_path / "models"
    shutil.copytree(models_dir / "nnUNet", models / "nnUNet")
    folder = find_model_folder(models, STEP1_DATASET)
    (written,) = [p for p in precompile(models) if p.is_relative_to(folder)]
    assert written.parent.parent == folder / backends.PRECOMPILED_FOLDER
    # a cache "folder" under a regular file can never be created, even by root
    (tmp_path / "file").write_text("")
    unwritable = tmp_path / "file" / "cache"
    assert LoadedModel(folder, backend="openvino", cache_dir=unwritable).ir_source == "precompiled"

    shutil.rmtree(folder / backends.PRECOMPILED_FOLDER)
    with caplog.at_level(logging.WARNING, logger="spineseg.inference.backends"):
        model = LoadedModel(folder, backend="openvino", cache_dir=unwritable)
    assert model.ir_source == "exported"                            # still runs, exporting in memory
    assert "SPINESEG_OPENVINO_CACHE" in caplog.text


def test_a_broken_ir_in_the_cache_is_not_used(tmp_path, models_dir):
    folder, cache = _copy_model(models_dir, tmp_path), tmp_path / "cache"
    LoadedModel(folder, backend="openvino", cache_dir=cache)
    (manifest,) = cache.glob("*/manifest.json")
    manifest.write_text("{")                                         # a half-written manifest
    assert LoadedModel(folder, backend="openvino", cache_dir=cache).ir_source == "exported"
    assert LoadedModel(folder, backend="openvino", cache_dir=cache).ir_source == "cache"   # and it was mended


@pytest.mark.parametrize("files,expected", [
    ({"cpu.max": "200000 100000\n"}, 2),                                  # cgroup v2, --cpus 2
    ({"cpu.max": "150000 100000\n"}, 2),                                  # 1.5 CPUs: two threads, one part-time
    ({"cpu.max": "max 100000\n"}, None),                                  # no limit: the affinity
    ({"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"}, 1),   # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    ({}, None),
])
def test_openvino_threads_follow_the_container_cpu_limit(tmp_path, files, expected):
    import os
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert backends.cpu_budget(tmp_path) == (min(expected, affinity) if expected else affinity)
