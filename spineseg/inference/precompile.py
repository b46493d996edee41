"""Export both steps' networks to OpenVINO IR beside their checkpoints, for a model folder that is read-only
at run time (the MAP image runs this at build time)::

    python -m spineseg.inference.precompile MODELS [--release r20260730]

Each IR goes to ``<model folder>/openvino/<key>/`` with its manifest (``spineseg.inference.backends``); a run
then takes it from there, checked against the manifest, instead of exporting into a writable cache. This
module sits above ``two_step`` (model discovery and loading) and ``backends`` (export), which import
neither it nor each other's command.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from spineseg.inference.backends import PRECOMPILED_FOLDER, ir_for
from spineseg.inference.checksums import remember
from spineseg.inference.two_step import STEP1_DATASET, STEP2_DATASET, LoadedModel, find_model_folder


def precompile(models_dir: Path, release: str = "auto") -> list[Path]:
    """Export both steps' models (``release`` as SPINESEG_MODEL_RELEASE chooses them) into their model
    folders' ``openvino/`` folder. Returns the IR paths."""
    written = []
    for dataset in (STEP1_DATASET, STEP2_DATASET):
        folder = find_model_folder(models_dir, dataset, release)
        model = LoadedModel(folder, "cpu", backend="torch")
        key = model.export_key()
        ir_for(lambda: model.predictor.network, folder, key, model.patch_size, model.trace_shape,
               cache_dir=folder / PRECOMPILED_FOLDER, must_save=True)
        # the checkpoint's digest beside its IR: a run on this very file need not hash it again
        remember(model.info.checkpoint, model.info.sha256, folder / PRECOMPILED_FOLDER)
        written.append(folder / PRECOMPILED_FOLDER / key.digest() / "model.xml")
        print(f"{dataset}: {written[-1]}")
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, metavar="MODELS", help="the models folder (as the app's -m)")
    ap.add_argument("--release", default="auto", help="as SPINESEG_MODEL_RELEASE (default: auto)")
    a = ap.parse_args(argv)
    precompile(a.models, a.release)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
