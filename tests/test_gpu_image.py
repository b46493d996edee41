"""The GPU MAP (`make image GPU=1`, deploy/map/Dockerfile.gpu) on this host, which has no GPU (issue 27, items 1 and
2): the CPU image with the CUDA build of torch, so it must run a study on the CPU, say so in one log line, use its
own precompiled IR, keep every other package at the CPU image's version, ask MONAI Deploy for a GPU in its manifest,
and give the app's exit status on its entry paths (the image's own entry point, and the Argo GPU template's
command, whose SPINESEG_DEVICE=cuda makes a good study fail here with DEVICE_UNAVAILABLE, as it should on a node
without a GPU). With a GPU: `docker run --gpus all` (nvidia-container-toolkit), docs/map-image.md."""
from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from conftest import ROOT
from container_helpers import (IMAGE, demo_study, docker, image, output_folder, readable_by_all,  # noqa: F401
                               run_map, unavailable)

GPU_IMAGE = os.environ.get("SPINESEG_GPU_IMAGE", "spine-seg-x64-workstation-dgpu-linux-amd64:0.1.0")
# what the GPU image swaps or adds: torch's CUDA build and the wheels it pulls
CUDA_PACKAGES = ("torch", "torchvision", "triton", "nvidia-", "cuda-toolkit")


@pytest.fixture(scope="module")
def gpu_image(image) -> dict:
    inspect = docker("image", "inspect", GPU_IMAGE)
    if inspect.returncode != 0:
        unavailable(f"image {GPU_IMAGE} not built: make image GPU=1")
    return json.loads(inspect.stdout)[0]


def in_image(tag: str, *command: str) -> str:
    proc = docker("run", "--rm", "--network", "none", "--entrypoint", command[0], tag, *command[1:])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def installed(tag: str) -> dict[str, str]:
    """{normalised name: version} of what the image's venv holds, as pip lists it."""
    lines = in_image(tag, "python3", "-m", "pip", "freeze", "--all", "--disable-pip-version-check").split()
    return {re.sub(r"[-_.]+", "-", ln.split("==")[0]).lower(): ln.split("==")[1] for ln in lines if "==" in ln}


def test_cuda_torch_and_otherwise_the_cpu_image(gpu_image, image):
    assert gpu_image["Config"]["User"] == image["Config"]["User"] == "holoscan"
    assert gpu_image["Config"]["Entrypoint"] == image["Config"]["Entrypoint"]
    env = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in gpu_image["Config"]["Env"]}
    assert env["HOME"] == "/tmp" and env["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models"
    version = in_image(GPU_IMAGE, "python3", "-c", "import torch; print(torch.__version__, torch.version.cuda)")
    torch_version, cuda = version.split()
    assert cuda != "None" and "+cpu" not in torch_version
    gpu, cpu = installed(GPU_IMAGE), installed(IMAGE)
    assert any(name.startswith("nvidia-cudnn") for name in gpu)
    assert gpu["torch"].split("+")[0] == cpu["torch"].split("+")[0]
    others = {n: v for n, v in cpu.items() if not n.startswith(CUDA_PACKAGES)}
    assert {n: gpu.get(n) for n in others} == others
    pkg = json.loads(in_image(GPU_IMAGE, "cat", "/etc/holoscan/pkg.json"))
    assert pkg["resources"]["gpu"] == 1 and pkg["resources"]["memory"] == "8Gi"


def test_a_study_runs_on_the_cpu_where_no_gpu_is_visible(gpu_image, demo_study, tmp_path):
    out = output_folder(tmp_path)
    proc = run_map(demo_study, out, image=GPU_IMAGE)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "succeeded" and report["models"]["device"] == "cpu"
    assert report["models"]["step1"]["openvino_ir"] == report["models"]["step2"]["openvino_ir"] == "precompiled"
    assert log.count("no GPU visible to this CUDA build of torch: the networks run on the CPU") == 1
    assert len(list(out.glob("*_seg.dcm"))) == 1


def argo_gpu_container() -> tuple[dict, dict]:
    template = yaml.safe_load((ROOT / "deploy" / "argo" / "spine-seg-gpu.yaml").read_text())
    step = next(t for t in template["spec"]["templates"] if "container" in t)
    return step, step["container"]


def test_the_argo_gpu_template_names_this_image():
    assert argo_gpu_container()[1]["image"] == GPU_IMAGE


# (entry path, outcome); the image's own entry point's good run is test_a_study_runs_on_the_cpu_where_no_gpu_is_visible
CASES = [("docker-run", "failing"), ("docker-run", "interrupted"),
         ("argo-gpu", "failing"), ("argo-gpu", "interrupted"), ("argo-gpu", "good")]
# (exit status, error code); the Argo GPU template asks for CUDA, which this host cannot give a good study
EXPECTED = {"failing": (3, "NO_DICOM"), "interrupted": (4, "INTERRUPTED"), "good": (4, "DEVICE_UNAVAILABLE")}


@pytest.mark.parametrize("path,outcome", CASES)
def test_the_exit_status_is_the_apps(gpu_image, demo_study, tmp_path, path, outcome):
    status, code = EXPECTED[outcome]
    study = demo_study
    if outcome == "failing":
        study = tmp_path / "not-a-study"
        study.mkdir()
        (study / "readme.txt").write_text("an export that went wrong: no DICOM here\n")
        readable_by_all(study)
    env = {"SPINESEG_TEST_SIGNAL_AT": "load_models:SIGTERM"} if outcome == "interrupted" else {}
    out = output_folder(tmp_path)
    if path == "docker-run":
        proc = run_map(study, out, env=env, image=GPU_IMAGE)
    else:
        step, container = argo_gpu_container()
        proc = run_map(study, out, command=container["command"], image=GPU_IMAGE,
                       env={**{e["name"]: e["value"] for e in container["env"]}, **env},
                       input_path=step["inputs"]["artifacts"][0]["path"],
                       output_path=step["outputs"]["artifacts"][0]["path"])
    report = json.loads((out / "report.json").read_text())
    assert (proc.returncode, report["exit_code"], report["error"]["code"]) == (status, status, code), \
        (proc.stdout + proc.stderr)[-3000:]
