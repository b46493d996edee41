"""Where the networks' forward pass runs: PyTorch (the reference's exact path) or OpenVINO on the CPU.

Only the network call changes. nnU-Net's predictor keeps doing everything around it exactly as the
reference does: the sliding window, its Gaussian weighting and half-precision accumulation, padding and
resampling back. An OpenVINO backend takes the predictor's place of ``predictor.network``: a module that
receives one patch tensor of the plans' patch size and returns its logits.

Backends (setting ``SPINESEG_BACKEND``):

``torch``
    PyTorch as nnU-Net runs it (fp32 on the CPU, autocast on CUDA): the path whose labels equal the
    ``totalspineseg`` command's.
``openvino``
    The same network exported to OpenVINO IR, run in fp32 (``INFERENCE_PRECISION_HINT=f32``; without the
    hint OpenVINO silently runs bf16 on CPUs that have bf16 units).
``openvino-bf16``
    The IR run in bfloat16: only where the CPU has bf16 matrix or vector units (AMX or AVX512-BF16).
``auto``
    ``torch`` on CUDA, ``openvino`` (fp32) on the CPU. Not bf16, though only bf16 is fast enough for a
    full-size network on 2 cores: its final labels differ from the reference on 0.07-0.11 % of the
    foreground voxels of the phantom cases and on 0.12 % of the clinical bench study's (the floor is
    0.1 %). The figures are in README ("Inference backends"), ``bench/results/backends.json`` and
    ``bench/results/seed_pipeline_agreement.json``.

The IR is exported once per checkpoint and kept in a cache folder keyed by the checkpoint's SHA-256, the
plans' configuration, and the OpenVINO and PyTorch versions, so a changed checkpoint never runs a stale
network. A read-only model folder (``/opt/holoscan/models`` in the MAP) may carry its IR beside the
checkpoint (``<model folder>/openvino/<key>/``, written at image build by ``python -m
spineseg.inference.backends --precompile MODELS``); otherwise the first run exports into the writable cache.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spineseg.errors import ModelError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "openvino", "openvino-bf16")
SETTINGS = ("auto", *BACKENDS)
EXPORT_FORMAT = 1                 # bump when the way the IR is made changes
PRECOMPILED_FOLDER = "openvino"   # beside plans.json in a model folder
PRECISION = {"openvino": "f32", "openvino-bf16": "bf16"}


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin reports bfloat16 execution (AMX or AVX512-BF16 units)."""
    try:
        import openvino as ov
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:       # no openvino, or no CPU plugin: no bf16 either
        return False


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
        return True
    except ImportError:
        return False


def resolve(setting: str, device: str) -> str:
    """The backend that ``setting`` means on ``device`` ("cpu", "cuda" or "cuda:N"); refuses a combination
    that cannot run, naming what to change."""
    setting = (setting or "auto").lower()
    if setting not in SETTINGS:
        raise ModelError("BACKEND_UNKNOWN", f"SPINESEG_BACKEND={setting!r}: use one of {', '.join(SETTINGS)}.")
    on_cuda = device.startswith("cuda")
    if setting == "auto":
        return "torch" if on_cuda or not openvino_available() else "openvino"
    if setting != "torch":
        if on_cuda:
            raise ModelError("BACKEND_UNAVAILABLE", f"SPINESEG_BACKEND={setting} runs on the CPU but "
                             f"SPINESEG_DEVICE={device}; use SPINESEG_BACKEND=torch (or auto) on a GPU.")
        if not openvino_available():
            raise ModelError("BACKEND_UNAVAILABLE", f"SPINESEG_BACKEND={setting} needs the openvino package, which "
                             "is not installed; install requirements.txt or use SPINESEG_BACKEND=torch.")
        if setting == "openvino-bf16" and not cpu_has_bf16():
            raise ModelError("BACKEND_UNAVAILABLE", "SPINESEG_BACKEND=openvino-bf16 needs a CPU with bfloat16 units "
                             "(AMX or AVX512-BF16), which this one lacks; use openvino (fp32) or auto.")
    return setting


def cpu_budget(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (``docker run --cpus``, a
    Kubernetes CPU limit). OpenVINO otherwise starts one thread per core of the host, and under a quota
    of 2 CPUs on a 16-core node those threads mostly wait for their share."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for path, parse in ((cgroup / "cpu.max", lambda t: t.split()),                       # cgroup v2
                        (cgroup / "cpu" / "cpu.cfs_quota_us", None)):                    # cgroup v1
        try:
            if parse:
                quota, period = parse(path.read_text())
            else:
                quota, period = path.read_text().strip(), (path.parent / "cpu.cfs_period_us").read_text().strip()
            if quota not in ("max", "-1") and float(period) > 0:
                n = min(n, max(1, int(-(-float(quota) // float(period)))))
            break
        except (OSError, ValueError):
            continue
    return max(1, n)


def default_cache_dir() -> Path:
    """``SPINESEG_OPENVINO_CACHE``, else ``$XDG_CACHE_HOME/spine-seg/openvino`` (``~/.cache`` by default)."""
    if os.environ.get("SPINESEG_OPENVINO_CACHE"):
        return Path(os.environ["SPINESEG_OPENVINO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "spine-seg" / "openvino"


@dataclass(frozen=True)
class ExportKey:
    """What an exported IR depends on; its digest names the IR's folder."""

    model: str                # "<dataset>/<trainer>__<plans>__<configuration>"
    checkpoint_sha256: str
    configuration: str        # the plans' configuration (architecture, patch size), as JSON
    n_inputs: int

    def manifest(self) -> dict:
        import openvino as ov
        import torch
        return {"format": EXPORT_FORMAT, "model": self.model, "checkpoint_sha256": self.checkpoint_sha256,
                "n_inputs": self.n_inputs,
                "configuration_sha256": hashlib.sha256(self.configuration.encode()).hexdigest(),
                "openvino": ov.get_version(), "torch": torch.__version__}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.manifest(), sort_keys=True).encode()).hexdigest()[:20]


def _find_ir(folders: list[Path], key: ExportKey) -> Path | None:
    name = key.digest()
    for folder in folders:
        xml = folder / name / "model.xml"
        try:
            manifest = json.loads((folder / name / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if xml.is_file() and manifest == key.manifest():
            return xml
    return None


def _export(network, patch_size: list[int], n_inputs: int, trace_shape: list[int]):
    """The network's graph, traced by TorchScript on a small input (``trace_shape``: the smallest the
    encoder's strides allow) and converted for the plans' patch size.

    Tracing runs the network once, so the small input keeps it to seconds (a full-size network on a whole
    256x256x80 patch traced for 227 s here). TorchScript keeps InstanceNorm as one operation, which OpenVINO
    runs as MVN; ``torch.export`` decomposes it into means and divisions, and bf16 then agreed with the
    torch path on 0.07 % fewer foreground voxels of the phantom cases.
    """
    import openvino as ov
    import torch
    example = torch.zeros(1, n_inputs, *trace_shape, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        # PyTorch 2.13 marks TorchScript deprecated; it still traces, and its graph is the one measured above
        # (tests/test_backends.py fails if a later PyTorch stops tracing it)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        traced = torch.jit.trace(network.eval(), example, check_trace=False)
    return ov.convert_model(traced, input=[(1, n_inputs, *patch_size)])


def _save(model, folder: Path, key: ExportKey) -> Path | None:
    """Write the IR into ``folder/<digest>`` atomically (a finished folder is renamed into place, so a
    concurrent run sees either nothing or a whole IR); None where ``folder`` is not writable."""
    import openvino as ov
    target = folder / key.digest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder))
    except OSError as exc:
        log.warning("OpenVINO cache %s is not writable (%s); the network is exported again on every run. Set "
                    "SPINESEG_OPENVINO_CACHE to a writable folder, or precompile the models (README)", folder, exc)
        return None
    try:
        ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
        (tmp / "manifest.json").write_text(json.dumps(key.manifest(), indent=2) + "\n")
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished the same export first, or a broken entry holds the name
            if _find_ir([folder], key) is None:
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / "model.xml"


def _prune(folder: Path, key: ExportKey) -> None:
    """Remove the cache's IRs of the same model made from another checkpoint or by other versions: a
    replaced checkpoint leaves nothing behind (a full-size IR is about 0.6 GB)."""
    keep = key.digest()
    for entry in folder.glob("*/manifest.json"):
        try:
            same_model = json.loads(entry.read_text()).get("model") == key.model
        except (OSError, ValueError):
            same_model = False
        if same_model and entry.parent.name != keep:
            shutil.rmtree(entry.parent, ignore_errors=True)


def ir_for(make_network, model_folder: Path, key: ExportKey, patch_size: list[int], trace_shape: list[int],
           cache_dir: Path | None = None, must_save: bool = False) -> tuple[object, str]:
    """The OpenVINO model of a checkpoint: precompiled beside it, cached, or exported now from the PyTorch
    network ``make_network()`` builds (called only then). Returns (model, where it came from:
    ``precompiled`` | ``cache`` | ``exported``). ``must_save``: raise where the export cannot be written
    (``precompile``) rather than run from memory."""
    import openvino as ov
    precompiled = model_folder / PRECOMPILED_FOLDER
    cache = cache_dir or default_cache_dir()
    found = _find_ir([precompiled, cache], key)
    if found is not None:
        return ov.Core().read_model(found), ("precompiled" if found.is_relative_to(precompiled) else "cache")
    t0 = time.perf_counter()
    model = _export(make_network(), patch_size, key.n_inputs, trace_shape)
    log.info("exported %s to OpenVINO in %.1f s", model_folder.parent.name, time.perf_counter() - t0)
    if _save(model, cache, key) is not None:
        _prune(cache, key)
    elif must_save:
        raise ModelError("MODEL_MALFORMED", f"cannot write the OpenVINO IR into {cache}", path=str(cache))
    return model, "exported"


class OpenVINONetwork:
    """Stands in for ``nnUNetPredictor.network``: a patch tensor in, its logits out, through OpenVINO.

    nnU-Net calls ``to``, ``eval`` and ``load_state_dict`` on its network before predicting; the weights are
    already in the IR (whose cache key is the checkpoint's digest), so those calls have nothing to do.
    """

    def __init__(self, model, precision: str, threads: int | None = None):
        import openvino as ov
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": int(threads or cpu_budget())}
        self.precision = precision
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x):
        import torch
        out = self.request.infer({0: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
        return torch.from_numpy(np.array(next(iter(out.values())), dtype=np.float32, copy=True))

    def to(self, *_args, **_kw):
        return self

    def eval(self):
        return self

    def load_state_dict(self, *_args, **_kw):
        return None

    def release_memory(self) -> None:
        """Free the activation buffers OpenVINO keeps between calls; the next call allocates them again."""
        self.compiled.release_memory()


def precompile(models_dir: Path, release: str = "auto") -> list[Path]:
    """Export both steps' models (``release`` as SPINESEG_MODEL_RELEASE chooses them) into their model
    folders' ``openvino/`` folder, for a model folder that is read-only at run time. Returns the IR paths."""
    from spineseg.inference.two_step import STEP1_DATASET, STEP2_DATASET, LoadedModel, find_model_folder
    written = []
    for dataset in (STEP1_DATASET, STEP2_DATASET):
        folder = find_model_folder(models_dir, dataset, release)
        model = LoadedModel(folder, "cpu", backend="torch")
        key = model.export_key()
        ir_for(lambda: model.predictor.network, folder, key, model.patch_size, model.trace_shape,
               cache_dir=folder / PRECOMPILED_FOLDER, must_save=True)
        written.append(folder / PRECOMPILED_FOLDER / key.digest() / "model.xml")
        print(f"{dataset}: {written[-1]}")
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Export the TotalSpineSeg models to OpenVINO IR beside their "
                                 "checkpoints (run at image build, so a read-only model folder needs no cache).")
    ap.add_argument("--precompile", type=Path, required=True, metavar="MODELS")
    ap.add_argument("--release", default="auto", help="as SPINESEG_MODEL_RELEASE (default: auto)")
    a = ap.parse_args(argv)
    precompile(a.precompile, a.release)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
