"""Build the MONAI Application Package (MAP) of spine-seg with `monai-deploy package` (holoscan-cli 4.2.0).

    .venv-package/bin/python -m tools.package_map [--out build/map] [--variant gpu|cpu|both] [--build]

Runs in its own virtual environment (``make package`` creates it): holoscan-cli 4.2.0, the last release
with the ``monai-deploy`` command, pins ``packaging<26`` while totalspineseg's nilearn needs ``>=26``.

1. Stages the project the way the packager expects: ``app/`` (with a ``requirements.txt`` holding the
   runtime pins, constraints included, test tools left out), ``lib/`` (our ``spineseg`` and ``operators``
   packages and ``app.yaml``; the packager puts it on PYTHONPATH) and ``models/``.
2. Runs holoscan-cli's own packager with ``deploy/map/artifacts.json`` as the offline artifact source.
   Without a Docker engine (our machines) the packager's temporary build context is kept in
   ``OUT/<variant>`` and the ``docker buildx build`` call is recorded in ``OUT/<variant>/buildx-args.json``
   instead of run. With ``--build`` on a machine with Docker, the unmodified packager builds the image.

Variants: ``gpu`` (CUDA runtime base image, CUDA torch; built by the unmodified packager, which needs
buildx and the internet) and ``cpu``, whose context gets ``deploy/map/Dockerfile.cpu`` in place of the
packager's Dockerfile (kept as ``Dockerfile.holoscan-cli``): a Debian bookworm base made by
``tools/base_image.sh`` and the pinned wheels (CPU torch included) from ``wheelhouse/`` in the context, so it
builds with ``docker build --network none``. ``tools/build_image.py`` (``make image``, or ``--build`` here)
fills the wheelhouse and builds it. The CPU context installs this project as pip installs it anywhere: its
``lib/`` is replaced by ``dist/``, the project's wheel (``project_wheel``), which the Dockerfile installs into
the image's venv; nothing is put on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "deploy" / "map" / "artifacts.json"
SDK_VERSION = "4.0.0"
VERSION = "0.1.0"
TEST_ONLY_MARK = "# --- test and benchmark tools"
CPU_BASE_IMAGE = "spine-seg-base:bookworm"          # tools/base_image.sh; build_image.py tags it with a key
CPU_DOCKERFILE = ROOT / "deploy" / "map" / "Dockerfile.cpu"
CPU_ENTRYPOINT = ROOT / "deploy" / "map" / "entrypoint.sh"
IMAGE_NAMES = {"gpu": "spine-seg", "cpu": "spine-seg-cpu"}   # the packager appends -x64-workstation-dgpu-linux-amd64
# what `pip wheel` needs of the checkout (pyproject.toml's packages and the files its metadata reads)
PROJECT_FILES = ("pyproject.toml", "README.md", "requirements.txt", "requirements-test.txt")
PROJECT_PACKAGES = ("spineseg", "operators", "app")
# builds the wheel: setuptools >= 70.1 builds wheels by itself; this tool's own venv (.venv-package) has 65.5
# without the `wheel` package, while make venv's .venv has a current one
WHEEL_BUILDER = ROOT / ".venv" / "bin" / "python"


def runtime_requirements() -> str:
    """requirements.txt for the image: runtime pins plus the constraints' pins, no test tools. The pins
    are the same in both variants: the GPU image gets the CUDA build of torch 2.13.0 from PyPI, the CPU
    image the CPU build that the wheelhouse holds (tools/build_image.py)."""
    lines = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith(TEST_ONLY_MARK):
            break
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    names = {ln.split("==")[0].lower() for ln in lines}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        pin = line.strip()
        if pin and not pin.startswith("#") and pin.split("==")[0].lower() not in names:
            lines.append(pin)
    return "\n".join(lines) + "\n"


def stage(dest: Path) -> Path:
    """Lay the project out for the packager under ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "app", dest / "app", ignore=ignore)
    (dest / "app" / "requirements.txt").write_text(runtime_requirements())
    for package in ("spineseg", "operators"):
        shutil.copytree(ROOT / package, dest / "lib" / package, ignore=ignore)
    shutil.copy(ROOT / "app.yaml", dest / "lib" / "app.yaml")
    # only the model folders: a file at the top of models/ makes the packager add the folder twice
    for sub in (ROOT / "models").iterdir():
        if sub.is_dir():
            shutil.copytree(sub, dest / "models" / sub.name, ignore=ignore)
    shutil.copy(ROOT / "models" / "PROVENANCE.json", dest / "models" / "nnUNet" / "PROVENANCE.json")
    return dest


def packager_args(staged: Path, variant: str, output: Path) -> list[str]:
    args = ["package", str(staged / "app"), "-c", str(ROOT / "app.yaml"), "-m", str(staged / "models"),
            "--add", str(staged / "lib"), "-t", f"{IMAGE_NAMES[variant]}:{VERSION}", "--platform", "x86_64",
            "--source", str(ARTIFACTS), "--sdk", "monai-deploy", "--sdk-version", SDK_VERSION,
            "--output", str(output), "-l", "INFO"]
    if variant == "cpu":
        args += ["--base-image", CPU_BASE_IMAGE]
    return args


def generate_context(args: list[str], context_dir: Path) -> Path:
    """Run holoscan-cli's packager, keeping its build context and recording (not running) docker."""
    from holoscan_cli import __main__ as cli
    from holoscan_cli.packager import container_builder, packager, platforms

    if context_dir.exists():
        shutil.rmtree(context_dir)
    context_dir.mkdir(parents=True)

    class KeptDirectory(contextlib.AbstractContextManager):
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return str(context_dir)

        def __exit__(self, *exc):
            return False

    def record_build(**kwargs):
        (context_dir / "buildx-args.json").write_text(json.dumps(kwargs, indent=2, default=str) + "\n")

    patches = [(packager.tempfile, "TemporaryDirectory", KeptDirectory),
               (container_builder, "create_and_get_builder", lambda name: name),
               (container_builder, "build_docker_image", record_build),
               (container_builder, "docker_export_tarball", lambda file, tag: None),
               (platforms, "image_exists", lambda name: name is not None)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    argv = sys.argv
    try:
        sys.argv = ["monai-deploy", *args]
        cli.main()
    finally:
        sys.argv = argv
        for obj, name, value in saved:
            setattr(obj, name, value)
    return context_dir


def make_cpu_context(context: Path) -> Path:
    """Turn the packager's CPU context into one that builds offline on a Debian base (see module doc)."""
    sdk = context / "Dockerfile"
    sdk_lines = [ln for ln in sdk.read_text().splitlines()
                 if (ln.startswith("LABEL ") and not ln.startswith("LABEL base=")) or ln.startswith("ENV HOLOSCAN_")]
    template = CPU_DOCKERFILE.read_text()
    assert template.count("\n@SDK@\n") == 1, "deploy/map/Dockerfile.cpu lost its @SDK@ line"
    sdk.rename(context / "Dockerfile.holoscan-cli")
    (context / "Dockerfile").write_text(template.replace("\n@SDK@\n", "\n" + "\n".join(sdk_lines) + "\n"))
    shutil.copy(CPU_ENTRYPOINT, context / "entrypoint.sh")
    # the project as a wheel that the Dockerfile pip-installs, in place of the packager's PYTHONPATH folder
    shutil.rmtree(context / "lib")
    project_wheel(context / "dist")
    wheelhouse = context / "wheelhouse"
    wheelhouse.mkdir(exist_ok=True)
    (wheelhouse / "README.txt").write_text("The pinned wheels go here: tools/build_image.py (make image) fills this "
                                           "folder and writes requirements.lock.\n")
    return context


def project_wheel(dest: Path) -> Path:
    """Build spine-seg's wheel (``pip wheel --no-deps``) into ``dest`` from a copy of the checkout's project files,
    so that setuptools writes its build/ and egg-info into the copy, not into the checkout. Its files are dated
    at the last commit (SOURCE_DATE_EPOCH), so the same tree gives the same wheel, byte for byte, and Docker's
    layer cache holds across rebuilds."""
    builder = WHEEL_BUILDER if WHEEL_BUILDER.is_file() else Path(sys.executable)
    commit_time = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
    env = dict(os.environ, SOURCE_DATE_EPOCH=commit_time or "315532800", PIP_DISABLE_PIP_VERSION_CHECK="1")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spineseg-wheel-") as tmp:
        src = Path(tmp) / "spine-seg"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for package in PROJECT_PACKAGES:
            shutil.copytree(ROOT / package, src / package, ignore=ignore)
        for name in PROJECT_FILES:
            shutil.copy2(ROOT / name, src / name)
        subprocess.run([str(builder), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(dest), str(src)], check=True, env=env, timeout=600)
    wheels = sorted(dest.glob("spine_seg-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"error: expected one spine-seg wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def docker_engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "map")
    ap.add_argument("--variant", choices=["gpu", "cpu", "both"], default="both")
    ap.add_argument("--build", action="store_true", help="build the image(s) with Docker (needs a Docker engine)")
    a = ap.parse_args(argv)
    if a.build and not docker_engine_available():
        print("error: --build needs a Docker engine (docker info failed); without it, run without --build to "
              "produce the build context", file=sys.stderr)
        return 4
    variants = ["gpu", "cpu"] if a.variant == "both" else [a.variant]
    a.out.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        with tempfile.TemporaryDirectory(prefix="spineseg-stage-") as tmp:
            staged = stage(Path(tmp) / "stage")
            output = Path(tmp) / "output"
            output.mkdir()
            args = packager_args(staged, variant, output)
            if a.build and variant == "gpu":
                subprocess.run([str(Path(sys.executable).parent / "monai-deploy"), *args], check=True)
                print(f"{variant}: image built (see `docker images`)")
                continue
            context = generate_context(args, a.out / variant)
            if variant == "cpu":
                make_cpu_context(context)
            print(f"{variant}: MAP build context in {context}")
            if a.build:
                from tools import build_image
                build_image.build(context)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
