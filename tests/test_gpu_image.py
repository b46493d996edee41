"""The GPU MAP (`make image GPU=1`, deploy/map/Dockerfile.gpu) on this host, which has no GPU (issue 27, items 1 and
2): the CPU image with the CUDA build of torch, so it must run a study on the CPU, say so in one log line, use its
own precompiled IR, keep every other package at the CPU image's version and ask MONAI Deploy for a GPU in its
manifest. Its exit status on every entry path is tests/test_exit_status_paths.py's `gpu` rows. With a GPU:
`docker run --gpus all` (nvidia-container-toolkit), docs/map-image.md."""
from __future__ import annotations

import json
import re

from container_helpers import (GPU_IMAGE, IMAGE, demo_study, docker, gpu_image, image,  # noqa: F401 (fixtures)
                               output_folder, run_map)

# what the GPU image swaps or adds: torch's CUDA build and the wheels it pulls
CUDA_PACKAGES = ("torch", "torchvision", "triton", "nvidia-", "cuda-toolkit")


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
