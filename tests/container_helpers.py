"""What the container tests share: the MAP image's name, the `docker` client, the `image` fixture (skips, or
fails under SPINESEG_REQUIRE_IMAGE=1, without an engine or the image), the demo study as `make demo` makes it,
and `run_map`: the MAP run as a hospital runs it (non-root uid, read-only root, app.yaml's resources; its options
are tools/map_run.py's, which bench/official_image.py runs the image with too).
Import the fixtures by name into a test module to use them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from map_run import APP_YAML, UID, owned_output, run_options  # noqa: F401 (APP_YAML, UID: for the tests)

IMAGE = os.environ.get("SPINESEG_IMAGE", "spine-seg-cpu-x64-workstation-dgpu-linux-amd64:0.1.0")
# the GPU MAP (make image GPU=1): the CPU image with torch's CUDA build (tests/test_gpu_image.py)
GPU_IMAGE = os.environ.get("SPINESEG_GPU_IMAGE", "spine-seg-x64-workstation-dgpu-linux-amd64:0.1.0")


def output_folder(tmp_path):
    return owned_output(tmp_path / "output")


def run_map(study, out, *, network="none", env: dict | None = None, cpus=None, memory=None, command=(),
            input_path="/var/holoscan/input", output_path="/var/holoscan/output", timeout=900, image=IMAGE):
    """`docker run` of the MAP with the resources app.yaml declares (unless given); ``env`` values reach the
    container by name only (never on a command line); ``command``: entry point and arguments instead of the
    image's, as an orchestrator gives them."""
    t = time.monotonic()
    options = run_options(image, study, out, network=network, env_names=list(env or {}), cpus=cpus, memory=memory,
                          entrypoint=command[0] if command else None, input_path=input_path,
                          output_path=output_path)
    proc = docker("run", "--rm", *options, *command[1:], timeout=timeout, env=dict(os.environ, **(env or {})))
    proc.seconds = time.monotonic() - t
    return proc


def docker(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)


def unavailable(reason: str):
    if os.environ.get("SPINESEG_REQUIRE_IMAGE"):
        pytest.fail(reason)
    pytest.skip(reason)


def inspected(tag: str, build: str) -> dict:
    """`docker image inspect` of ``tag``; skips (fails under SPINESEG_REQUIRE_IMAGE) naming ``build`` without it."""
    inspect = docker("image", "inspect", tag)
    if inspect.returncode != 0:
        unavailable(f"image {tag} not built: {build}")
    return json.loads(inspect.stdout)[0]


@pytest.fixture(scope="module")
def image() -> dict:
    if shutil.which("docker") is None:
        unavailable("no docker client on PATH (apt-get install docker.io)")
    try:
        info = docker("info", timeout=30)
    except subprocess.TimeoutExpired:
        info = None
    if info is None or info.returncode != 0:
        unavailable("no Docker engine (docker info failed); tools/container_engine.sh starts one, then make image")
    return inspected(IMAGE, "make image")


@pytest.fixture(scope="module")
def gpu_image(image) -> dict:
    return inspected(GPU_IMAGE, "make image GPU=1")


def readable_by_all(path):
    path.chmod(0o755)
    for p in path.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    """The study `make demo` uses (same generator, same options)."""
    out = tmp_path_factory.mktemp("container_demo") / "study"
    subprocess.run([sys.executable, str(ROOT / "tools" / "phantom.py"), "--seed", "7", "--fov", "lumbar",
                    "--slice-thickness", "3.5", "--pixel", "0.6", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    return readable_by_all(out / "dicom")
