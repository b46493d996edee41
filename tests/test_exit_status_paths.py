"""The MAP's exit status on every way it is started, for both images (issue 27, item 2): a failing study (the app
exits 3) and an interrupted one (the app exits 4) must give a non-zero status to whatever started the container.
Rows are (image, entry path, outcome); `cpu` is `make image`'s MAP, `gpu` the GPU MAP (`make image GPU=1`, the CPU
image with torch's CUDA build, run here on a host without a GPU).

Entry paths, each run here the way its orchestrator runs it:
- `docker-run`: the image's own entry point (tini, then deploy/map/entrypoint.sh, which execs app.json's command);
  MONAI Deploy Express's Docker plug-in starts the same entry point (tests/test_mde_docker_plugin.py);
- `argo`: the image's Argo template's command (`python3 /opt/holoscan/app`, bypassing the entry point), its
  variables, paths and limits: deploy/argo/spine-seg-cpu.yaml, or spine-seg-gpu.yaml, whose SPINESEG_DEVICE=cuda
  makes a good study fail here with DEVICE_UNAVAILABLE (exit 4), as it should on a node without a GPU;
- `monai-deploy-run`: holoscan-cli 4.2.0's `monai-deploy run` itself, from .venv-package, with only what a host
  without a GPU cannot give replaced (tests/monai_deploy_run_cpu.py says what and where in its source). It does
  not pass the app's status on: any non-zero container exit becomes the CLI's exit 2 (runner.py:331-337); the
  container's own exit status (checked here) and report.json keep the app's;
- `mercure`: the module image deploy/mercure/Dockerfile builds on either MAP (built here, offline, with the classic
  builder), run as mercure's processor runs a module: MERCURE_IN_DIR/MERCURE_OUT_DIR (and the HOLOSCAN_/MONAI_
  path variables) at /tmp/data and /tmp/output, both mounted read-write, the processor's uid, task.json beside the
  study, the module's environment; exit status read with `docker wait`.

Outcomes: `failing`: a folder with no DICOM (NO_DICOM, exit 3); `interrupted`: the demo study with the app's test hook
SPINESEG_TEST_SIGNAL_AT=load_models:SIGTERM (the app signals itself as the models start loading: exit 4, no timing
involved); `good`: the demo study (exit 0), for the CPU image's two paths whose good run tests/test_container_image.py
does not already make (`docker-run`: test_demo_study_offline_read_only_non_root, `argo`:
test_runs_as_the_argo_template_runs_it), and the GPU image's Argo template (exit 4 here, above); the GPU image's
good `docker-run` is tests/test_gpu_image.py's test_a_study_runs_on_the_cpu_where_no_gpu_is_visible.
A real `docker stop` through tini is tests/test_container_image.py's test_docker_stop_ends_the_run_with_a_report.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest
import yaml

from conftest import ROOT
from container_helpers import (GPU_IMAGE, IMAGE, UID, demo_study, docker, gpu_image, image,  # noqa: F401 (fixtures)
                               output_folder, readable_by_all, run_map, unavailable)

PKG_PYTHON = ROOT / ".venv-package" / "bin" / "python"
HOOK = "SPINESEG_TEST_SIGNAL_AT"
TAGS = {"cpu": IMAGE, "gpu": GPU_IMAGE}
ARGO_TEMPLATES = {"cpu": "spine-seg-cpu.yaml", "gpu": "spine-seg-gpu.yaml"}
PATHS = ("docker-run", "argo", "monai-deploy-run", "mercure")
TIMEOUT = 600                  # seconds for one run; a good demo run takes well under a minute here

CASES = ([(variant, path, outcome) for variant in ("cpu", "gpu") for path in PATHS
          for outcome in ("failing", "interrupted")]
         + [("cpu", "monai-deploy-run", "good"), ("cpu", "mercure", "good"), ("gpu", "argo", "good")])


def expected_app_exit(variant: str, path: str, outcome: str) -> tuple[int, str | None]:
    """The app's exit status and error code (report.json)."""
    if outcome == "good":    # the GPU Argo template asks for CUDA, which this host cannot give
        return (4, "DEVICE_UNAVAILABLE") if (variant, path) == ("gpu", "argo") else (0, None)
    return {"failing": (3, "NO_DICOM"), "interrupted": (4, "INTERRUPTED")}[outcome]


def expected_status(path: str, app_exit: int) -> int:
    """What the starter of the container sees: the app's status, except `monai-deploy run`'s 2 for any failure."""
    if path == "monai-deploy-run" and app_exit:
        return 2
    return app_exit


@pytest.fixture(scope="module")
def mercure_images(image):
    """deploy/mercure/Dockerfile on top of a MAP, as its comment says to build it (no network, no BuildKit); built
    once per MAP on first use."""
    built: dict[str, str] = {}

    def build(map_tag: str) -> str:
        if map_tag not in built:
            tag = f"spine-seg-mercure:exit-test-{os.getpid()}-{len(built)}"
            proc = docker("build", "--network", "none", "-q", "--build-arg", f"MAP={map_tag}", "-t", tag,
                          str(ROOT / "deploy" / "mercure"), timeout=300, env=dict(os.environ, DOCKER_BUILDKIT="0"))
            assert proc.returncode == 0, proc.stdout + proc.stderr
            built[map_tag] = tag
        return built[map_tag]

    yield build
    for tag in built.values():
        docker("rmi", tag)


def study_for(outcome, demo_study, tmp_path):
    if outcome == "failing":
        study = tmp_path / "not-a-study"
        study.mkdir()
        (study / "readme.txt").write_text("an export that went wrong: no DICOM here\n")
        return readable_by_all(study)
    return demo_study


def run_docker_run(variant, study, out, env, tmp_path, mercure_images):
    proc = run_map(study, out, env=env, timeout=TIMEOUT, image=TAGS[variant])
    return proc.returncode, proc.stdout + proc.stderr, None


def argo_step(variant: str) -> dict:
    template = yaml.safe_load((ROOT / "deploy" / "argo" / ARGO_TEMPLATES[variant]).read_text())
    return next(t for t in template["spec"]["templates"] if "container" in t)


def test_each_argo_template_names_its_image():
    assert {variant: argo_step(variant)["container"]["image"] for variant in TAGS} == TAGS


def run_argo(variant, study, out, env, tmp_path, mercure_images):
    step = argo_step(variant)
    container = step["container"]
    limits = container["resources"]["limits"]
    proc = run_map(study, out, command=container["command"], image=TAGS[variant],
                   env={**{e["name"]: e["value"] for e in container["env"]}, **env},
                   cpus=min(float(limits["cpu"]), os.cpu_count()), memory=limits["memory"],
                   input_path=step["inputs"]["artifacts"][0]["path"],
                   output_path=step["outputs"]["artifacts"][0]["path"], timeout=TIMEOUT)
    return proc.returncode, proc.stdout + proc.stderr, None


def run_monai_deploy(variant, study, out, env, tmp_path, mercure_images):
    """`monai-deploy run MAP -i STUDY -o OUT --network none --uid UID --gid UID --gpus all --rm`; returns the CLI's
    exit status, its output, and the exit status of the container it started (None when it was removed)."""
    if not PKG_PYTHON.exists():
        unavailable("no .venv-package (holoscan-cli 4.2.0): make package")
    label = f"spineseg.exit-test={uuid.uuid4().hex}"
    extra = [a for name in env for a in ("--env", name)]
    try:
        proc = subprocess.run([str(PKG_PYTHON), str(ROOT / "tests" / "monai_deploy_run_cpu.py"), *extra,
                               "--label", label, "--", TAGS[variant], "-i", str(study), "-o", str(out),
                               "--network", "none", "--uid", str(UID), "--gid", str(UID), "--gpus", "all", "--rm"],
                              capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
                              env=dict(os.environ, **env))
        ids = docker("ps", "-aq", "--filter", f"label={label}").stdout.split()
        states = [json.loads(docker("inspect", "--format", "{{json .State}}", i).stdout) for i in ids]
        assert all(s["Status"] == "exited" for s in states), states
    finally:
        for i in docker("ps", "-aq", "--filter", f"label={label}").stdout.split():
            docker("rm", "-f", i)
    assert len(states) <= 1, states
    return proc.returncode, proc.stdout + proc.stderr, states[0]["ExitCode"] if states else None


def run_mercure(variant, study, out, env, tmp_path, mercure_images):
    """The module as mercure's processor starts it: detached, then waited for, then removed."""
    data = tmp_path / "mercure-in"
    shutil.copytree(study, data)
    (data / "task.json").write_text(json.dumps({"id": "exit-test", "process": {"settings": {}}}))
    readable_by_all(data)
    paths = {"MERCURE_IN_DIR": "/tmp/data", "MERCURE_OUT_DIR": "/tmp/output", "MONAI_INPUTPATH": "/tmp/data",
             "MONAI_OUTPUTPATH": "/tmp/output", "HOLOSCAN_INPUT_PATH": "/tmp/data",
             "HOLOSCAN_OUTPUT_PATH": "/tmp/output"}
    all_env = {**env, **paths}
    names = [a for name in all_env for a in ("-e", name)]
    name = f"spineseg-mercure-exit-{uuid.uuid4().hex[:12]}"
    # --network none: this engine has no bridge (tools/container_engine.sh); mercure leaves Docker's default
    started = docker("run", "-d", "--name", name, "--network", "none", "--user", f"{UID}:{UID}", "--group-add",
                     str(UID), "-v", f"{data}:/tmp/data", "-v", f"{out}:/tmp/output", *names,
                     mercure_images(TAGS[variant]),
                     env=dict(os.environ, **all_env))
    assert started.returncode == 0, started.stderr
    try:
        waited = docker("wait", name, timeout=TIMEOUT)
        logs = docker("logs", name)
    finally:
        docker("rm", "-f", name)
    assert waited.returncode == 0, waited.stderr
    return int(waited.stdout.strip()), logs.stdout + logs.stderr, None


RUNNERS = {"docker-run": run_docker_run, "argo": run_argo, "monai-deploy-run": run_monai_deploy,
           "mercure": run_mercure}


@pytest.mark.parametrize("variant,path,outcome", CASES, ids=["-".join(c) for c in CASES])
def test_a_failed_or_interrupted_study_is_non_zero_on_every_entry_path(image, demo_study, tmp_path, request,
                                                                        variant, path, outcome):
    if variant == "gpu":
        request.getfixturevalue("gpu_image")          # skips (fails under SPINESEG_REQUIRE_IMAGE) without it
    mercure_images = request.getfixturevalue("mercure_images") if path == "mercure" else None
    study = study_for(outcome, demo_study, tmp_path)
    out = output_folder(tmp_path)
    env = {HOOK: "load_models:SIGTERM"} if outcome == "interrupted" else {}
    app_exit, error_code = expected_app_exit(variant, path, outcome)
    t = time.monotonic()
    status, log, container_status = RUNNERS[path](variant, study, out, env, tmp_path, mercure_images)
    seconds = time.monotonic() - t
    report = json.loads((out / "report.json").read_text())
    assert status == expected_status(path, app_exit), (status, log[-4000:])
    assert report["exit_code"] == app_exit, report.get("error")
    if path == "monai-deploy-run" and app_exit:
        assert container_status == app_exit                   # the app's status, kept by the container
    if app_exit == 0:
        assert report["status"] == "succeeded" and len(list(out.glob("*_seg.dcm"))) == 1
    else:
        assert report["status"] == "failed" and report["error"]["code"] == error_code, report["error"]
    if outcome == "interrupted":
        assert "test hook: sending SIGTERM at the start of stage load_models" in log, log[-4000:]
    files = list(out.iterdir())
    assert files and all(f.stat().st_uid == UID for f in files), [(f.name, f.stat().st_uid) for f in files]
    print(f"{variant} {path} {outcome}: exit {status} (app {report['exit_code']}) in {seconds:.1f} s")
