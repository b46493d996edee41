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
    0.1 %). The figures are in docs/performance.md ("Full-size networks on the CPU"), ``bench/results/backends.json`` and
    ``bench/results/seed_pipeline_agreement.json``.

The IR is exported once per checkpoint and kept in a cache folder keyed by the checkpoint's SHA-256, the
plans' configuration, and the OpenVINO and PyTorch versions, so a changed checkpoint never runs a stale
network. A read-only model folder (``/opt/holoscan/models`` in the MAP) may carry its IR beside the
checkpoint (``<model folder>/openvino/<key>/``, written at image build by ``python -m
spineseg.inference.precompile MODELS``); otherwise the first run exports into the writable cache.

Each IR folder carries a manifest (``manifest.json``, written last) with its key and the size and SHA-256 of
model.xml and model.bin; an IR runs only from bytes that match it. A cached IR that does not match (changed,
truncated, unreadable, no manifest) is removed and exported again with a warning; a precompiled one is refused
(``MODEL_MALFORMED``: re-run the precompile).

A cached IR also keeps the network as OpenVINO compiled it, read from there, for this CPU
(``<entry>/compiled/``: OpenVINO's ``export_model``, with a manifest of its own naming the OpenVINO version,
the compile settings and the CPU, and the blob's size and SHA-256), so that a later run imports it instead of
compiling again (about 0.1 s per phantom network, more at full size). Not OpenVINO's own ``CACHE_DIR``: that
runs whatever blob it finds under its key, and a blob whose bytes were changed on disk ran there without a
word, giving other logits. A blob that does not match its manifest, or that OpenVINO cannot import, is removed
and the IR compiled again; one that cannot be written (a read-only or full cache) is not kept. Nothing is kept
for a precompiled IR (the MAP image's writable /tmp is new in each container: a blob there would cost time and
memory and help no run), nor for an IR exported in this run (the next run compiles it as read back, then keeps
that).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from functools import cache
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spineseg.errors import ModelError
from spineseg.inference.checksums import sha256_of

log = logging.getLogger(__name__)

# ``import openvino`` imports its model converter, which sends a usage event to Google Analytics from a forked
# process (openvino_telemetry, opt-out: a consent file in the home folder), on every run: the app must not call
# out of a hospital's network, and the fork and the thread that waits up to 3 s for it cost every run (that
# thread also holds the process's exit). Without the openvino_telemetry module OpenVINO uses its own no-op stub
# (openvino.tools.ovc imports it on ImportError; None in sys.modules is that ImportError). Where OpenVINO was
# imported before this module, nothing changes.
if "openvino" not in sys.modules:
    sys.modules.setdefault("openvino_telemetry", None)

BACKENDS = ("torch", "openvino", "openvino-bf16")
SETTINGS = ("auto", *BACKENDS)
EXPORT_FORMAT = 1                 # bump when the way the IR is made changes
PRECOMPILED_FOLDER = "openvino"   # beside plans.json in a model folder
PRECISION = {"openvino": "f32", "openvino-bf16": "bf16"}
COMPILED_FOLDER = "compiled"      # in a cached IR's folder: that IR compiled for this CPU
COMPILED_FORMAT = 1               # bump when the way a compiled network is kept changes
CACHE_ENTRY = "spineseg_cache_entry"   # rt_info of a model read from (or saved into) a cache entry: its folder


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


IR_FILES = ("model.xml", "model.bin")


class IRMismatch(Exception):
    """An IR folder whose files are not the ones its manifest names (or that has no usable manifest)."""


def _file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def _write_manifest(entry: Path, key: ExportKey) -> None:
    """``entry/manifest.json``: the key and each IR file's size and SHA-256, written after the files and
    renamed into place, so that a manifest is only ever whole and only ever names files that were complete."""
    manifest = {**key.manifest(), "files": {name: _file_record(entry / name) for name in IR_FILES}}
    partial = entry / ".manifest.json.partial"
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, entry / "manifest.json")


def _read_exact(path: Path, record: dict):
    """The file's bytes, read once into memory owned by OpenVINO (a ``u8`` tensor) and checked against
    ``record``: what is checked is what runs, whatever happens to the file afterwards."""
    import openvino as ov
    size = record.get("bytes") if isinstance(record, dict) else None
    if not isinstance(size, int) or not isinstance(record.get("sha256"), str):
        raise IRMismatch(f"its manifest has no size and SHA-256 for {path.name}")
    try:
        with open(path, "rb") as fh:
            actual = os.fstat(fh.fileno()).st_size
            if actual != size:
                raise IRMismatch(f"{path.name} has {actual} bytes, its manifest says {size}")
            data = ov.Tensor(ov.Type.u8, [size])
            view, done = memoryview(data.data), 0
            while done < size:
                n = fh.readinto(view[done:])
                if not n:
                    raise IRMismatch(f"{path.name} ended after {done} of {size} bytes")
                done += n
    except OSError as exc:
        raise IRMismatch(f"{path.name} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    if hashlib.sha256(view).hexdigest() != record["sha256"]:
        raise IRMismatch(f"{path.name} is not the file its manifest names (its SHA-256 differs)")
    return data


def _read_verified(entry: Path, key: ExportKey):
    """The IR in ``entry`` as an OpenVINO model, made from bytes that match its manifest; else IRMismatch.

    Costs one SHA-256 of the IR per load: model.bin holds the fp32 weights (a full-size network's ~0.56 GB).
    """
    import openvino as ov
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
    except FileNotFoundError:
        raise IRMismatch("it has no manifest.json") from None
    except (OSError, ValueError) as exc:
        raise IRMismatch(f"its manifest.json cannot be read ({type(exc).__name__})") from exc
    files = manifest.pop("files", None) if isinstance(manifest, dict) else None
    if manifest != key.manifest():
        raise IRMismatch("its manifest.json is not this checkpoint's and versions'")
    if not isinstance(files, dict) or set(files) != set(IR_FILES):
        raise IRMismatch("its manifest.json lists no SHA-256 of model.xml and model.bin")
    xml, weights = (_read_exact(entry / name, files[name]) for name in IR_FILES)
    try:
        text = bytes(xml.data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IRMismatch("model.xml is not UTF-8 text") from exc
    return ov.Core().read_model(text, weights)


def _discard(entry: Path) -> None:
    """Remove a cache entry: renamed away first (one step), so no run ever sees it half removed."""
    aside = entry.parent / f".discarded-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.replace(entry, aside)
    except OSError:
        return                    # gone already (another run removed it), or a read-only cache
    shutil.rmtree(aside, ignore_errors=True)


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
    """Write the IR into ``folder/<digest>`` atomically (a finished folder, manifest last, is renamed into
    place, so a concurrent run sees either nothing or a whole IR); None where ``folder`` is not writable."""
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
        _write_manifest(tmp, key)
        for _attempt in range(3):
            try:
                os.replace(tmp, target)
                break
            except OSError:
                # another process finished the same export first (keep its IR where it matches), or a
                # broken entry holds the name
                try:
                    _read_verified(target, key)
                    break
                except IRMismatch:
                    _discard(target)
        else:
            log.warning("could not place the OpenVINO IR at %s; the network is exported again on the next run", target)
            return None
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


@dataclass
class IR:
    """An OpenVINO model, where it came from (``precompiled`` | ``cache`` | ``exported``) and, where a cache
    entry did not match its manifest and was made again, a warning saying so."""

    model: object
    source: str
    warning: str | None = None


def ir_for(make_network, model_folder: Path, key: ExportKey, patch_size: list[int], trace_shape: list[int],
           cache_dir: Path | None = None, must_save: bool = False) -> IR:
    """The OpenVINO model of a checkpoint: precompiled beside it, cached, or exported now from the PyTorch
    network ``make_network()`` builds (called only then). ``must_save``: raise where the export cannot be
    written (``precompile``) rather than run from memory.

    Every IR is checked against its manifest (file sizes and SHA-256) before it runs. A precompiled IR that
    does not match is refused (``MODEL_MALFORMED``: it is part of the image, which is wrong); a cached one is
    removed and exported again, with a warning.
    """
    precompiled = model_folder / PRECOMPILED_FOLDER
    cache = cache_dir or default_cache_dir()
    name, warning = key.digest(), None
    is_precompile = cache.resolve() == precompiled.resolve()      # ``precompile`` writes beside the checkpoint
    if not is_precompile and (precompiled / name).exists():
        try:
            return IR(_read_verified(precompiled / name, key), "precompiled")
        except IRMismatch as exc:
            raise ModelError("MODEL_MALFORMED", f"The precompiled OpenVINO IR {precompiled / name} does not match "
                             f"its manifest: {exc}. It was not run. Re-run `python -m spineseg.inference.precompile "
                             "MODELS` on this model folder (or rebuild the image), or set "
                             "SPINESEG_BACKEND=torch.", path=str(precompiled / name)) from None
    if (cache / name).exists():
        try:
            model = _read_verified(cache / name, key)
            if not is_precompile:
                _mark_cache_entry(model, cache / name)
            return IR(model, "precompiled" if is_precompile else "cache")
        except IRMismatch as exc:
            warning = (f"the cached OpenVINO IR of {key.model} ({cache / name}) did not match its manifest "
                       f"({exc}); it was removed and the network exported again")
            log.warning(warning)
            _discard(cache / name)
    t0 = time.perf_counter()
    model = _export(make_network(), patch_size, key.n_inputs, trace_shape)
    log.info("exported %s to OpenVINO in %.1f s", model_folder.parent.name, time.perf_counter() - t0)
    if _save(model, cache, key) is not None:
        _prune(cache, key)
    elif must_save:
        raise ModelError("MODEL_MALFORMED", f"cannot write the OpenVINO IR into {cache}", path=str(cache))
    return IR(model, "exported", warning)


def _mark_cache_entry(model, entry: Path) -> None:
    """Record on ``model`` the cache entry it was read from or saved into (where its compiled form is kept)."""
    model.set_rt_info(str(entry), CACHE_ENTRY)


def _cache_entry_of(model) -> Path | None:
    try:
        return Path(model.get_rt_info(CACHE_ENTRY).astype(str)) if model.has_rt_info(CACHE_ENTRY) else None
    except Exception:          # not an OpenVINO model (a stand-in), or no such record
        return None


@cache
def _cpu_identity() -> dict:
    """What a compiled network may depend on besides OpenVINO's version and its settings: the CPU's model and
    instruction set (OpenVINO picks its kernels and its precision transformations from them)."""
    import openvino as ov
    identity = {"machine": platform.machine(), "openvino_capabilities": [], "model": "", "flags": ""}
    try:
        identity["openvino_capabilities"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:
        pass
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    first = {}                     # the first processor's lines (every processor of a host is the same model)
    for line in cpuinfo.splitlines():
        field, _, value = line.partition(":")
        first.setdefault(field.strip(), value.strip())
    identity["model"] = first.get("model name") or platform.processor()
    identity["flags"] = first.get("flags", "")
    return identity


def _compiled_manifest(config: dict) -> dict:
    import openvino as ov
    return {"format": COMPILED_FORMAT, "openvino": ov.get_version(), "config": config, "cpu": _cpu_identity()}


def _compiled_paths(entry: Path, manifest: dict) -> tuple[Path, Path]:
    name = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:20]
    return entry / COMPILED_FOLDER / f"{name}.blob", entry / COMPILED_FOLDER / f"{name}.json"


def _remove_quietly(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def load_compiled(entry: Path, config: dict):
    """The network kept compiled in cache entry ``entry`` for ``config`` on this CPU, imported from bytes that
    match its manifest; None where there is none, or it does not match or import (then it is removed)."""
    import openvino as ov
    manifest = _compiled_manifest(config)
    blob, record_path = _compiled_paths(entry, manifest)
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        record = None
    try:
        if not isinstance(record, dict) or record.get("key") != manifest:
            raise IRMismatch("its manifest is not this OpenVINO's, settings' and CPU's")
        return ov.Core().import_model(_read_exact(blob, record.get("blob")), "CPU", config)
    except Exception as exc:    # a mismatch, or what OpenVINO refuses: compiled again, and kept again
        log.info("the compiled network kept in %s was not used (%s); compiling the IR", entry, exc)
        _remove_quietly(blob, record_path)
        return None


def keep_compiled(compiled, entry: Path, config: dict) -> None:
    """Keep ``compiled`` (``config`` on this CPU) in cache entry ``entry``: the blob, then its manifest, each
    renamed into place whole. Silently nothing where it cannot be written (a read-only or full cache)."""
    manifest = _compiled_manifest(config)
    blob, record_path = _compiled_paths(entry, manifest)
    partial = None
    try:
        stream = io.BytesIO()
        compiled.export_model(stream)
        data = stream.getbuffer()
        blob.parent.mkdir(exist_ok=True)               # inside the entry only: never the entry itself
        for path, content in ((blob, data), (record_path, json.dumps(
                {"key": manifest, "blob": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
                indent=2, sort_keys=True).encode() + b"\n")):
            fd, partial = tempfile.mkstemp(prefix=".partial-", dir=blob.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.replace(partial, path)
            partial = None
    except Exception as exc:
        log.debug("the compiled network was not kept in %s (%s)", entry, exc)
        if partial:
            _remove_quietly(Path(partial))


def network_config(precision: str, threads: int | None = None) -> dict:
    """OpenVINO's compile settings for ``precision`` on ``threads`` CPUs (default: :func:`cpu_budget`)."""
    return {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads or cpu_budget())}


class OpenVINONetwork:
    """Stands in for ``nnUNetPredictor.network``: a patch tensor in, its logits out, through OpenVINO.

    nnU-Net calls ``to``, ``eval`` and ``load_state_dict`` on its network before predicting; the weights are
    already in the IR (whose cache key is the checkpoint's digest), so those calls have nothing to do.

    A model from a cache entry (:func:`ir_for`) is imported as it was compiled before, where that is kept there
    (:func:`load_compiled`), else compiled and kept (:func:`keep_compiled`); ``compiled_from``: ``"cache"`` or
    ``"compiled"``.
    """

    def __init__(self, model, precision: str, threads: int | None = None):
        import openvino as ov
        config = network_config(precision, threads)
        self.precision = precision
        entry = _cache_entry_of(model)
        self.compiled = load_compiled(entry, config) if entry else None
        self.compiled_from = "cache" if self.compiled is not None else "compiled"
        if self.compiled is None:
            self.compiled = ov.Core().compile_model(model, "CPU", config)
            if entry:
                keep_compiled(self.compiled, entry, config)
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
