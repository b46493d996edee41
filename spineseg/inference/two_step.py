"""TotalSpineSeg's two-step inference, in one process and in memory.

The steps and their parameters follow ``totalspineseg/inference/two_step.py`` (release 20260807) exactly;
each post-processing step is totalspineseg's own in-memory function, or where that is slow an equivalent
proven to return the same (``spineseg.inference.postprocess``: largest_component, iterative_label). The networks run through
nnU-Net's predictor, built from the plans with ``manual_initialization`` so that no trainer
lookup (and hence no torchvision import), no worker process and no intermediate file is needed, and imported
without ``torch._dynamo`` (``spineseg.inference.nnunet_import``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from spineseg.collection import collection_paused
from spineseg.errors import InputError, ModelError
from spineseg.inference import backends, nnunet_import, postprocess
from spineseg.inference.checksums import sha256_remembered
from spineseg.inference.numbering import Numbering
from spineseg.inference.numbering import assess as assess_numbering

log = logging.getLogger(__name__)

STEP1_DATASET = "Dataset101_TotalSpineSeg_step1"
STEP2_DATASET = "Dataset102_TotalSpineSeg_step2"
DISC_LANDMARKS = dict(selected_disc_landmarks=[2, 5, 3, 4], disc_labels=[1, 2, 3, 4, 5],
                      disc_landmark_labels=[2, 3, 4, 5], disc_landmark_output_labels=[63, 71, 91, 100])
STEP1_LABELLING = dict(**DISC_LANDMARKS, canal_labels=[8], canal_output_label=2, cord_labels=[9],
                       cord_output_label=1, sacrum_labels=[6], sacrum_output_label=50, map_input_dict={7: 11})
STEP2_LABELLING = dict(**DISC_LANDMARKS, vertebrae_labels=[7, 8, 9], vertebrae_landmark_output_labels=[13, 21, 41, 50],
                       vertebrae_extra_labels=[6], canal_labels=[10], canal_output_label=2, cord_labels=[11],
                       cord_output_label=1, sacrum_labels=[9], sacrum_output_label=50)
# with a localizer (totalspineseg --loc): landmarks come from the localizer's labels first, then only C2-C3 and
# L5-S1 of the image itself, as the reference command passes them
WITH_LOCALIZER = dict(selected_disc_landmarks=[2, 5], loc_disc_labels=list(range(63, 101)))
FILL_CANAL = dict(canal_label=2, cord_label=1, largest_canal=True, largest_cord=True)
ALL_DISC_OUTPUT_LABELS = list(range(63, 101))


@dataclass
class ModelInfo:
    """Where a model came from: shown in the report and written into the SEG."""

    dataset: str
    folder: Path
    checkpoint: Path
    sha256: str
    kind: str          # "phantom" or "official"
    release: str       # e.g. "r20260730" for official weights, "phantom" for the bundled ones

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "folder": str(self.folder), "checkpoint": self.checkpoint.name,
                "sha256": self.sha256, "kind": self.kind, "release": self.release}


def find_model_folder(models_dir: Path, dataset: str, release: str = "auto") -> Path:
    """The ``<Trainer>__<Plans>__<configuration>`` folder of ``dataset`` under ``models_dir``.

    Accepts totalspineseg's layouts: ``models_dir/nnUNet/results/<release>/<dataset>`` (official zips,
    see tools/install_weights.py), ``models_dir/nnUNet/results/<dataset>`` (the bundled phantom models)
    or ``models_dir/<dataset>``. ``release="auto"`` prefers the newest installed release over the
    bundled models; ``"direct"`` takes the bundled ones; any other value names a release folder.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ModelError("MODELS_NOT_FOUND", f"Model folder {models_dir} does not exist; pass -m with the folder "
                         "holding the TotalSpineSeg models (see README, 'Models').", path=str(models_dir))
    results = models_dir / "nnUNet" / "results"
    direct = [results / dataset, models_dir / dataset]
    if release in ("", "auto"):
        releases = sorted((p for p in results.glob(f"*/{dataset}") if not p.parent.name.startswith(".")),
                          key=lambda p: p.parent.name, reverse=True)
        candidates = [*releases, *direct]
    elif release == "direct":
        candidates = direct
    else:
        candidates = [results / release / dataset]
    for ds_dir in candidates:
        if ds_dir.is_dir():
            trained = sorted(p.parent for p in ds_dir.glob("*__*__*/fold_0"))
            if trained:
                return trained[0]
            raise ModelError("MODEL_MALFORMED", f"{ds_dir} holds no <Trainer>__<Plans>__<configuration>/fold_0 "
                             "folder; reinstall the model.", path=str(ds_dir))
    raise ModelError("MODEL_MISSING", f"No {dataset} model under {models_dir}"
                     + (f" for release {release!r}" if release not in ("", "auto") else "")
                     + "; install the weights with `python tools/install_weights.py` or point -m at the bundled "
                     "models/ folder.", path=str(models_dir))


def _model_kind(folder: Path, checkpoint: dict) -> tuple[str, str]:
    prov = checkpoint.get("spine_seg_provenance") or {}
    if prov.get("kind") == "phantom":
        return "phantom", "phantom"
    release = next((p.name for p in folder.parents if p.name.startswith("r20")), "")
    return "official", release or "unknown-release"


def _checkpoint_globals() -> list:
    """What an nnU-Net v2 checkpoint holds beyond what ``torch.load(weights_only=True)`` takes unasked.

    nnU-Net's ``nnUNetTrainer.save_checkpoint`` writes ``network_weights`` and ``optimizer_state`` (tensors in
    (Ordered)dicts, floats, bools), ``grad_scaler_state`` (floats, ints or None), ``current_epoch`` (int),
    ``trainer_name`` (str), ``inference_allowed_mirroring_axes`` (a tuple of ints or None), ``init_args``
    (plans and dataset_json dicts, configuration str, fold int, and a ``torch.device``) and ``logging`` and
    ``_best_ema``; the bundled models add ``spine_seg_provenance`` (plain values). Tensors, containers, plain
    values and ``torch.device`` are allowed without this list. What is not: nnU-Net's training log and
    ``_best_ema`` hold numpy scalars (``np.mean`` of float32 losses, ``np.nanmean`` of float64 pseudo Dice and
    its moving average), pickled as ``scalar(dtype, raw bytes)``. So, and nothing else:
    """
    from numpy._core.multiarray import scalar
    return [
        scalar,                                   # a numpy scalar from its dtype and raw bytes (no code)
        (scalar, "numpy.core.multiarray.scalar"),  # the same, as a checkpoint written under numpy 1.x names it
        np.dtype,                                 # the scalar's dtype, rebuilt as np.dtype("f8", False, True)
        # the dtype's pickled state is set only on these classes: float64 (Dice, EMA, _best_ema) and float32
        # (losses) scalars load; any other dtype (object, structured, int) is refused
        np.dtypes.Float64DType,
        np.dtypes.Float32DType,
    ]


_LOAD_LOCK = threading.Lock()   # torch's allow-list is process-wide: one scoped load at a time


def _unpickling_refusal(exc: Exception) -> str:
    """What torch's weights-only refusal says it found (not its advice to allow-list it)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        found = text.split("WeightsUnpickler error:", 1)[1]
    else:                           # torch's other layout: what it found is a paragraph of its own
        found = next((p for p in text.split("\n\n")[1:] if p.strip() and "Check the documentation" not in p), "")
    return found.strip().split("\n")[0].split(" Please use ")[0].rstrip(".") or type(exc).__name__


def _load_checkpoint(path: Path) -> dict:
    """The checkpoint, memory-mapped: its tensors are read from disk only if the PyTorch network is built.

    Unpickled with ``weights_only=True`` and exactly :func:`_checkpoint_globals` allowed: nothing a checkpoint
    holds can run code while it is read. Anything else is ``MODEL_MALFORMED`` naming the file.
    """
    import pickle

    import torch
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals(_checkpoint_globals()):
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:      # a checkpoint in the legacy (non-zip) format cannot be memory-mapped
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError("MODEL_MALFORMED", f"{path} holds more than an nnU-Net checkpoint's weights and training "
                         f"records ({_unpickling_refusal(exc)}); it was not loaded and nothing in it was run. "
                         "Replace it with the released checkpoint (tools/install_weights.py).",
                         path=str(path)) from None
    except Exception as exc:
        raise ModelError("MODEL_MALFORMED", f"Cannot read the checkpoint {path} ({type(exc).__name__}: {exc}); "
                         "reinstall the model.", path=str(path)) from exc
    if not isinstance(checkpoint, dict):
        raise ModelError("MODEL_MALFORMED", f"{path} holds a {type(checkpoint).__name__}, not an nnU-Net checkpoint; "
                         "reinstall the model.", path=str(path))
    return checkpoint


class LoadedModel:
    """An nnU-Net network with its plans, ready for in-memory prediction.

    With an OpenVINO backend whose IR is already made (precompiled or cached), the PyTorch network is never
    built and the checkpoint's weights are never read into memory: the checkpoint is memory-mapped for its
    small metadata (trainer, configuration, provenance) and hashed for the IR's cache key.
    """

    def __init__(self, folder: Path, device: str = "cpu", backend: str = "torch", cache_dir: Path | None = None):
        import torch
        # nnU-Net's modules as nnunet_import imports them (no torch._dynamo; pandas and httpx deferred), first
        nnunet_import.predictor_module()
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        fold = folder / "fold_0"
        # as the reference: the best checkpoint when present, else the final one
        ckpt_path = next((fold / n for n in ("checkpoint_best.pth", "checkpoint_final.pth") if (fold / n).is_file()), None)
        for needed in (folder / "plans.json", folder / "dataset.json"):
            if not needed.is_file():
                raise ModelError("MODEL_MALFORMED", f"{needed} is missing; reinstall the model.", path=str(needed))
        if ckpt_path is None:
            raise ModelError("MODEL_MALFORMED", f"{fold} has neither checkpoint_best.pth nor checkpoint_final.pth.",
                             path=str(fold))
        try:
            plans = json.loads((folder / "plans.json").read_text())
            dataset_json = json.loads((folder / "dataset.json").read_text())
            checkpoint = _load_checkpoint(ckpt_path)
            weights, trainer = checkpoint["network_weights"], checkpoint["trainer_name"]
            configuration = checkpoint["init_args"]["configuration"]
            plans_manager = PlansManager(plans)
            cm = plans_manager.get_configuration(configuration)
            n_in = determine_num_input_channels(plans_manager, cm, dataset_json)
            n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
            kind, release = _model_kind(folder, checkpoint)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError("MODEL_MALFORMED", f"Cannot load the model in {folder}: {type(exc).__name__}: {exc}",
                             path=str(folder)) from exc
        # what torch_network needs (memory-mapped tensors: nothing is read until it runs)
        self._weights, self._cm, self._shape = weights, cm, (n_in, n_out)
        self.n_inputs = n_in
        self.patch_size = [int(v) for v in cm.patch_size]
        # the smallest input the encoder's strides take down to a 2-voxel bottleneck (for tracing)
        strides = np.ones(3, int)
        for stride in cm.network_arch_init_kwargs.get("strides", []):
            strides *= np.broadcast_to(np.asarray(stride, int), 3)
        self.trace_shape = [int(v) for v in np.minimum(2 * strides, self.patch_size)]
        self._configuration = json.dumps(plans["configurations"][configuration], sort_keys=True)
        # hashed once per checkpoint: the digest is remembered beside the IRs (precompiled, or the cache)
        digest = sha256_remembered(ckpt_path, [folder / backends.PRECOMPILED_FOLDER,
                                               cache_dir or backends.default_cache_dir()])
        self.info = ModelInfo(folder.parent.name, folder, ckpt_path, digest, kind, release)
        # ir_warning: the cached IR did not match its manifest and was exported again (backends.ir_for)
        self.backend, self.ir_source, self.ir_warning = backend, None, None
        if backend == "torch":
            network, parameters = self.torch_network(device), [self._weights]
        else:
            # the weights live in the IR: nnU-Net's per-prediction load_state_dict has nothing to load
            network, parameters = self._openvino_network(backend, cache_dir), [None]
        # nnU-Net keeps the whole sliding window on the device only for CUDA (on any other device it prints that
        # it does not, whatever it is asked: nnunet_import.new_predictor keeps that line out of the log)
        self.predictor = nnunet_import.new_predictor(
            tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
            perform_everything_on_device=torch.device(device).type == "cuda", device=torch.device(device),
            verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        self.predictor.manual_initialization(network, plans_manager, cm, parameters, dataset_json, trainer,
                                             checkpoint.get("inference_allowed_mirroring_axes"))

    def torch_network(self, device: str = "cpu"):
        """The PyTorch network with the checkpoint's weights, in eval mode on ``device``."""
        import torch
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        cm = self._cm
        try:
            net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                         cm.network_arch_init_kwargs_req_import, *self._shape,
                                         allow_init=False, deep_supervision=False)
            net.load_state_dict(self._weights)
        except Exception as exc:
            raise ModelError("MODEL_MALFORMED", f"Cannot load the model in {self.info.folder}: "
                             f"{type(exc).__name__}: {exc}", path=str(self.info.folder)) from exc
        return net.to(torch.device(device)).eval()

    def export_key(self) -> backends.ExportKey:
        return backends.ExportKey(f"{self.info.dataset}/{self.info.folder.name}", self.info.sha256,
                                  self._configuration, self.n_inputs)

    def _openvino_network(self, backend: str, cache_dir: Path | None) -> backends.OpenVINONetwork:
        """The forward pass through OpenVINO; nnU-Net's sliding window around it stays as it is."""
        try:
            ir = backends.ir_for(self.torch_network, self.info.folder, self.export_key(), self.patch_size,
                                 self.trace_shape, cache_dir)
            self.ir_source, self.ir_warning = ir.source, ir.warning
            return backends.OpenVINONetwork(ir.model, backends.PRECISION[backend])
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError("BACKEND_FAILED", f"Cannot run {self.info.dataset} with SPINESEG_BACKEND={backend} "
                             f"({type(exc).__name__}: {exc}); use SPINESEG_BACKEND=torch.",
                             path=str(self.info.folder)) from exc

    def predict(self, channels: list[nib.Nifti1Image]) -> nib.Nifti1Image:
        """Segment images that share one grid (channel order as in dataset.json)."""
        if len(channels) != self.n_inputs:
            raise ModelError("MODEL_MALFORMED", f"{self.info.dataset} expects {self.n_inputs} input channel(s), "
                             f"got {len(channels)}.")
        ref = channels[0]
        # nnU-Net's SimpleITK reader sees a NIfTI as (z, y, x) with reversed spacing
        data = np.stack([np.asanyarray(c.dataobj, dtype=np.float32).transpose(2, 1, 0) for c in channels])
        spacing = [float(s) for s in ref.header.get_zooms()[:3]][::-1]
        try:
            seg = self.predictor.predict_single_npy_array(data, {"spacing": spacing}, None, None, False)
        finally:
            if self.backend != "torch":
                # the other step's network runs next: hand this one's activation buffers back (GBs at full size)
                self.predictor.network.release_memory()
        return nib.Nifti1Image(np.asarray(seg).transpose(2, 1, 0).astype(np.uint8), ref.affine, ref.header)


@dataclass
class ModelPair:
    step1: LoadedModel
    step2: LoadedModel
    device: str
    backend: str = "torch"

    def describe(self) -> dict:
        steps = {name: {**m.info.as_dict(), **({"openvino_ir": m.ir_source} if m.ir_source else {}),
                        **({"openvino_ir_warning": m.ir_warning} if m.ir_warning else {})}
                 for name, m in (("step1", self.step1), ("step2", self.step2))}
        return {"device": self.device, "backend": self.backend, **steps}

    @property
    def warnings(self) -> list[str]:
        """What the run's report should warn about how the networks were loaded (a cached IR made again)."""
        return [m.ir_warning for m in (self.step1, self.step2) if m.ir_warning]

    @property
    def kind(self) -> str:
        return "phantom" if "phantom" in (self.step1.info.kind, self.step2.info.kind) else "official"


_CACHE: dict[tuple[str, str, str, str], ModelPair] = {}
_CACHE_LOCK = threading.Lock()


def pick_device(setting: str = "auto") -> str:
    import torch
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelError("DEVICE_UNAVAILABLE", "SPINESEG_DEVICE=cuda but no CUDA device is visible; use 'cpu' or 'auto'.")
    return setting


def load_models(models_dir: Path, device: str = "auto", release: str = "auto", backend: str = "torch") -> ModelPair:
    """Load both steps once per process; later calls with the same folder reuse them.

    ``backend`` (spineseg.inference.backends): ``torch``, the reference's exact path, unless asked
    otherwise; the app passes its ``SPINESEG_BACKEND`` setting (default ``auto``).
    """
    with _CACHE_LOCK:
        # the first load (torch, nnU-Net, OpenVINO: some 300,000 lasting objects) out of the collector's way
        with collection_paused() if not _CACHE else contextlib.nullcontext():
            device = pick_device(device)
            backend = backends.resolve(backend, device)
            key = (str(Path(models_dir).resolve()), device, release, backend)
            if key not in _CACHE:
                _CACHE[key] = ModelPair(*(LoadedModel(find_model_folder(models_dir, ds, release), device, backend)
                                          for ds in (STEP1_DATASET, STEP2_DATASET)), device, backend)
        return _CACHE[key]


@dataclass
class SegmentationResult:
    labels: np.ndarray                    # same shape and grid as the input volume
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    numbering: Numbering | None = None    # anchors, landmark agreement, variants (spineseg.inference.numbering)
    partner: dict | None = None           # the series of the study whose labels named the levels (--loc)


@dataclass
class NetworkMemo:
    """What :func:`segment_volume` computed for one volume that no localizer changes: the image as read
    (``raw``), the 1 mm image (``iso``), step 1's network output reduced to its largest components
    (``components``), and step 2's network output for the inputs it was given (``step2``, under ``step2_key``).
    Given to a second call for the same volume with a partner's localizer (the pipeline's no-landmark retry),
    it spares that call the preprocessing and step 1's network, and step 2's network too when the localizer
    leaves step 2's inputs (the crop and the odd discs) as they were."""

    key: tuple = ()
    raw: nib.Nifti1Image | None = None
    iso: nib.Nifti1Image | None = None
    components: nib.Nifti1Image | None = None
    step2_key: tuple = ()
    step2: nib.Nifti1Image | None = None

    @staticmethod
    def key_of(array: np.ndarray, affine_lps: np.ndarray, dicom_stack: bool) -> tuple:
        return id(array), array.shape, np.asarray(affine_lps, float).tobytes(), dicom_stack

    @staticmethod
    def step2_key_of(cropped: nib.Nifti1Image, odd: nib.Nifti1Image) -> tuple:
        odd_data = np.ascontiguousarray(np.asanyarray(odd.dataobj))
        return (cropped.shape, np.asarray(cropped.affine).tobytes(), odd_data.dtype.str,
                hashlib.sha256(odd_data).hexdigest())


def _iterative_label(seg: nib.Nifti1Image, step: str, localizer: nib.Nifti1Image | None = None,
                     **params) -> nib.Nifti1Image:
    """totalspineseg's labelling (with a localizer's labels when given, as ``--loc``); its "no landmark"
    ValueError becomes a specific input error."""
    import copy

    # iterative_label drops the landmarks it discards from the list it is given
    # (selected_disc_landmarks.remove(...)): each call gets its own copy, or one series (any lumbar
    # one drops C2-C3) would change how every later series in the process is labelled.
    params = copy.deepcopy({**params, **(WITH_LOCALIZER if localizer is not None else {})})
    try:
        return postprocess.iterative_label(seg, localizer, **params)
    except ValueError as exc:
        if "landmark" not in str(exc):
            # e.g. no spinal canal to sort the discs along: the segmentation cannot be labelled
            raise InputError("LABELLING_FAILED", f"{step} output could not be labelled into levels ({exc}); the "
                             "series may not show the spinal canal clearly.") from exc
        raise InputError("NO_LEVEL_LANDMARK", f"{step} found the spine but none of the landmark discs (C2-C3, C7-T1, "
                         "T12-L1, L5-S1) that TotalSpineSeg needs to name the levels; send a series whose field of "
                         "view includes the cranio-cervical or lumbosacral junction.") from exc


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)


def as_stored_affine(affine: np.ndarray) -> np.ndarray:
    """``affine`` as a NIfTI file holds it (float32 ``srow`` rows), in float64.

    The reference command saves and re-reads the image after each of its steps, so every step
    starts from the float32-rounded affine of the previous one. Without that rounding the 1 mm
    grid's origin can differ in its last float32 digit, which flips nearest-neighbour ties on the
    way back to a source grid whose voxel centres fall half-way between 1 mm voxels (for example
    3 mm slices).
    """
    return np.asarray(affine, np.float64).astype(np.float32).astype(np.float64)


def _dcm2niix_index(rows: int) -> np.ndarray:
    """Voxel index (column, rows - 1 - row, slice) of dcm2niix's NIfTI -> (slice, row, column) of a DICOM stack."""
    return np.array([[0, 0, 1, 0], [0, -1, 0, rows - 1], [1, 0, 0, 0], [0, 0, 0, 1]], np.float64)


def to_dcm2niix_layout(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A DICOM stack (``dicom_input.load_volume``: slice, row, column) laid out as dcm2niix stores it:
    columns first, rows reversed (bottom row first), slices last; ``affine`` follows the voxels.

    The seed pipeline (dcm2niix -> totalspineseg) reads that layout, and its results depend on it beyond
    the geometry: the float32 affine is rounded with the last row as origin, and where a source voxel
    centre lies exactly half-way between two 1 mm planes (axial 4 mm slices), the resampler's rounding
    noise, which follows the axis order, decides the tie. Segmenting the stack in this layout makes every
    one of those decisions the seed pipeline's (bench/seed_pipeline_agreement.py)."""
    array = np.asarray(array)
    return (np.ascontiguousarray(array.transpose(2, 1, 0)[:, ::-1, :]),
            np.asarray(affine, np.float64) @ _dcm2niix_index(array.shape[1]))


def from_dcm2niix_layout(data: np.ndarray) -> np.ndarray:
    """Voxels of :func:`to_dcm2niix_layout`'s layout back in the DICOM stack's (slice, row, column)."""
    return np.ascontiguousarray(np.asarray(data)[:, ::-1, :].transpose(2, 1, 0))


def _nifti(data: np.ndarray, affine: np.ndarray, header=None) -> nib.Nifti1Image:
    """A NIfTI image with the stored (float32) affine and matching qform/sform, as the reference writes it."""
    stored = as_stored_affine(affine)
    image = nib.Nifti1Image(data, stored, header)
    image.set_qform(stored, update_affine=False)   # the header holds float32; the image keeps ``stored``
    image.set_sform(stored, update_affine=False)
    return image


def integer_storage_dtype(array: np.ndarray) -> type | None:
    """The integer type a NIfTI of this volume would hold (as dcm2niix writes MR: int16, or uint16
    beyond it), or None when the values are not all integers (a rescaled series stays float)."""
    if np.issubdtype(array.dtype, np.integer):
        return array.dtype.type
    if not np.array_equal(array, np.round(array)):
        return None
    lo, hi = float(array.min()), float(array.max())
    if -32768 <= lo and hi <= 32767:
        return np.int16
    if 0 <= lo and hi <= 65535:
        return np.uint16
    return None


def localizer_image(labels: np.ndarray, affine_lps: np.ndarray, dicom_stack: bool = False) -> nib.Nifti1Image:
    """A labelled partner series as ``--loc`` reads it: the final labels on their own grid, affine as stored
    (``dicom_stack``: ``labels`` are a DICOM stack's, stored in dcm2niix's layout as the seed pipeline has them)."""
    if dicom_stack:
        labels, affine_lps = to_dcm2niix_layout(labels, affine_lps)
    return _nifti(np.asarray(labels, np.uint8), lps_to_ras(affine_lps))


def _through_step1_network(array: np.ndarray, affine_lps: np.ndarray, models: ModelPair, dicom_stack: bool,
                           stage: Callable[[str, float], None]) -> tuple:
    """(raw, iso, components, t): the volume as the reference reads it, its 1 mm image, step 1's network output
    reduced to its largest components, and the time step 1's post-processing started."""
    tss = nnunet_import.utilities()
    t = time.perf_counter()
    stored_dtype = integer_storage_dtype(array)
    source = to_dcm2niix_layout(array, affine_lps) if dicom_stack else (array, affine_lps)
    # Each image below is rounded as the reference's NIfTI files are between its steps (input file,
    # reorient_canonical_mp's output, resample_mp's output), so both land on the same 1 mm grid.
    raw = _nifti(np.asarray(source[0], np.float32), lps_to_ras(source[1]))
    del source
    canonical = nib.as_closest_canonical(raw)
    canonical = _nifti(np.asanyarray(canonical.dataobj), canonical.affine, canonical.header)
    iso = tss.resample(canonical)
    iso_data = np.asanyarray(iso.dataobj)
    if stored_dtype is not None:
        # The reference writes the 1 mm image back in the input's integer type (totalspineseg's
        # resample_mp casts, truncating); give the networks the same intensities it gives them.
        iso_data = iso_data.astype(stored_dtype)
    iso = _nifti(iso_data.astype(np.float32), iso.affine, iso.header)
    stage("preprocess", t)

    t = time.perf_counter()
    step1 = models.step1.predict([iso])
    stage("step1_network", t)

    t = time.perf_counter()
    return raw, iso, postprocess.largest_component(step1, binarize=True, dilate=5), t


def segment_volume(array: np.ndarray, affine_lps: np.ndarray, models: ModelPair,
                   on_stage: Callable[[str, float], None] | None = None,
                   localizer: nib.Nifti1Image | None = None, localizer_name: str | None = None,
                   dicom_stack: bool = False, memo: NetworkMemo | None = None) -> SegmentationResult:
    """Final TotalSpineSeg labels for a volume, on the volume's own grid.

    ``array`` is indexed like ``affine_lps`` (voxel index -> LPS mm); ``dicom_stack``: it is a DICOM stack
    (slice, row, column), segmented in dcm2niix's layout (:func:`to_dcm2niix_layout`) so that the labels are
    the seed pipeline's, and returned in the stack's own. ``localizer`` (``localizer_image``
    of a labelled series of the same Frame of Reference) names the levels as ``totalspineseg --loc``
    does. Raises :class:`InputError` ``NO_SPINE_FOUND`` when step 1 finds no anatomy, as the reference
    command does. ``memo``: filled by a first call, reused by a later one for the same volume
    (:class:`NetworkMemo`); the reused stages are then absent from ``timings``.
    """
    tss = nnunet_import.utilities()
    timings: dict[str, float] = {}

    def stage(name: str, t0: float):
        timings[name] = round(time.perf_counter() - t0, 3)
        if on_stage:
            on_stage(name, timings[name])

    key = NetworkMemo.key_of(array, affine_lps, dicom_stack)
    if memo is not None and memo.components is not None:
        if memo.key != key:
            raise ValueError("memo was filled for another volume")
        raw, iso = memo.raw, memo.iso
        components = memo.components
        t = time.perf_counter()
    else:
        raw, iso, components, t = _through_step1_network(array, affine_lps, models, dicom_stack, stage)
        if memo is not None:
            memo.key, memo.raw, memo.iso, memo.components = key, raw, iso, components
    # a copy: the labelling below must leave the memo's components as they are for a later call
    s1 = nib.Nifti1Image(np.array(components.dataobj), components.affine, components.header)
    s1 = _iterative_label(s1, "Step 1", localizer, **STEP1_LABELLING)
    if not np.asanyarray(s1.dataobj).any():
        raise InputError("NO_SPINE_FOUND", "Step 1 found no spine in the chosen series: the images are likely "
                         "too different from the training data (not a spine MRI, or very low quality).")
    s1 = tss.fill_canal(s1, **FILL_CANAL)
    s1 = tss.transform_seg2image(iso, s1)
    cropped = tss.crop_image2seg(iso, s1, margin=10)
    s1c = tss.transform_seg2image(cropped, s1)
    odd = tss.extract_alternate(s1c, labels=ALL_DISC_OUTPUT_LABELS)
    stage("step1_postprocess", t)
    if not np.asanyarray(odd.dataobj).any():
        raise InputError("NO_DISCS_FOUND", "Step 1 found no intervertebral disc, so vertebrae cannot be labelled; "
                         "the series may not cover the spine.")

    # step 2's inputs are hashed only for a memo (a later call for the same volume may reuse its output)
    step2_key = NetworkMemo.step2_key_of(cropped, odd) if memo is not None else None
    if memo is not None and memo.step2 is not None and memo.step2_key == step2_key:
        step2 = memo.step2
    else:
        t = time.perf_counter()
        step2 = models.step2.predict([cropped, odd])
        stage("step2_network", t)
        if memo is not None:
            memo.step2_key, memo.step2 = step2_key, step2

    t = time.perf_counter()
    s2 = postprocess.largest_component(step2, binarize=True, dilate=5)
    s2_network = np.asanyarray(s2.dataobj)
    s2 = _iterative_label(s2, "Step 2", localizer, **STEP2_LABELLING)
    s2_labelled = np.asanyarray(s2.dataobj)
    s2 = tss.fill_canal(s2, **FILL_CANAL)
    s2 = tss.transform_seg2image(iso, s2)
    final = tss.transform_seg2image(raw, s2, interpolation="nearest")
    labels = np.asanyarray(final.dataobj).round().astype(np.uint8)
    if dicom_stack:
        labels = from_dcm2niix_layout(labels)
    stage("step2_postprocess", t)
    # what the numbering rests on and what contradicts it (reads the arrays, changes nothing)
    numbering = assess_numbering(s2_network, s2_labelled, {**STEP2_LABELLING, **(WITH_LOCALIZER if localizer else {})},
                                 labels, affine_lps, anchored_by=localizer_name if localizer is not None else None)
    return SegmentationResult(labels, timings, numbering=numbering)
