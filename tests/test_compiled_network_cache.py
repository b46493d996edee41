"""The compiled network kept beside a cached IR (spineseg.inference.backends: load_compiled, keep_compiled): a
later run imports what an earlier one compiled, with the same logits; bytes that do not match its manifest, or a
manifest of another CPU or setting, are never run; a precompiled IR keeps nothing; a cache where it cannot be
written only costs the compile."""
import json
import shutil

import numpy as np
import pytest

from spineseg.inference import backends
from spineseg.inference.precompile import precompile
from spineseg.inference.two_step import STEP1_DATASET, LoadedModel, find_model_folder

pytest.importorskip("openvino", reason="openvino is in requirements.txt; install it")


def copy_model(models_dir, tmp_path):
    src = find_model_folder(models_dir, STEP1_DATASET)
    dst = tmp_path / "nnUNet" / "results" / STEP1_DATASET / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(backends.PRECOMPILED_FOLDER))
    return dst


def logits(model: LoadedModel) -> bytes:
    import torch
    x = np.random.default_rng(3).normal(size=(1, model.n_inputs, *model.patch_size)).astype(np.float32)
    return model.predictor.network(torch.from_numpy(x)).numpy().tobytes()


def kept(cache):
    return sorted(cache.glob(f"*/{backends.COMPILED_FOLDER}/*.blob")), sorted(
        cache.glob(f"*/{backends.COMPILED_FOLDER}/*.json"))


@pytest.fixture
def cached(tmp_path, models_dir):
    """A model folder whose IR is in a cache, compiled once from there and kept."""
    folder, cache = copy_model(models_dir, tmp_path), tmp_path / "cache"
    first = LoadedModel(folder, backend="openvino", cache_dir=cache)
    assert first.ir_source == "exported" and kept(cache) == ([], [])     # an IR exported in this run: not kept
    second = LoadedModel(folder, backend="openvino", cache_dir=cache)
    assert second.ir_source == "cache" and second.predictor.network.compiled_from == "compiled"
    (blob,), (record,) = kept(cache)
    return folder, cache, blob, record, logits(second)


def test_a_cached_ir_is_compiled_once_then_imported_with_the_same_logits(cached):
    folder, cache, blob, record, compiled = cached
    manifest = json.loads(record.read_text())
    assert manifest["blob"]["bytes"] == blob.stat().st_size
    assert manifest["key"]["config"]["INFERENCE_PRECISION_HINT"] == "f32" and manifest["key"]["cpu"]["flags"]
    third = LoadedModel(folder, backend="openvino", cache_dir=cache)
    assert third.ir_source == "cache" and third.predictor.network.compiled_from == "cache"
    assert logits(third) == compiled


@pytest.mark.parametrize("damage", ["bytes", "truncated", "manifest", "other cpu", "other setting"])
def test_a_kept_network_that_does_not_match_is_not_run_and_is_kept_again(cached, damage):
    folder, cache, blob, record, compiled = cached
    if damage == "bytes":              # what OpenVINO's own CACHE_DIR runs without a word (other logits)
        data = bytearray(blob.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 4000] = bytes(b ^ 0x55 for b in data[middle:middle + 4000])
        blob.write_bytes(bytes(data))
    elif damage == "truncated":
        blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    elif damage == "manifest":
        record.write_text("{")
    else:                             # a cache shared between hosts, or settings that changed
        manifest = json.loads(record.read_text())
        if damage == "other cpu":
            manifest["key"]["cpu"]["flags"] += " some_other_unit"
        else:
            manifest["key"]["config"]["INFERENCE_NUM_THREADS"] += 1
        record.write_text(json.dumps(manifest))
    again = LoadedModel(folder, backend="openvino", cache_dir=cache)
    assert again.predictor.network.compiled_from == "compiled"
    assert logits(again) == compiled
    (blob,), (record,) = kept(cache)                          # mended: the next run imports it
    assert json.loads(record.read_text())["blob"]["bytes"] == blob.stat().st_size
    assert LoadedModel(folder, backend="openvino", cache_dir=cache).predictor.network.compiled_from == "cache"


def test_a_cache_entry_where_nothing_can_be_kept_still_runs(cached):
    folder, cache, blob, record, compiled = cached
    compiled_folder = blob.parent
    shutil.rmtree(compiled_folder)
    compiled_folder.write_text("")        # "compiled" a regular file: nothing can be written in it, even by root
    model = LoadedModel(folder, backend="openvino", cache_dir=cache)
    assert model.ir_source == "cache" and model.predictor.network.compiled_from == "compiled"
    assert logits(model) == compiled and compiled_folder.is_file()


def test_nothing_is_kept_for_a_precompiled_ir(tmp_path, models_dir):
    models = tmp_path / "models"
    shutil.copytree(models_dir / "nnUNet", models / "nnUNet",
                    ignore=shutil.ignore_patterns(backends.PRECOMPILED_FOLDER))
    precompile(models)
    folder, cache = find_model_folder(models, STEP1_DATASET), tmp_path / "cache"
    for _ in range(2):
        model = LoadedModel(folder, backend="openvino", cache_dir=cache)
        assert model.ir_source == "precompiled" and model.predictor.network.compiled_from == "compiled"
    assert not list(tmp_path.rglob(backends.COMPILED_FOLDER))
