"""The fast post-processing paths (spineseg/inference/postprocess.py) return exactly what totalspineseg's own
functions return: same voxels, dtype, affine and header, or the same error.

Label maps: phantoms of every field of view and anatomical variant tools/phantom.py makes (at 2 mm, to keep
the file under ~30 s), in step 1's and step 2's network label schemes, as they come and damaged at random
(spurious blobs, missing structures, a relabelled part), plus random maps and random center_of_mass calls.
"""
from __future__ import annotations

import copy
import subprocess
import sys
from functools import cache

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi
import totalspineseg as tss

from conftest import ROOT
from spineseg.inference import postprocess
from spineseg.inference.two_step import STEP1_LABELLING, STEP2_LABELLING, WITH_LOCALIZER
from tools import phantom as P
from tools.train_phantom_models import step1_target as step1_scheme  # the networks' label schemes
from tools.train_phantom_models import step2_target as step2_scheme

# at 2 mm a voxel is 8 of the networks' 1 mm ones: totalspineseg's smallest component (200) scaled to match
MIN_COMPONENT = {"min_component_size": 25}
CASES = [(fov, "normal") for fov in P.FOV_KINDS + P.EXTRA_FOVS] + \
        [("lumbar", v) for v in P.VARIANTS if v != "normal"]


@cache
def phantom_labels(fov: str, variant: str) -> tuple[np.ndarray, np.ndarray]:
    ph = P.make_phantom(3, fov=fov, variant=variant)
    affine, shape = P.canonical_grid(ph, spacing=2.0)
    _, final = P.render(ph, affine, shape)
    return final, P.lps_to_ras(affine)


def damaged(data: np.ndarray, seed: int) -> np.ndarray:
    """``data`` with what a network gets wrong: spurious blobs, a structure left out, a part relabelled."""
    rng = np.random.default_rng(seed)
    out = data.copy()
    values = [int(v) for v in np.unique(data) if v]
    for _ in range(6):                                     # small blobs of random labels, some touching
        centre = [rng.integers(0, n) for n in out.shape]
        box = tuple(slice(max(0, c - r), c + r) for c, r in zip(centre, rng.integers(1, 4, 3)))
        out[box] = rng.choice(values)
    if values:
        out[out == rng.choice(values)] = 0                 # one structure missed
        part = rng.random(out.shape) < 0.02
        out[part & (out > 0)] = rng.choice(values)         # scattered voxels of another label
    return out


def with_generic_vertebrae(data: np.ndarray, seed: int) -> np.ndarray:
    """Step 2's map with parts of vertebrae given the generic vertebra label 6 (``vertebrae_extra_labels``),
    as its network sometimes outputs: iterative_label merges them into the nearest odd or even vertebra."""
    rng = np.random.default_rng(seed)
    out = data.copy()
    slices = (rng.random(out.shape[2]) < 0.3)[None, None, :]
    posterior = (np.arange(out.shape[1]) > rng.integers(out.shape[1] // 3, out.shape[1]))[None, :, None]
    out[np.isin(out, [7, 8]) & (slices | posterior)] = 6
    return out


def nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.Nifti1Image(data.astype(np.uint8), affine)


def outcome(function, *args, **kwargs):
    """What a call gives: the image's voxels, dtype, affine and header bytes, or the error it raises."""
    try:
        image = function(*copy.deepcopy(args), **copy.deepcopy(kwargs))
    except Exception as exc:                  # iterative_label refuses maps without canal or landmark
        return ("raised", type(exc).__name__, str(exc))
    data = np.asanyarray(image.dataobj)
    return ("image", data.dtype.str, data.tobytes(), image.affine.tobytes(), image.header.binaryblock)


def assert_same(reference, fast, *args, **kwargs):
    expected, got = outcome(reference, *args, **kwargs), outcome(fast, *args, **kwargs)
    assert got[:2] == expected[:2], (got[:2], expected[:2], got[2:] if got[0] == "raised" else "")
    assert got == expected


@pytest.mark.parametrize("fov,variant", CASES)
def test_phantom_maps_label_the_same(fov, variant):
    final, affine = phantom_labels(fov, variant)
    for scheme, params in ((step1_scheme, STEP1_LABELLING), (step2_scheme, STEP2_LABELLING)):
        maps = [scheme(final), damaged(scheme(final), seed=len(fov) + len(variant))]
        if scheme is step2_scheme:
            maps.append(with_generic_vertebrae(maps[0], seed=len(fov)))
        for data in maps:
            image = nifti(data, affine)
            assert_same(tss.largest_component, postprocess.largest_component, image, binarize=True, dilate=5)
            cleaned = tss.largest_component(image, binarize=True, dilate=5)
            assert_same(tss.iterative_label, postprocess.iterative_label, cleaned, None, **params, **MIN_COMPONENT)


def test_localizer_labelling_the_same():
    """``--loc``: step 2 named from a localizer's final labels (another field of view of the same phantom)."""
    final, affine = phantom_labels("lumbar", "normal")
    whole, _ = phantom_labels("thoracolumbar", "normal")
    localizer = nifti(whole, affine)           # its own grid: iterative_label resamples it onto the series'
    image = tss.largest_component(nifti(step2_scheme(final), affine), binarize=True, dilate=5)
    assert_same(tss.iterative_label, postprocess.iterative_label, image, localizer,
                **{**STEP2_LABELLING, **WITH_LOCALIZER}, **MIN_COMPONENT)


@pytest.mark.parametrize("seed", range(6))
def test_random_maps_largest_component(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(5, 40, 3))
    data = (ndi.gaussian_filter(rng.random(shape), 1.5) > 0.5) * rng.integers(1, 5, shape)
    affine = np.diag([*rng.uniform(0.5, 2, 3), 1])
    for binarize in (True, False):
        for dilate in (0, 1, 2, 5):
            assert_same(tss.largest_component, postprocess.largest_component, nifti(data, affine),
                        binarize=binarize, dilate=dilate)


@pytest.mark.parametrize("seed", range(20))
def test_random_center_of_mass(seed):
    """Bit for bit, including labels absent or out of range (NaN), a boolean index (as iterative_label's
    ``_sort_labels_si`` passes one), labels past the array's size (scipy's np.unique branch) and uint types."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 30, 3))
    mask = rng.random(shape) < rng.uniform(0, 1)
    dtype = rng.choice([np.uint8, np.uint16, np.uint32, np.int32, np.int64, np.uint64])
    top = int(rng.choice([5, 50, 10 ** 6]))
    labels = rng.integers(0, top, shape).astype(dtype)
    indexes = [list(rng.integers(0, top, 5)), [0], [], list(rng.integers(-3, top + 3, 7)),
               np.array(rng.random(4) < 0.5), np.unique(labels)]
    with np.errstate(invalid="ignore", divide="ignore"):
        for index in indexes:
            expected = ndi.center_of_mass(mask, labels, index)
            got = postprocess.center_of_mass(mask, labels, index)
            assert type(got) is type(expected) and len(got) == len(expected)
            np.testing.assert_array_equal(np.array(got, float), np.array(expected, float), strict=True)
            assert np.array(got).tobytes() == np.array(expected).tobytes()


def test_predictor_imported_without_dynamo_and_same_isinstance():
    """nnU-Net's predictor module, imported through nnunet_import, holds no torch._dynamo, and its
    ``OptimizedModule`` test answers as the real class: False for a plain network, True once compiled."""
    script = (
        "import sys; from spineseg.inference.nnunet_import import predictor_module, totalspineseg\n"
        "m = predictor_module(); totalspineseg(); assert 'torch._dynamo' not in sys.modules\n"
        "import torch; net = torch.nn.Linear(2, 2); assert not isinstance(net, m.OptimizedModule)\n"
        "import torch._dynamo; assert isinstance(torch._dynamo.OptimizedModule(net, lambda *a: None), m.OptimizedModule)\n"
        "assert not isinstance(net, m.OptimizedModule); print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_checkpoint_hash_remembered_only_while_the_file_is_unchanged(tmp_path):
    import os
    import time

    from spineseg.inference import checksums
    ckpt, cache = tmp_path / "checkpoint_final.pth", tmp_path / "cache"
    ckpt.write_bytes(b"weights one")
    assert checksums.sha256_remembered(ckpt, [cache]) == checksums.sha256_of(ckpt)
    assert not (cache / checksums.RECORDS).exists()            # too fresh to tell from a rewrite: not recorded
    checksums.remember(ckpt, "remembered", cache)
    assert not (cache / checksums.RECORDS).exists()
    old = time.time() - 60
    os.utime(ckpt, (old, old))
    checksums.SETTLED_S, settled = -1e9, checksums.SETTLED_S  # as if its change time were old
    try:
        checksums.remember(ckpt, "remembered", cache)
    finally:
        checksums.SETTLED_S = settled
    assert checksums.sha256_remembered(ckpt, [tmp_path / "none", cache]) == "remembered"   # taken from the record
    ckpt.write_bytes(b"weights two")                                                     # same size, rewritten
    os.utime(ckpt, (old, old))                                                           # even with the old mtime
    assert checksums.sha256_remembered(ckpt, [cache]) == checksums.sha256_of(ckpt)      # the change time differs


@pytest.mark.parametrize("seed", range(4))
def test_random_canal_helpers(seed):
    """The canal centreline and the anterior mask, on random maps: canal everywhere, nowhere, or in some
    slices only (an empty slice's middle is -1 in the reference, so all of it counts as anterior)."""
    import totalspineseg.utils.iterative_label as reference
    rng = np.random.default_rng(seed)
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(1, 14, 3))
        seg = ((rng.random(shape) < rng.uniform(0, 0.6)) * rng.integers(1, 4, shape)).astype(np.uint8)
        canal = [int(v) for v in rng.choice([1, 2, 3], rng.integers(1, 3), replace=False)]
        expected = reference._get_mask_aterior_to_canal(seg, canal)
        got = postprocess.get_mask_aterior_to_canal(seg, canal)
        assert got.dtype == expected.dtype and got.shape == expected.shape and np.array_equal(got, expected)
        assert_same(lambda s, c: nifti_of(reference._get_canal_centerline_indices(s, c)),
                    lambda s, c: nifti_of(postprocess.get_canal_centerline_indices(s, c)), seg, canal)


def nifti_of(indices: np.ndarray) -> nib.Nifti1Image:
    """An index array wrapped so that ``outcome`` compares its dtype, shape and bytes."""
    return nib.Nifti1Image(indices, np.eye(4))


class TruthModel:
    """Stands in for a step's network: the phantom's labels on the grid it is given, in the step's scheme."""

    def __init__(self, phantom, scheme):
        self.phantom, self.scheme, self.rendered = phantom, scheme, {}

    def predict(self, channels: list[nib.Nifti1Image]) -> nib.Nifti1Image:
        ref = channels[0]
        key = (ref.affine.tobytes(), ref.shape)
        if key not in self.rendered:           # both runs ask for the same grids: render each once
            self.rendered[key] = self.scheme(P.render(self.phantom, P.lps_to_ras(ref.affine), ref.shape)[1])
        return nib.Nifti1Image(self.rendered[key].astype(np.uint8), ref.affine, ref.header)


def test_segment_volume_labels_the_same(monkeypatch):
    """The whole of segment_volume from a DICOM-like stack (sagittal, 4 mm slices, 1.5 mm pixels, 40 mm wide) to the final
    labels and the numbering it reports, with the fast paths and with totalspineseg's own functions."""
    from spineseg.inference import two_step

    ph = P.make_phantom(5, fov="lumbar", variant="6-lumbar")
    geometry = P.series_geometry(ph, "sagittal", slice_thickness=4.0, pixel=1.5, lr_width=40.0, ap_width=96.0)
    image, _ = P.render(ph, geometry.affine, geometry.shape)
    models = two_step.ModelPair(TruthModel(ph, step1_scheme), TruthModel(ph, step2_scheme), "cpu")

    def run():
        result = two_step.segment_volume(np.round(image * 1000), geometry.affine, models, dicom_stack=True)
        return result.labels.dtype.str, result.labels.tobytes(), result.numbering.as_dict()

    fast = run()
    monkeypatch.setattr(postprocess, "largest_component", tss.largest_component)
    monkeypatch.setattr(postprocess, "iterative_label", tss.iterative_label)
    reference = run()
    assert np.frombuffer(fast[1], np.uint8).any()
    assert fast == reference
