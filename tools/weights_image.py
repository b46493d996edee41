"""Bake a TotalSpineSeg release's weights into the CPU (or GPU) MAP image, offline: ``make image WEIGHTS=DIR``.

    .venv/bin/python -m tools.weights_image DIR [--gpu | --from IMAGE] [--tag TAG]      # from the repository root

DIR holds the two release zips as TotalSpineSeg publishes them (``Dataset101_TotalSpineSeg_step1_<release>.zip``
and ``Dataset102_TotalSpineSeg_step2_<release>.zip``) and ``SHA256SUMS``: the SHA-256 your site vetted for
each, one line per zip as ``sha256sum *.zip > SHA256SUMS`` writes them. Then:

1. SHA256SUMS must name exactly the zips in DIR, and each zip's SHA-256 must match it. Nothing is unpacked,
   written or built before this passes.
2. The zips are installed with tools/install_weights.py's own code (CRC of every member, the release layout,
   both models loaded as the app loads them) into a staging folder that becomes
   ``build/image/weights/<key>/models`` only once complete (``<key>``: the zips' hashes). A later build from the
   same zips reuses that folder only if it holds exactly the zips' files, each of their size and CRC-32, under
   one release folder; otherwise it installs again.
3. ``docker build --network none`` of ``deploy/map/Dockerfile.weights`` FROM the CPU MAP image (``make image``):
   the bundled phantom models removed, the release in ``/opt/holoscan/models``, its OpenVINO IR precompiled;
   labels name the release and the zips' hashes. The tag is the CPU MAP's with ``-<release>`` appended.

A failure stops with a message naming the file and what to do, exit status 4, and leaves no staging folder and
no image. Writes the size and the time of each step to ``build/image/weights-record.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

from spineseg.errors import ModelError
from spineseg.inference.checksums import sha256_of
from tools import install_weights
from tools.build_image import GPU_TAG as GPU_IMAGE, TAG as CPU_IMAGE

ROOT = Path(__file__).resolve().parent.parent
SUMS = "SHA256SUMS"
DOCKERFILE = ROOT / "deploy" / "map" / "Dockerfile.weights"
STORE = ROOT / "build" / "image" / "weights"
_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *]([^/\\]+)$")     # sha256sum's text and binary modes


def read_sums(folder: Path) -> dict[str, str]:
    """{zip name: expected SHA-256} from ``folder/SHA256SUMS``, which must list exactly the zips in ``folder``."""
    sums_file = folder / SUMS
    if not sums_file.is_file():
        raise ModelError("WEIGHTS_UNVERIFIED", f"{folder} has no {SUMS}: write the SHA-256 your site vetted for each "
                         f"zip there (`cd {folder} && sha256sum *.zip > {SUMS}`).", path=str(sums_file))
    expected: dict[str, str] = {}
    for number, line in enumerate(sums_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = _SUM_LINE.match(line.strip())
        if not match:
            raise ModelError("WEIGHTS_UNVERIFIED", f"{sums_file} line {number} is not '<64 hex digits>  <file name>' "
                             "as sha256sum writes it.", path=str(sums_file))
        expected[match.group(2)] = match.group(1).lower()
    zips = {p.name for p in folder.glob("*.zip")}
    if set(expected) != zips:
        raise ModelError("WEIGHTS_UNVERIFIED", f"{sums_file} lists {sorted(expected)} but {folder} holds the zips "
                         f"{sorted(zips)}: list each zip once, and only those.", path=str(sums_file))
    return expected


def verify(folder: Path) -> list[tuple[Path, str]]:
    """The zips in ``folder`` with their SHA-256, each checked against SHA256SUMS (``WEIGHTS_CORRUPT`` if not)."""
    verified = []
    for name, expected in sorted(read_sums(folder).items()):
        path = folder / name
        if sha256_of(path) != expected:
            raise ModelError("WEIGHTS_CORRUPT", f"{path}: its SHA-256 is not the one {SUMS} gives; the file was "
                             "changed or damaged after it was vetted. Fetch it again and compare it with the "
                             "release's published hash.", path=str(path))
        verified.append((path, expected))
    return verified


def zip_files(verified: list[tuple[Path, str]]) -> dict[str, tuple[int, int]]:
    """{member path: (size, CRC-32)} of every file the zips hold, as their central directories give them."""
    files = {}
    for path, _ in verified:
        with zipfile.ZipFile(path) as zf:
            files.update({i.filename: (i.file_size, i.CRC) for i in zf.infolist() if not i.is_dir()})
    return files


def crc32_of(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def holds(models: Path, files: dict[str, tuple[int, int]]) -> bool:
    """Whether ``models`` is the zips' install: one release folder that holds exactly ``files`` (:func:`zip_files`),
    each of its size and CRC-32, and no other file anywhere under ``models``."""
    try:
        release = models / "nnUNet" / "results" / release_of(models)
        found = {p.relative_to(models): p for p in models.rglob("*") if p.is_file()}
    except (ModelError, OSError):
        return False
    expected = {release.relative_to(models) / name: size_crc for name, size_crc in files.items()}
    return set(found) == set(expected) and all(
        p.stat().st_size == expected[rel][0] and crc32_of(p) == expected[rel][1] for rel, p in found.items())


def install_once(verified: list[tuple[Path, str]]) -> Path:
    """``build/image/weights/<key>/models`` holding the release, installed by install_weights.install; an earlier
    build's folder for the same zips is reused only when it still holds exactly what they hold (:func:`holds`),
    else it is installed again."""
    key = hashlib.sha256("".join(sorted(h for _, h in verified)).encode()).hexdigest()[:16]
    done = STORE / key / "models"
    if done.is_dir() and holds(done, zip_files(verified)):
        return done
    STORE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=STORE))
    try:
        install_weights.install([str(p) for p, _ in verified], staging / "models", sha256=[h for _, h in verified])
        shutil.rmtree(STORE / key, ignore_errors=True)
        os.rename(staging, STORE / key)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return done


def release_of(models: Path) -> str:
    releases = [p.name for p in (models / "nnUNet" / "results").iterdir() if not p.name.startswith(".")]
    if len(releases) != 1:
        raise ModelError("WEIGHTS_MALFORMED", f"{models} holds the releases {releases}; expected exactly one.")
    return releases[0]


def docker(*args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, timeout=timeout, text=True, **kw)


def build(weights: Path, base: str = CPU_IMAGE, tag: str | None = None) -> dict:
    """Verify, install, then ``docker build`` the image; returns the build record."""
    t0 = time.monotonic()
    if docker("image", "inspect", base, capture_output=True, check=False).returncode != 0:
        raise ModelError("WEIGHTS_NO_BASE_IMAGE", f"the CPU MAP image {base} is not built: run `make image` first "
                         "(`make image WEIGHTS=DIR` does both).")
    verified = verify(weights)
    seconds = {"verify": round(time.monotonic() - t0, 1)}
    t = time.monotonic()
    models = install_once(verified)
    seconds["install"] = round(time.monotonic() - t, 1)
    release = release_of(models)
    tag = tag or f"{base}-{release}"
    shutil.copyfile(DOCKERFILE, models.parent / "Dockerfile")
    hashes = ",".join(f"{p.name}={h}" for p, h in verified)
    t = time.monotonic()
    docker("build", "--network", "none", "--build-arg", f"MAP_IMAGE={base}", "--build-arg", f"RELEASE={release}",
           "--build-arg", f"ZIPS_SHA256={hashes}", "-t", tag, "-f", str(models.parent / "Dockerfile"),
           str(models.parent), timeout=3600, env=dict(os.environ, DOCKER_BUILDKIT="0"))
    seconds["docker_build"] = round(time.monotonic() - t, 1)
    seconds["total"] = round(time.monotonic() - t0, 1)
    size = int(docker("image", "inspect", "-f", "{{.Size}}", tag, capture_output=True).stdout)
    record = {"tag": tag, "from": base, "release": release, "context": str(models.parent),
              "zips": {p.name: h for p, h in verified},
              "seconds": seconds, "size_bytes": size}
    (ROOT / "build" / "image" / "weights-record.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{tag}: {size / 1e9:.2f} GB, release {release}; " + ", ".join(f"{k} {v} s" for k, v in seconds.items()))
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path, metavar="DIR", help=f"the release zips and their {SUMS}")
    start = ap.add_mutually_exclusive_group()
    start.add_argument("--from", dest="base", default=CPU_IMAGE, help=f"the MAP image to start from (default {CPU_IMAGE})")
    start.add_argument("--gpu", dest="base", action="store_const", const=GPU_IMAGE,
                       help=f"start from the GPU MAP, {GPU_IMAGE} (make image GPU=1)")
    ap.add_argument("--tag", help="the new image's tag (default: the CPU MAP's tag with -<release> appended)")
    a = ap.parse_args(argv)
    if not a.weights.is_dir():
        print(f"error: WEIGHTS_NOT_FOUND: {a.weights} is not a folder; give the folder that holds the release zips "
              f"and {SUMS}", file=sys.stderr)
        return 4
    try:
        build(a.weights, a.base, a.tag)
    except ModelError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 4
    except subprocess.CalledProcessError as exc:
        print(f"error: WEIGHTS_IMAGE_BUILD: `{' '.join(exc.cmd[:2])}` failed (exit {exc.returncode}); its output is "
              "above", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
