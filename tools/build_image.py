"""Build the CPU MAP image with a real engine, offline: ``make image``.

    .venv-package/bin/python -m tools.build_image [--tag TAG] [--out build/map]     # from the repository root

1. Base image: ``tools/base_image.sh`` (Debian bookworm by mmdebstrap, ``docker import``), tagged
   ``spine-seg-base:bookworm-<key of the script>``; the root file system tarball is kept in ``build/image/``.
2. Wheelhouse: the image's runtime requirements (``package_map.runtime_requirements``: pins and constraints,
   no test tools) filled with ``pip wheel`` on this host into ``build/wheelhouse/<key>/``. Versions of the
   packages that requirements.txt does not pin are those of the tested ``.venv`` (``pip freeze``), so the
   image runs what ``make test`` ran; ``requirements.lock`` lists every wheel. A warm rebuild reuses it.
3. Build context: ``tools/package_map.py``'s CPU variant (holoscan-cli's packager, ``deploy/map/Dockerfile.cpu``),
   the wheels hard-linked into it.
4. ``docker build --network none``: nothing is fetched while the image builds.

Needs a Docker engine (``docker info``; on a machine without one, ``tools/container_engine.sh start DIR``
starts a private one) and, for step 1, root and ``mmdebstrap``. Prints the image size and the time of each step
and writes them to ``build/image/build-record.json``.
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
from pathlib import Path

from tools import package_map

ROOT = package_map.ROOT
BUILD = ROOT / "build"
BASE_SCRIPT = ROOT / "tools" / "base_image.sh"
TAG = f"{package_map.IMAGE_NAMES['cpu']}-x64-workstation-dgpu-linux-amd64:{package_map.VERSION}"
GPU_TAG = f"{package_map.IMAGE_NAMES['gpu']}-x64-workstation-dgpu-linux-amd64:{package_map.VERSION}"
GPU_DOCKERFILE = ROOT / "deploy" / "map" / "Dockerfile.gpu"
# what the GPU variant swaps: the CUDA builds of these, at the CPU image's versions, with what they pull
CUDA_PACKAGES = ("torch", "torchvision")
WHEEL_PYTHON = os.environ.get("SPINESEG_WHEEL_PYTHON", "python3")   # a Python 3.11, like the image's
TESTED_VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def _key(*texts: str | bytes) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode() if isinstance(t, str) else t)
    return h.hexdigest()[:12]


def docker(*args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, timeout=timeout, text=True, **kw)


def engine_available() -> bool:
    try:
        return docker("info", capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def base_image() -> str:
    """The Debian base, made once per version of tools/base_image.sh."""
    key = _key(BASE_SCRIPT.read_bytes())
    tag = f"{package_map.CPU_BASE_IMAGE}-{key}"
    if docker("image", "inspect", tag, capture_output=True, check=False).returncode == 0:
        return tag
    tar = BUILD / "image" / f"base-{key}.tar"
    subprocess.run(["bash", str(BASE_SCRIPT), tag, str(tar)], check=True, timeout=1200)
    return tag


def wheel_constraints() -> str:
    """constraints.txt, then the tested environment's versions of everything else."""
    text = (ROOT / "constraints.txt").read_text()
    if TESTED_VENV_PYTHON.exists():
        frozen = subprocess.run([str(TESTED_VENV_PYTHON), "-m", "pip", "freeze", "--disable-pip-version-check"],
                                capture_output=True, text=True, check=True, timeout=120).stdout
        pinned = {ln.split("==")[0].lower() for ln in text.splitlines() if "==" in ln and not ln.startswith("#")}
        text += "# versions in the tested .venv\n" + "".join(
            ln + "\n" for ln in frozen.splitlines()
            # pip freeze's comments (an editable install's '# Editable install with no version control ...')
            if "==" in ln and not ln.startswith("#") and ln.split("==")[0].lower() not in pinned)
    return text


def wheel_name_version(filename: str) -> str:
    name, version = filename.split("-")[:2]
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def wheelhouse() -> Path:
    """build/wheelhouse/<key>/: every wheel the image installs, and requirements.lock."""
    requirements, constraints = package_map.runtime_requirements(), wheel_constraints()
    version = subprocess.run([WHEEL_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, check=True, timeout=60).stdout.strip()
    if version != "(3, 11)":
        raise SystemExit(f"error: {WHEEL_PYTHON} is Python {version}; the image's Python is 3.11 "
                         "(set SPINESEG_WHEEL_PYTHON)")
    house = BUILD / "wheelhouse" / _key(requirements, constraints, version)
    if (house / "requirements.lock").is_file():
        return house
    partial = house.with_name(house.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "requirements.txt").write_text(requirements)
    (partial / "constraints.txt").write_text(constraints)
    subprocess.run([WHEEL_PYTHON, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(partial),
                    "-r", str(partial / "requirements.txt"), "-c", str(partial / "constraints.txt")],
                   check=True, timeout=3600)
    lock = sorted(wheel_name_version(p.name) for p in partial.glob("*.whl"))
    if "torch==" in "".join(lock) and not [ln for ln in lock if ln.startswith("torch==") and ln.endswith("+cpu")]:
        raise SystemExit("error: the wheelhouse got a CUDA build of torch (several GB more in the image). Give pip "
                         "the CPU build, e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, and rerun")
    (partial / "requirements.lock").write_text("\n".join(lock) + "\n")
    shutil.rmtree(house, ignore_errors=True)
    partial.rename(house)
    return house


def link_wheels(house: Path, context: Path) -> None:
    dest = context / "wheelhouse"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    for f in [*house.glob("*.whl"), house / "requirements.lock"]:
        try:
            os.link(f, dest / f.name)
        except OSError:
            shutil.copy2(f, dest / f.name)


def generate_context(out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="spineseg-stage-") as tmp:
        staged = package_map.stage(Path(tmp) / "stage")
        (Path(tmp) / "output").mkdir()
        args = package_map.packager_args(staged, "cpu", Path(tmp) / "output")
        context = package_map.generate_context(args, out / "cpu")
    return package_map.make_cpu_context(context)


def build(context: Path, tag: str = TAG) -> dict:
    """Base, wheelhouse, then `docker build --network none` of an existing CPU context."""
    record: dict = {"tag": tag, "seconds": {}}
    t0 = time.monotonic()
    base = base_image()
    record["seconds"]["base_image"] = round(time.monotonic() - t0, 1)
    t = time.monotonic()
    house = wheelhouse()
    link_wheels(house, context)
    record["seconds"]["wheelhouse"] = round(time.monotonic() - t, 1)
    record.update(base_image=base, wheelhouse=str(house.relative_to(ROOT)))
    t = time.monotonic()
    labels = []
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    if rev.returncode == 0:
        labels = ["--label", f"org.opencontainers.image.revision={rev.stdout.strip()}"]
    # the classic builder: the Debian engine has no buildx, and this Dockerfile needs nothing newer
    docker("build", "--network", "none", "--build-arg", f"BASE_IMAGE={base}", *labels, "-t", tag,
           "-f", str(context / "Dockerfile"), str(context), timeout=3600, env=dict(os.environ, DOCKER_BUILDKIT="0"))
    record["seconds"]["docker_build"] = round(time.monotonic() - t, 1)
    record["seconds"]["total"] = round(time.monotonic() - t0, 1)
    size = int(docker("image", "inspect", "-f", "{{.Size}}", tag, capture_output=True).stdout)
    record["size_bytes"] = size
    (BUILD / "image").mkdir(parents=True, exist_ok=True)
    (BUILD / "image" / "build-record.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{tag}: {size / 1e9:.2f} GB; " + ", ".join(f"{k} {v} s" for k, v in record["seconds"].items()))
    return record


def gpu_wheelhouse(cpu_house: Path) -> Path:
    """build/wheelhouse/gpu-<key>/: the CUDA builds of torch and torchvision at the CPU image's versions and what
    they pull (nvidia-* runtime wheels, triton), every other package pinned to the CPU image's lock.

    pip runs ``--isolated``: this host's pip configuration points at a local folder of CPU builds of torch, which
    would satisfy the same version pins."""
    lock = (cpu_house / "requirements.lock").read_text().splitlines()
    cuda = [f"{ln.split('==')[0]}=={ln.split('==')[1].split('+')[0]}" for ln in lock
            if ln.split("==")[0] in CUDA_PACKAGES]
    constraints = "".join(ln + "\n" for ln in lock if ln.split("==")[0] not in CUDA_PACKAGES)
    house = BUILD / "wheelhouse" / f"gpu-{_key(' '.join(cuda), constraints)}"
    if (house / "requirements.lock").is_file():
        return house
    partial = house.with_name(house.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "requirements.txt").write_text("".join(c + "\n" for c in cuda))
    (partial / "constraints.txt").write_text(constraints)
    subprocess.run([WHEEL_PYTHON, "-m", "pip", "download", "--isolated", "-q", "--only-binary=:all:", "-d", str(partial),
                    "-r", str(partial / "requirements.txt"), "-c", str(partial / "constraints.txt")],
                   check=True, timeout=3600)
    wheels = sorted(wheel_name_version(p.name) for p in partial.glob("*.whl"))
    if not any(w.startswith("nvidia-cudnn") for w in wheels):
        raise SystemExit(f"error: no CUDA build of torch in {partial} (no nvidia-cudnn wheel came with it)")
    (partial / "requirements.lock").write_text("\n".join(wheels) + "\n")
    shutil.rmtree(house, ignore_errors=True)
    partial.rename(house)
    return house


def build_gpu(cpu_tag: str = TAG, tag: str = GPU_TAG) -> dict:
    """The GPU variant FROM the CPU image (deploy/map/Dockerfile.gpu); needs the CPU image and its wheelhouse."""
    record: dict = {"tag": tag, "from": cpu_tag, "seconds": {}}
    t0 = time.monotonic()
    house = gpu_wheelhouse(wheelhouse())
    record["seconds"]["wheelhouse"] = round(time.monotonic() - t0, 1)
    context = BUILD / "map" / "gpu-offline"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    link_wheels(house, context)
    for name in ("requirements.txt", "constraints.txt"):
        shutil.copy2(house / name, context / "wheelhouse" / name)
    shutil.copy2(GPU_DOCKERFILE, context / "Dockerfile")
    pkg = json.loads(docker("run", "--rm", "--entrypoint", "cat", cpu_tag, "/etc/holoscan/pkg.json",
                            capture_output=True).stdout)
    pkg["resources"]["gpu"] = 1
    (context / "pkg.json").write_text(json.dumps(pkg, indent=2) + "\n")
    t = time.monotonic()
    docker("build", "--network", "none", "--build-arg", f"MAP_IMAGE={cpu_tag}", "-t", tag, str(context),
           timeout=3600, env=dict(os.environ, DOCKER_BUILDKIT="0"))
    record["seconds"]["docker_build"] = round(time.monotonic() - t, 1)
    record["seconds"]["total"] = round(time.monotonic() - t0, 1)
    record["size_bytes"] = int(docker("image", "inspect", "-f", "{{.Size}}", tag, capture_output=True).stdout)
    record["wheelhouse_bytes"] = sum(p.stat().st_size for p in house.glob("*.whl"))
    (BUILD / "image" / "build-record-gpu.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{tag}: {record['size_bytes'] / 1e9:.2f} GB; " + ", ".join(f"{k} {v} s" for k, v in record["seconds"].items()))
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default=TAG)
    ap.add_argument("--out", type=Path, default=BUILD / "map", help="where the build context goes (OUT/cpu)")
    ap.add_argument("--gpu", action="store_true", help="then the GPU variant FROM it (deploy/map/Dockerfile.gpu)")
    a = ap.parse_args(argv)
    if not engine_available():
        print("error: no Docker engine (docker info failed). On a machine without one, as root: apt-get install "
              "docker.io mmdebstrap; eval $(tools/container_engine.sh start /some/dir)", file=sys.stderr)
        return 4
    t = time.monotonic()
    context = generate_context(a.out)
    print(f"cpu: MAP build context in {context} ({time.monotonic() - t:.1f} s)")
    build(context, a.tag)
    if a.gpu:
        build_gpu(a.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
