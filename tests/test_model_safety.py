"""Nothing runs from a model file, and the OpenVINO IR cache cannot lie (issue 24, items 1 and 2).

Checkpoints are unpickled with ``weights_only=True`` and an allow-list of what nnU-Net v2 checkpoints hold;
anything else is MODEL_MALFORMED naming the file, with nothing from it run. Each cached or precompiled IR
carries a manifest with the size and SHA-256 of its files, checked before it runs: a cached IR that does not
match is exported again with a warning, a precompiled one is refused.
"""
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from conftest import ROOT
from helpers import run_app
from spineseg.errors import ModelError
from spineseg.inference import backends
from spineseg.inference.precompile import precompile
from spineseg.inference.two_step import (STEP1_DATASET, STEP2_DATASET, LoadedModel, ModelPair, _load_checkpoint,
                                         find_model_folder, lps_to_ras, segment_volume)

CHECKPOINT = "fold_0/checkpoint_final.pth"


def _copy_models(models_dir, root):
    shutil.copytree(models_dir / "nnUNet", root / "nnUNet")
    return {ds: find_model_folder(root, ds, "direct") for ds in (STEP1_DATASET, STEP2_DATASET)}


# --- item 1: no code runs from a checkpoint ------------------------------------------------------------------

class _System:
    """Unpickled, runs a shell command (os.system: a module torch's unpickler blocks outright)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Open:
    """Unpickled, creates a file through a builtin (builtins.open: not blocked, only not allowed)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _write_payload(path, payload, how):
    checkpoint = {"network_weights": payload, "trainer_name": "nnUNetTrainer", "init_args": {}}
    if how == "zip":
        torch.save(checkpoint, path)
    elif how == "legacy":
        torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    else:                                   # a bare pickle named checkpoint_final.pth
        with open(path, "wb") as fh:
            pickle.dump(checkpoint, fh, protocol=2)


@pytest.mark.parametrize("how", ["zip", "legacy", "pickle"])
@pytest.mark.parametrize("payload", [_System, _Open])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, models_dir, payload, how):
    folder = _copy_models(models_dir, tmp_path / "models")[STEP1_DATASET]
    ckpt = folder / CHECKPOINT
    # the payload is live: loaded as the app loaded checkpoints before (weights_only=False), it runs
    live, marker = tmp_path / "live", tmp_path / "marker"
    _write_payload(ckpt, payload(live), how)
    if how == "pickle":
        with open(ckpt, "rb") as fh:
            pickle.load(fh)
    else:
        torch.load(ckpt, map_location="cpu", weights_only=False)
    assert live.exists()

    _write_payload(ckpt, payload(marker), how)
    with pytest.raises(ModelError) as err:
        LoadedModel(folder)
    assert err.value.code == "MODEL_MALFORMED"
    assert err.value.path == str(ckpt) and str(ckpt) in err.value.message
    assert "nothing in it was run" in err.value.message
    assert ("posix.system" if payload is _System else "io.open") in err.value.message
    assert "add_safe_globals" not in err.value.message        # torch's advice to allow it is not passed on
    assert not marker.exists()


@pytest.mark.slow
def test_the_app_refuses_a_checkpoint_that_would_run_code(tmp_path, models_dir, phantom_study):
    models = tmp_path / "models"
    folder = _copy_models(models_dir, models)[STEP1_DATASET]
    marker = tmp_path / "marker"
    _write_payload(folder / CHECKPOINT, _System(marker), "zip")
    out = tmp_path / "out"
    proc = run_app(phantom_study["dicom_files"][0].parent, out, "-m", models, engine="plain", timeout=600)
    report = json.loads((out / "report.json").read_text())
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert report["status"] == "failed" and report["error"]["code"] == "MODEL_MALFORMED"
    assert report["error"]["path"] == str(folder / CHECKPOINT)
    assert not marker.exists()


@pytest.mark.parametrize("dataset", [STEP1_DATASET, STEP2_DATASET])
def test_the_bundled_models_load_with_the_same_weights(models_dir, dataset):
    ckpt = find_model_folder(models_dir, dataset) / CHECKPOINT
    safe, trusted = _load_checkpoint(ckpt), torch.load(ckpt, map_location="cpu", weights_only=False)
    assert safe.keys() == trusted.keys()
    assert all(torch.equal(safe["network_weights"][k], v) for k, v in trusted["network_weights"].items())
    assert {k: v for k, v in safe.items() if k != "network_weights"} == \
        {k: v for k, v in trusted.items() if k != "network_weights"}


def _nnunet_checkpoint(folder, path):
    """A checkpoint written by nnU-Net's own ``nnUNetTrainer.save_checkpoint``, with what a finished training
    leaves in it: SGD state (nnU-Net's settings), a CUDA grad scaler's state, the training log filled as the
    trainer fills it (float32 losses, float64 pseudo Dice and its moving average), ``_best_ema``, the init
    arguments with a ``torch.device``, the mirroring axes; the network is the bundled one."""
    from nnunetv2.training.logging.nnunet_logger import MetaLogger
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    network = LoadedModel(folder).torch_network()
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    for p in network.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    logger = MetaLogger(str(path.parent), False)
    for epoch in range(2):
        logger.log("epoch_start_timestamps", 1.7e9 + epoch, epoch)
        logger.log("lrs", optimizer.param_groups[0]["lr"], epoch)
        logger.log("train_losses", np.mean(np.array([-0.5, -0.7], np.float32)), epoch)
        tp, fp, fn = np.array([50, 40]), np.array([5, 4]), np.array([3, 6])
        dice = [2 * i / (2 * i + j + k) for i, j, k in zip(tp, fp, fn)]
        logger.log("mean_fg_dice", np.nanmean(dice), epoch)
        logger.log("dice_per_class_or_region", dice, epoch)
        logger.log("val_losses", np.mean(np.array([-0.6, -0.4], np.float32)), epoch)
        logger.log("epoch_end_timestamps", 1.7e9 + epoch + 0.5, epoch)
    trainer = type("nnUNetTrainerDAExtGPU", (), {})()
    trainer.__dict__.update(
        local_rank=0, disable_checkpointing=False, is_ddp=False, network=network, optimizer=optimizer,
        grad_scaler=types.SimpleNamespace(state_dict=lambda: {"scale": 32768.0, "growth_factor": 2.0,
                                                               "backoff_factor": 0.5, "growth_interval": 2000,
                                                               "_growth_tracker": 17}),
        logger=logger, _best_ema=logger.get_value("ema_fg_dice", -1), current_epoch=999,
        my_init_kwargs={"plans": json.loads((folder / "plans.json").read_text()), "configuration": "3d_fullres",
                        "fold": 0, "dataset_json": json.loads((folder / "dataset.json").read_text()),
                        "device": torch.device("cuda", 0)},
        inference_allowed_mirroring_axes=(0, 1, 2))
    nnUNetTrainer.save_checkpoint(trainer, str(path))
    return network


@pytest.mark.parametrize("numpy_names", ["numpy 2", "numpy 1.x"])
def test_a_checkpoint_as_nnunet_writes_it_loads(tmp_path, models_dir, numpy_names):
    folder = _copy_models(models_dir, tmp_path / "models")[STEP1_DATASET]
    ckpt = folder / CHECKPOINT
    network = _nnunet_checkpoint(folder, ckpt)
    if numpy_names == "numpy 1.x":
        # as a checkpoint trained under numpy 1.x names the scalar's function (numpy.core, not numpy._core);
        # the legacy format keeps the pickle bare so that the name can be changed in place
        trusted = torch.load(ckpt, map_location="cpu", weights_only=False)
        torch.save(trusted, ckpt, _use_new_zipfile_serialization=False)
        data = ckpt.read_bytes()
        assert b"cnumpy._core.multiarray\nscalar\n" in data
        ckpt.write_bytes(data.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n"))
        assert b"numpy._core" not in ckpt.read_bytes()
    loaded = _load_checkpoint(ckpt)
    assert loaded["init_args"]["device"] == torch.device("cuda", 0)
    assert loaded["trainer_name"] == "nnUNetTrainerDAExtGPU"
    assert isinstance(loaded["_best_ema"], np.float64)
    assert isinstance(loaded["logging"]["train_losses"][0], np.float32)
    assert loaded["logging"]["dice_per_class_or_region"][1] == [100 / 108, 80 / 90]
    model = LoadedModel(folder)
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(1, model.n_inputs, *model.patch_size)).astype("f4"))
    with torch.inference_mode():
        assert torch.equal(model.predictor.network(x), network(x))


@pytest.mark.parametrize("extra", [
    np.zeros(3),                                         # an ndarray (numpy's _reconstruct)
    np.int64(3),                                         # a numpy scalar of a type nnU-Net does not log
    types.SimpleNamespace(a=1),                          # any other class
])
def test_anything_else_in_a_checkpoint_is_refused(tmp_path, models_dir, extra):
    folder = _copy_models(models_dir, tmp_path / "models")[STEP1_DATASET]
    ckpt = folder / CHECKPOINT
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    torch.save({**checkpoint, "extra": extra}, ckpt)
    with pytest.raises(ModelError) as err:
        LoadedModel(folder)
    assert err.value.code == "MODEL_MALFORMED" and err.value.path == str(ckpt)


# --- item 2: a cache that cannot lie --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lumbar_case():
    import reference_cli as R
    img, _ = R.phantom_nifti(5200, "lumbar", 2.0, 1.0)
    return np.asanyarray(img.dataobj), lps_to_ras(img.affine)


def _pair(folders, cache):
    return ModelPair(*(LoadedModel(folders[ds], backend="openvino", cache_dir=cache)
                       for ds in (STEP1_DATASET, STEP2_DATASET)), "cpu", "openvino")


@pytest.fixture(scope="module")
def good_run(models_dir, lumbar_case, tmp_path_factory):
    """Both steps exported into a fresh cache, and the labels of a run from that cache."""
    root = tmp_path_factory.mktemp("good")
    folders, cache = _copy_models(models_dir, root / "models"), root / "cache"
    assert _pair(folders, cache).step1.ir_source == "exported"
    pair = _pair(folders, cache)
    assert pair.step1.ir_source == pair.step2.ir_source == "cache"
    return folders, cache, segment_volume(*lumbar_case, pair).labels


def _entry(cache_or_precompiled, model):
    return cache_or_precompiled / model.export_key().digest()


def _flip_weights(bin_path, xml_path, n=16):
    """Flip the sign of ``n`` weights of the IR's largest f32 constant, in place (same size)."""
    consts = [d for layer in ET.parse(xml_path).getroot().iter("layer") if layer.get("type") == "Const"
              for d in layer.iter("data") if d.get("element_type") == "f32"]
    biggest = max(consts, key=lambda d: int(d.get("size")))
    offset, size = int(biggest.get("offset")), int(biggest.get("size"))
    assert size >= 4 * n
    with open(bin_path, "r+b") as fh:
        for i in range(n):
            fh.seek(offset + 4 * (i * (size // 4 // n)) + 3)       # the sign bit of a little-endian float32
            byte = fh.read(1)[0]
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte ^ 0x80]))


def _damage(entry, how):
    bin_path, size = entry / "model.bin", (entry / "model.bin").stat().st_size
    if how == "flip":
        _flip_weights(bin_path, entry / "model.xml")
        assert bin_path.stat().st_size == size
    elif how == "truncate":
        os.truncate(bin_path, size // 2)
    elif how == "no_manifest":
        (entry / "manifest.json").unlink()
    elif how == "old_manifest":                          # as written before manifests named their files
        manifest = json.loads((entry / "manifest.json").read_text())
        del manifest["files"]
        (entry / "manifest.json").write_text(json.dumps(manifest))
    else:                                                # unreadable
        bin_path.unlink()
        bin_path.mkdir()


def test_each_ir_carries_a_manifest_of_its_files(good_run):
    folders, cache, _ = good_run
    for folder in folders.values():
        entry = _entry(cache, LoadedModel(folder, backend="openvino", cache_dir=cache))
        files = json.loads((entry / "manifest.json").read_text())["files"]
        assert set(files) == {"model.xml", "model.bin"}
        for name, record in files.items():
            assert record == {"bytes": (entry / name).stat().st_size,
                              "sha256": backends.hashlib.sha256((entry / name).read_bytes()).hexdigest()}
    assert not list(cache.glob(".*"))                   # no partial or discarded folder left behind


# each exports step 1 again and segments the case (15-30 s); `make test-fast` keeps one kind of damage
@pytest.mark.parametrize("how", ["truncate", *(pytest.param(how, marks=pytest.mark.slow)
                                               for how in ("flip", "no_manifest", "old_manifest", "unreadable"))])
def test_a_cached_ir_that_does_not_match_is_exported_again_with_a_warning(tmp_path, good_run, lumbar_case, how,
                                                                          caplog):
    folders, good_cache, good_labels = good_run
    cache = tmp_path / "cache"
    shutil.copytree(good_cache, cache)
    step1 = LoadedModel(folders[STEP1_DATASET], backend="openvino", cache_dir=cache)
    entry = _entry(cache, step1)
    if how == "flip":
        # what the damage would do if the IR ran: the network's output changes (before manifests it did run)
        import openvino as ov
        x = np.random.default_rng(1).normal(size=(1, step1.n_inputs, *step1.patch_size)).astype(np.float32)
        good = ov.Core().compile_model(ov.Core().read_model(entry / "model.xml"), "CPU").create_infer_request()
        good_out = np.array(good.infer({0: x})[0])
        _damage(entry, how)
        bad = ov.Core().compile_model(ov.Core().read_model(entry / "model.xml"), "CPU").create_infer_request()
        assert np.abs(np.array(bad.infer({0: x})[0]) - good_out).max() > 0.01 * np.abs(good_out).max()
    else:
        _damage(entry, how)

    with caplog.at_level(logging.WARNING, logger="spineseg.inference.backends"):
        pair = _pair(folders, cache)
    assert pair.step1.ir_source == "exported" and pair.step2.ir_source == "cache"
    assert "did not match its manifest" in caplog.text and str(entry) in caplog.text
    assert pair.warnings == [pair.step1.ir_warning] and str(entry) in pair.warnings[0]
    assert pair.describe()["step1"]["openvino_ir_warning"] == pair.step1.ir_warning
    assert "openvino_ir_warning" not in pair.describe()["step2"]
    assert np.array_equal(segment_volume(*lumbar_case, pair).labels, good_labels)
    # the entry was made again, whole: the next run takes it from the cache without a word
    again = LoadedModel(folders[STEP1_DATASET], backend="openvino", cache_dir=cache)
    assert again.ir_source == "cache" and again.ir_warning is None
    assert not list(cache.glob(".*"))


@pytest.fixture(scope="module")
def precompiled_models(models_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("precompiled") / "models"
    _copy_models(models_dir, models)
    precompile(models, "direct")
    return models


@pytest.mark.parametrize("how", ["flip", "truncate", "no_manifest"])
def test_a_precompiled_ir_that_does_not_match_is_refused(tmp_path, precompiled_models, how, capsys):
    models = tmp_path / "models"
    shutil.copytree(precompiled_models, models)
    folder = find_model_folder(models, STEP2_DATASET, "direct")
    cache = tmp_path / "cache"                                     # writable, and still never used instead
    assert LoadedModel(folder, backend="openvino", cache_dir=cache).ir_source == "precompiled"
    # the IR's folder (beside it, checksums.json remembers the checkpoint's SHA-256: spineseg.inference.checksums)
    (entry,) = [p for p in (folder / backends.PRECOMPILED_FOLDER).iterdir() if p.is_dir()]
    _damage(entry, how)
    with pytest.raises(ModelError) as err:
        LoadedModel(folder, backend="openvino", cache_dir=cache)
    assert err.value.code == "MODEL_MALFORMED" and err.value.path == str(entry)
    assert str(entry) in err.value.message and "python -m spineseg.inference.precompile" in err.value.message
    assert not cache.exists()                                      # nothing ran, nothing was exported
    # re-running the precompile mends it
    precompile(models, "direct")
    assert LoadedModel(folder, backend="openvino", cache_dir=cache).ir_source == "precompiled"


_CONCURRENT = """
import sys, time
from pathlib import Path
from spineseg.inference import backends
from spineseg.inference.two_step import LoadedModel
folder, cache, gate, me = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
save = backends._save
def gated_save(*args):
    # both runs have exported before either saves: their renames into the empty cache meet
    (gate / me).touch()
    while len(list(gate.iterdir())) < 2:
        time.sleep(0.05)
    return save(*args)
checked = []
read_verified = backends._read_verified
def counted(*args):
    checked.append(args[0])
    return read_verified(*args)
backends._save, backends._read_verified = gated_save, counted
model = LoadedModel(folder, backend="openvino", cache_dir=cache)
print(model.ir_source, model.ir_warning, len(checked))
"""


@pytest.mark.slow
def test_two_runs_exporting_into_one_empty_cache_at_once(tmp_path, models_dir):
    folder = _copy_models(models_dir, tmp_path / "models")[STEP1_DATASET]
    cache, gate = tmp_path / "cache", tmp_path / "gate"
    gate.mkdir()
    runs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(folder), str(cache), str(gate), name],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("a", "b")]
    checked = 0
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        source, warning, n = out.strip().splitlines()[-1].split()
        assert (source, warning) == ("exported", "None"), out
        checked += int(n)
    assert checked == 1          # the second rename found the first run's IR, checked it and kept it
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    model = LoadedModel(folder, backend="openvino", cache_dir=cache)
    assert model.ir_source == "cache" and entry == _entry(cache, model)
