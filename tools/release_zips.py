"""Zip nnU-Net model folders the way TotalSpineSeg publishes a release, with the SHA-256 list a site keeps.

    python tools/release_zips.py OUT --release r20251124 STEP1_FOLDER STEP2_FOLDER

A release zip ``<dataset>_<release>.zip`` holds ``<dataset>/<trainer>__<plans>__<configuration>/`` with
``plans.json``, ``dataset.json`` and ``fold_0/checkpoint_*.pth``, as the zips of TotalSpineSeg's GitHub releases
do (``tools/install_weights.py`` reads that shape). ``SHA256SUMS`` beside them is what ``sha256sum *.zip`` writes,
the form ``make image WEIGHTS=DIR`` expects. The tests and ``bench/official_image.py`` make such zips from
phantom-trained or randomly initialised networks; a site can zip weights it trained itself the same way.
"""
from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

from spineseg.inference.checksums import sha256_of

DATASET = re.compile(r"Dataset\d{3}_\w+")


def write_release_zip(folder: Path, out_dir: Path, release: str) -> Path:
    """``folder`` (``.../<dataset>/<trainer>__<plans>__<configuration>``) as ``out_dir/<dataset>_<release>.zip``.

    Members are stored uncompressed: network weights hardly compress, and stored members unpack at disk speed.
    """
    dataset = folder.parent.name
    if not DATASET.fullmatch(dataset) or folder.name.count("__") != 2:
        raise ValueError(f"{folder} is not <DatasetNNN_name>/<trainer>__<plans>__<configuration>")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{dataset}_{release}.zip"
    members = [folder / "plans.json", folder / "dataset.json", *sorted((folder / "fold_0").glob("checkpoint_*.pth"))]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for member in members:
            zf.write(member, f"{dataset}/{member.relative_to(folder.parent)}")
    return path


def write_sums(out_dir: Path) -> Path:
    """``out_dir/SHA256SUMS`` for every zip there, in ``sha256sum``'s text format."""
    sums = out_dir / "SHA256SUMS"
    sums.write_text("".join(f"{sha256_of(z)}  {z.name}\n" for z in sorted(out_dir.glob("*.zip"))))
    return sums


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--release", required=True, help="e.g. r20251124 (r and the date, as TotalSpineSeg names them)")
    ap.add_argument("folders", type=Path, nargs="+", help="model folders <dataset>/<trainer>__<plans>__<config>")
    a = ap.parse_args(argv)
    for folder in a.folders:
        print(write_release_zip(folder, a.out, a.release))
    print(write_sums(a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
