"""The MAP run the way MONAI Deploy Express runs deploy/mde/spine-seg-workflow.json's docker task, with success and
failure counted the way Express counts them.

Read from monai-deploy-workflow-manager at tag 0.2.0 (the Task Manager and Workflow Manager versions MONAI Deploy
Express pins, monai-deploy deploy/monai-deploy-express/.env:5-6); paths below are in that repository:

- src/TaskManager/Plug-ins/Docker/DockerPlugin.cs
  - 378-436 SetupInputs: every object under the input artifact's path is downloaded to
    <temp_storage_container_path>/<execution id>/inputs/<artifact name>/<object path below the artifact path>;
    the artifact path of `{{ context.input.dicom }}` is `<payload id>/dcm` (WorkflowExecuter/Common/
    ArtifactMapper.cs:154-157);
  - 456-485 SetupOutputs: an empty .../outputs/<artifact name> per output artifact;
  - 487-503 SetPermission: `chown -R <user>` of the inputs and outputs folders when the `user` argument is set
    (the Task Manager runs as root: TaskManager.Dockerfile has no USER); folders are otherwise root's;
  - 317-376 BuildContainerSpecification: Name = execution id; Entrypoint and Cmd = the `entrypoint` and
    `command` arguments split on ","; Env = every `env_X` argument as X; inputs bind-mounted read-only and
    outputs read-write at the value of the argument named like the artifact; User = `user`;
    HostConfig.Runtime = "nvidia"; nothing else (no network, limits or read-only root);
  - 168-179: create, then start; the container is never removed;
  - 221-269 GetStatus: Succeeded whenever the container has completed, whatever its exit code; Failed only
    when it has not completed;
- src/TaskManager/Plug-ins/Docker/ContainerStatusMonitor.cs
  - 84-110: polls `inspect` once a second for `task_timeout_minutes`; 113-121 IsContainerCompleted: status
    "exited" or "dead" (Strings.cs:33) with FinishedAt set; then 123-180 uploads every file below each output
    folder (all directories, hidden files too) and sends the callback that leads to GetStatus;
- src/WorkflowManager/WorkflowExecuter/Services/WorkflowExecuterService.cs
  - 523-528, 847-877 HandleOutputArtifacts: the task fails when a mandatory output artifact has no object;
  - 747-781 GetArtifactValues: the export task takes the `.dcm` objects under the artifact's path
    (Common/Extensions/FileExtensions.cs:23-33: the extension, nothing else) and fails when there are none.
- The study is laid out as monai-deploy-informatics-gateway 0.5.0 stores it: `dcm/<study>/<series>/<sop>.dcm`
  with a `.dcm.json` beside each (src/Api/Storage/DicomFileStorageMetadata.cs:103-118), the DICOM JSON model
  without OB, OD, OF, OL, OV, OW and UN elements (src/InformaticsGateway/Common/DicomExtensions.cs:29, 54-75;
  the default WriteDicomJson is IgnoreOthers, src/Configuration/DicomConfiguration.cs:43).

The container is created through the Docker Engine API (the plug-in uses Docker.DotNet, which calls it), on the
engine of DOCKER_HOST rather than the workflow's `unix:///var/run/docker.sock`. One difference remains: the
engine here has no `nvidia` runtime, so it is asked for only where `docker info` lists one.

The plug-in's own interruption, HandleTimeout (DockerPlugin.cs:303-315), kills the container after the Workflow
Manager has already failed the task for its timeout, and a later "succeeded" is refused
(TaskExecutionStatusExtensions.cs:66-69). The interruption tested here is one from outside (a `docker stop`,
the host shutting down), which the plug-in sees as a completed container.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest

from conftest import ROOT
from container_helpers import IMAGE, demo_study, docker, image  # noqa: F401 (fixtures)

WORKFLOW = json.loads((ROOT / "deploy" / "mde" / "spine-seg-workflow.json").read_text())
TASK = next(t for t in WORKFLOW["tasks"] if t["type"] == "docker")
IGNORED_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}      # DicomExtensions.cs:29


class DockerAPI:
    """The Docker Engine API over the engine's unix socket, as Docker.DotNet calls it."""

    def __init__(self):
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if not host.startswith("unix://"):
            pytest.skip(f"DOCKER_HOST {host} is not a unix socket")
        self.socket = host[len("unix://"):]

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 60):
        conn = http.client.HTTPConnection("localhost", timeout=timeout)
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(timeout)
        conn.sock.connect(self.socket)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:500]!r}")
        return json.loads(data) if data else None


def store_as_gateway(dicom_files: list[Path], payload: Path) -> Path:
    """The objects the Informatics Gateway puts under <payload id>/ for these files; returns <payload>/dcm."""
    for src in dicom_files:
        ds = pydicom.dcmread(src)
        target = payload / "dcm" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        for element in [e for e in ds if e.VR in IGNORED_VRS]:
            del ds[element.tag]
        target.with_name(target.name + ".json").write_text(ds.to_json())
    return payload / "dcm"


@dataclass
class PluginRun:
    """What the plug-in and the Workflow Manager make of one run."""
    container: dict                       # `inspect` of the finished container
    uploaded: list[str]                   # object names the monitor uploads from the output folder
    plugin_status: str                    # GetStatus
    task_status: str                      # after HandleOutputArtifacts
    exported: list[str] = field(default_factory=list)   # the .dcm objects the export task sends
    workflow_status: str = ""
    logs: str = ""
    output: Path | None = None


def run_docker_task(api: DockerAPI, task: dict, input_root: Path, storage: Path, *, while_running=None) -> PluginRun:
    """The plug-in's ExecuteTask, monitor and GetStatus for ``task`` on the objects below ``input_root``, with
    ``storage`` as temp_storage_container_path (here also the host's HOST_TEMP_STORAGE), then the Workflow
    Manager's verdict. ``while_running(container_id)``: called once a second while the monitor polls."""
    args, execution_id = task["args"], f"mde-{uuid.uuid4()}"
    root = storage / execution_id
    old_umask = os.umask(0o022)                            # the Task Manager's folders and files: 0755 / 0644
    try:
        mounts = []
        for artifact in task["artifacts"]["input"]:        # SetupInputs, 378-436
            folder = root / "inputs" / artifact["name"]
            for obj in sorted(p for p in input_root.rglob("*") if p.is_file()):
                target = folder / obj.relative_to(input_root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(obj, target)
            mounts.append({"Type": "bind", "ReadOnly": True, "Source": str(folder), "Target": args[artifact["name"]]})
        set_permission(args, root / "inputs")
        outputs = []
        for artifact in task["artifacts"]["output"]:       # SetupOutputs, 456-485
            folder = root / "outputs" / artifact["name"]
            folder.mkdir(parents=True)
            outputs.append(folder)
            mounts.append({"Type": "bind", "ReadOnly": False, "Source": str(folder), "Target": args[artifact["name"]]})
        set_permission(args, root / "outputs")
    finally:
        os.umask(old_umask)
    spec = {                                               # BuildContainerSpecification, 317-376
        "Env": [f"{k.replace('env_', '')}={v}" for k, v in args.items() if k.startswith("env_")],
        "Entrypoint": args["entrypoint"].split(","),
        "Cmd": args["command"].split(","),
        "Image": args["container_image"],
        "HostConfig": {"Mounts": mounts},
    }
    if "nvidia" in api.call("GET", "/info").get("Runtimes", {}):
        spec["HostConfig"]["Runtime"] = "nvidia"
    if "user" in args:
        spec["User"] = args["user"]
    created = api.call("POST", "/containers/create?" + urllib.parse.urlencode({"name": execution_id}), spec)
    cid = created["Id"]
    try:
        api.call("POST", f"/containers/{cid}/start")
        uploaded = None
        for _ in range(int(args.get("task_timeout_minutes", 5)) * 60):   # ContainerStatusMonitor.Start, 84-110
            state = api.call("GET", f"/containers/{cid}/json")["State"]
            if completed(state):
                uploaded = sorted(str(p.relative_to(folder)) for folder in outputs
                                  for p in folder.rglob("*") if p.is_file())
                break
            if while_running:
                while_running(cid)
            time.sleep(1)
        assert uploaded is not None, "the monitor gave up: no callback, the Workflow Manager times the task out"
        container = api.call("GET", f"/containers/{cid}/json")
        logs = docker("logs", cid, timeout=60)
    finally:
        api.call("DELETE", f"/containers/{cid}?force=1")
    # GetStatus, 221-269: completed is success, whatever the exit code
    plugin_status = "Succeeded" if completed(container["State"]) else "Failed"
    # HandleOutputArtifacts, 847-877: a mandatory output with no object fails the task
    mandatory_missing = any(a.get("mandatory", True) for a in task["artifacts"]["output"]) and not uploaded
    task_status = "Failed" if plugin_status == "Failed" or mandatory_missing else "Succeeded"
    run = PluginRun(container, uploaded, plugin_status, task_status, logs=logs.stdout + logs.stderr,
                    output=outputs[0])
    if task_status == "Succeeded":
        # GetArtifactValues, 747-781, FileExtensions.cs:23-33: the .dcm objects, or the export task fails
        run.exported = [name for name in uploaded if Path(name).suffix.lower() == ".dcm"]
        run.workflow_status = "Succeeded" if run.exported else "Failed: export found no .dcm"
    else:
        run.workflow_status = "Failed: " + ("mandatory output missing" if mandatory_missing else "task failed")
    return run


def completed(state: dict) -> bool:
    """ContainerStatusMonitor.IsContainerCompleted, 113-121."""
    return state["Status"].lower() in ("exited", "dead") and bool(state.get("FinishedAt", "").strip())


def set_permission(args: dict, path: Path) -> None:
    """DockerPlugin.SetPermission, 487-503."""
    if "user" in args:
        subprocess.run(["chown", "-R", args["user"], str(path)], check=True, timeout=60)


@pytest.fixture(scope="module")
def api(image):
    if os.geteuid() != 0:
        pytest.skip("the plug-in chowns its folders as root (the Task Manager's user); run as root")
    return DockerAPI()


@pytest.fixture(scope="module")
def express_task(image):
    assert TASK["args"]["container_image"] == IMAGE, "the workflow names another image than the one tested"
    return TASK


@pytest.fixture(scope="module")
def gateway_study(demo_study, tmp_path_factory):
    return store_as_gateway(sorted(p for p in demo_study.rglob("*") if p.is_file()),
                            tmp_path_factory.mktemp("minio") / str(uuid.uuid4()))


def test_gateway_layout(gateway_study):
    dcm = sorted(gateway_study.rglob("*.dcm"))
    sidecars = sorted(gateway_study.rglob("*.dcm.json"))
    assert dcm and len(sidecars) == len(dcm)
    assert all(len(p.relative_to(gateway_study).parts) == 3 for p in dcm)      # <study>/<series>/<sop>.dcm
    model = json.loads(sidecars[0].read_text())
    assert "7FE00010" not in model and model["0020000D"]["vr"] == "UI"          # no pixel data, DICOM JSON


def test_good_study_succeeds_and_exports_seg_sr_sc(api, express_task, gateway_study, tmp_path):
    t = time.monotonic()
    run = run_docker_task(api, express_task, gateway_study, tmp_path / "mde")
    seconds = time.monotonic() - t
    assert run.container["State"]["ExitCode"] == 0, run.logs[-4000:]
    assert (run.plugin_status, run.task_status, run.workflow_status) == ("Succeeded", "Succeeded", "Succeeded")
    # the container as the plug-in made it
    config, host = run.container["Config"], run.container["HostConfig"]
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"] and config["Cmd"] == ["python3", "/opt/holoscan/app"]
    assert config["User"] == express_task["args"]["user"]
    assert {m["Destination"]: m["RW"] for m in run.container["Mounts"]} == \
        {"/var/holoscan/input": False, "/var/holoscan/output": True}
    assert not host.get("ReadonlyRootfs") and not host.get("Memory")
    # what the export sends: the SEG, the SR and the review series' two SC images (picture and measurement table),
    # each once, none from an earlier run
    kinds = sorted(pydicom.dcmread(run.output / name).Modality for name in run.exported)
    assert kinds == ["OT", "OT", "SEG", "SR"], run.exported
    assert all("/" not in name for name in run.exported)
    report = json.loads((run.output / "report.json").read_text())
    assert report["status"] == "succeeded"
    assert set(run.exported) <= set(report["outputs"])
    # the gateway's .dcm.json sidecars are read past: every .dcm seen and used, every sidecar skipped
    instances = len(list(gateway_study.rglob("*.dcm")))
    assert (report["input"]["files_seen"], report["input"]["files_skipped"]) == (2 * instances, instances)
    print(f"docker task as the plug-in runs it: {seconds:.1f} s; uploaded {run.uploaded}; input {report['input']}")


def test_bad_study_fails(api, express_task, gateway_study, tmp_path):
    """An MR study the router lets through but the app cannot segment: one slice of the series."""
    one = tmp_path / "minio" / "dcm"
    first = sorted(gateway_study.rglob("*.dcm"))[0]
    target = one / first.relative_to(gateway_study)
    target.parent.mkdir(parents=True)
    shutil.copyfile(first, target)
    shutil.copyfile(first.with_name(first.name + ".json"), target.with_name(target.name + ".json"))
    run = run_docker_task(api, express_task, one, tmp_path / "mde")
    assert run.container["State"]["ExitCode"] == 3, run.logs[-4000:]
    # the plug-in counts it succeeded; the Workflow Manager fails it at the export: nothing to send
    assert run.plugin_status == "Succeeded" and run.uploaded and run.exported == []
    assert run.workflow_status == "Failed: export found no .dcm"
    report = json.loads((run.output / "report.json").read_text())
    assert report["status"] == "failed" and report["exit_code"] == 3


def test_interrupted_run_fails(api, express_task, gateway_study, tmp_path):
    """`docker stop` from outside once the series is chosen: exit 4, every result removed, nothing to export."""
    stopped = []

    def stop_once_chosen(cid):
        if not stopped and "chosen series" in docker("logs", cid, timeout=60).stderr:
            stopped.append(docker("stop", "-t", "30", cid, timeout=60).returncode)

    run = run_docker_task(api, express_task, gateway_study, tmp_path / "mde", while_running=stop_once_chosen)
    assert stopped == [0], run.logs[-4000:]
    assert run.container["State"]["ExitCode"] == 4, run.logs[-4000:]
    assert run.plugin_status == "Succeeded" and run.exported == []
    assert run.workflow_status == "Failed: export found no .dcm"
    report = json.loads((run.output / "report.json").read_text())
    assert report["error"]["code"] == "INTERRUPTED" and report["outputs"] == []


def test_without_user_the_output_is_not_writable(api, express_task, gateway_study, tmp_path):
    """Why the workflow sets `user`: without it the plug-in leaves its folders to root (0755) and the image's
    user cannot write the output; nothing is uploaded and the mandatory output fails the task."""
    task = json.loads(json.dumps(express_task))
    del task["args"]["user"]
    run = run_docker_task(api, task, gateway_study, tmp_path / "mde")
    assert run.container["State"]["ExitCode"] == 4, run.logs[-4000:]
    assert "OUTPUT_NOT_WRITABLE" in run.logs
    assert run.plugin_status == "Succeeded" and run.uploaded == []
    assert run.workflow_status == "Failed: mandatory output missing"
