"""Install the official TotalSpineSeg weights (release zips) into a models folder, all or nothing.

    python tools/install_weights.py                          # download the release the installed totalspineseg names
    python tools/install_weights.py step1.zip step2.zip      # zips you already have
    python tools/install_weights.py --models /data/models --sha256 <step1> <step2> ...

Each zip is checked (CRC of every member, one Dataset folder with plans.json, dataset.json and a
fold_0 checkpoint, optional SHA-256), both models are loaded once as the app would load them, and only
then are both moved into ``<models>/nnUNet/results/<release>/`` together. A failure at any point leaves
the models folder as it was.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from spineseg.errors import ModelError
from spineseg.inference.checksums import sha256_of
from spineseg.inference.two_step import STEP1_DATASET, STEP2_DATASET, LoadedModel, find_model_folder

DATASETS = (STEP1_DATASET, STEP2_DATASET)


def official_urls() -> dict[str, str]:
    from importlib.metadata import metadata
    urls = [m.split(", ", 1) for m in metadata("totalspineseg").get_all("Project-URL") or [] if m.startswith("Dataset")]
    return dict(urls)


def release_of(name: str) -> str | None:
    m = re.search(r"_(r\d{8})\.zip$", name)
    return m.group(1) if m else None


def fetch(source: str, into: Path) -> Path:
    """A local zip as is, or a URL downloaded into ``into`` (a temporary folder)."""
    if re.match(r"^https?://", source):
        target = into / source.rsplit("/", 1)[-1]
        with urllib.request.urlopen(source, timeout=60) as resp, open(target, "wb") as out:
            shutil.copyfileobj(resp, out)
        return target
    path = Path(source)
    if not path.is_file():
        raise ModelError("WEIGHTS_NOT_FOUND", f"{path} does not exist.", path=str(path))
    return path


def check_zip(path: Path, expected_sha256: str | None = None) -> str:
    """Validate one release zip; return the dataset it holds."""
    if expected_sha256 and sha256_of(path) != expected_sha256.lower():
        raise ModelError("WEIGHTS_CORRUPT", f"{path.name}: SHA-256 does not match the expected value; "
                         "download it again.", path=str(path))
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError("WEIGHTS_CORRUPT", f"{path.name} is not a readable zip ({exc}); download it again.",
                         path=str(path)) from exc
    if bad is not None:
        raise ModelError("WEIGHTS_CORRUPT", f"{path.name}: member {bad} fails its CRC check; download it again.",
                         path=str(path))
    roots = {n.split("/", 1)[0] for n in names if "/" in n}
    datasets = [r for r in roots if r in DATASETS]
    if len(datasets) != 1 or any(n.startswith("/") or ".." in n.split("/") for n in names):
        raise ModelError("WEIGHTS_MALFORMED", f"{path.name} should hold exactly one of {DATASETS} at its top level; "
                         f"it holds {sorted(roots)}.", path=str(path))
    ds = datasets[0]
    has = lambda pattern: any(re.fullmatch(pattern, n) for n in names)  # noqa: E731
    for pattern, what in ((rf"{ds}/[^/]+__[^/]+__[^/]+/plans\.json", "plans.json"),
                          (rf"{ds}/[^/]+__[^/]+__[^/]+/dataset\.json", "dataset.json"),
                          (rf"{ds}/[^/]+__[^/]+__[^/]+/fold_0/checkpoint_(best|final)\.pth", "a fold_0 checkpoint")):
        if not has(pattern):
            raise ModelError("WEIGHTS_MALFORMED", f"{path.name} has no {what} for {ds}.", path=str(path))
    return ds


def install(sources: list[str], models_dir: Path, release: str | None = None,
            sha256: list[str] | None = None) -> Path:
    """Install both models from ``sources`` (zip paths or URLs); return the release folder."""
    models_dir = Path(models_dir)
    results = models_dir / "nnUNet" / "results"
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".install-", dir=results) as tmp:
        tmp = Path(tmp)
        zips = [fetch(s, tmp) for s in sources]
        found = {}
        for i, z in enumerate(zips):
            ds = check_zip(z, sha256[i] if sha256 and i < len(sha256) else None)
            if ds in found:
                raise ModelError("WEIGHTS_MALFORMED", f"two zips hold {ds}; give one zip per step.", path=str(z))
            found[ds] = z
        missing = [d for d in DATASETS if d not in found]
        if missing:
            raise ModelError("WEIGHTS_MALFORMED", f"no zip holds {missing[0]}; both steps are needed.")
        release = release or release_of(found[STEP1_DATASET].name) or "custom"
        staging = tmp / "staging"
        for z in found.values():
            with zipfile.ZipFile(z) as zf:
                zf.extractall(staging)
        for ds in DATASETS:      # load each model exactly as the app will
            LoadedModel(find_model_folder(staging, ds))
        target = results / release
        target.mkdir(exist_ok=True)
        moved, backups = [], []
        try:
            for ds in DATASETS:
                dst = target / ds
                if dst.exists():
                    backup = tmp / f"previous-{ds}"
                    dst.rename(backup)
                    backups.append((backup, dst))
                (staging / ds).rename(dst)
                moved.append(dst)
        except OSError:
            for dst in moved:
                shutil.rmtree(dst, ignore_errors=True)
            for backup, dst in backups:
                backup.rename(dst)
            raise
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zips", nargs="*", help="release zips or URLs (default: the official release URLs)")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--release", help="release folder name (default: from the zip names, e.g. r20260730)")
    ap.add_argument("--sha256", nargs="*", help="expected SHA-256 of each zip, in the same order")
    a = ap.parse_args(argv)
    sources = a.zips or list(official_urls().values())
    try:
        target = install(sources, a.models, a.release, a.sha256)
    except ModelError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 4
    except OSError as exc:
        print(f"error: WEIGHTS_DOWNLOAD: {exc}; check the network or pass zips you already have", file=sys.stderr)
        return 4
    print(f"installed {', '.join(DATASETS)} into {target}")
    print(f"run the app with -m {a.models} (SPINESEG_MODEL_RELEASE={target.name} to pin this release)")
    print("for the OpenVINO CPU backends, export the networks once now (else the first run does, into its cache):\n"
          f"  python -m spineseg.inference.precompile {a.models} --release {target.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
