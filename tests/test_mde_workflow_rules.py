"""Both clinical workflows pass the checks MONAI Deploy applies before and while running them.

deploy/mde/spine-seg-workflow.json (MONAI Deploy Express, a `docker` task) and deploy/argo/spine-seg-workflow.json
(the Kubernetes/Helm install, an `argo` task) are checked with rules read from monai-deploy-workflow-manager
0.2.0, the version MONAI Deploy Express pins (monai-deploy deploy/monai-deploy-express/.env:5-6):

- src/WorkflowManager/WorkflowManager/Validators/WorkflowValidator.cs, what POST /workflows runs (line numbers
  given with each rule below);
- src/WorkflowManager/Contracts/Models/*.cs: the field names (Newtonsoft ignores a misspelt one silently);
- src/TaskManager/Plug-ins/Docker/DockerPlugin.cs:74-106 and Keys.cs:74-81, which refuse a docker task without
  its required arguments or with an artifact that no `env_` argument maps;
- src/Common/Configuration/ArgoParameters.cs:132-151, the Argo arguments the validator allows;
- src/WorkflowManager/WorkflowExecuter/Common/ArtifactMapper.cs:135-189, how an artifact value is parsed;
- Express's Task Manager registers the docker plug-in only (monai-deploy configs/task-manager.json:16-19).

`test_a_broken_copy_fails` shows each rule failing on a copy of the Express workflow broken one way.
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT

EXPRESS = ROOT / "deploy" / "mde" / "spine-seg-workflow.json"
KUBERNETES = ROOT / "deploy" / "argo" / "spine-seg-workflow.json"
CONFIGURE = ROOT / "deploy" / "mde" / "configure_workflow.py"

# ValidationConstants.cs:141-151
VALID_TASK_TYPES = {"argo", "aide_clinical_review", "router", "export", "docker", "email",
                    "remote_app_execution", "export_hl7"}
# task types the Workflow Manager handles itself; the others go to a Task Manager plug-in
# (WorkflowExecuterService.cs:429-440)
WORKFLOW_MANAGER_TYPES = {"router", "export", "export_hl7", "remote_app_execution"}
# ArgoParameters.cs:132-151
ARGO_PARAMETERS = {"namespace", "server_url", "allow_insecure", "workflow_template_name", "timeoutSeconds",
                   "apiToken", "endpoint", "username", "password", "exchange", "virtualHost", "resources",
                   "parameters", "priority", "cpu", "memory", "gpu_required"}
# Docker plug-in, Keys.cs:74-81
DOCKER_REQUIRED = ("server_url", "entrypoint", "command", "container_image", "temp_storage_container_path")
# Contracts/Models: Workflow.cs, InformaticsGateway.cs, TaskObject.cs, TaskDestination.cs, ExportDestination.cs,
# ArtifactMap.cs, Artifact.cs (OutputArtifact adds nothing the files use)
FIELDS = {
    "workflow": {"name", "version", "description", "informatics_gateway", "tasks", "dataRetentionDays", "predicate"},
    "informatics_gateway": {"ae_title", "data_origins", "export_destinations"},
    "task": {"id", "description", "type", "args", "task_destinations", "export_destinations", "artifacts",
             "timeout_minutes"},
    "task_destination": {"name", "conditions"},
    "export_destination": {"name"},
    "artifacts": {"input", "output"},
    "artifact": {"type", "name", "value", "mandatory"},
}
TASK_ID = re.compile(r"^[a-zA-Z0-9-_]+$")          # WorkflowValidator.cs:268


def field_errors(workflow: dict) -> list[str]:
    errors = []

    def check(obj, kind, where):
        unknown = set(obj) - FIELDS[kind]
        if unknown:
            errors.append(f"{where}: unknown field(s) {sorted(unknown)} (the model ignores them)")

    check(workflow, "workflow", "workflow")
    check(workflow.get("informatics_gateway") or {}, "informatics_gateway", "informatics_gateway")
    for task in workflow.get("tasks", []):
        where = f"task {task.get('id')}"
        check(task, "task", where)
        for d in task.get("task_destinations", []):
            check(d, "task_destination", where)
        for d in task.get("export_destinations", []):
            check(d, "export_destination", where)
        check(task.get("artifacts", {}), "artifacts", where)
        for a in task.get("artifacts", {}).get("input", []) + task.get("artifacts", {}).get("output", []):
            check(a, "artifact", where)
    return errors


def validator_errors(workflow: dict, sources: set[str]) -> list[str]:
    """WorkflowValidator.ValidateWorkflowAsync (WorkflowValidator.cs:122-144), for a new workflow; ``sources``:
    the AE titles registered as sources in the gateway (OriginExists: GET /config/source/aetitle/{x},
    InformaticsGatewayService.cs:47-59)."""
    errors = []
    tasks = workflow.get("tasks") or []
    gateway = workflow.get("informatics_gateway")
    # ValidateWorkflowSpecAsync, 236-276
    if not str(workflow.get("name") or "").strip():
        errors.append("Missing Workflow Name.")
    if not str(workflow.get("version") or "").strip():
        errors.append("Missing Workflow Version.")
    if gateway is None:                                                             # 280-284
        errors.append("Missing InformaticsGateway section.")
    elif not str(gateway.get("ae_title") or "").strip() or len(gateway["ae_title"]) > 15:   # 286-290
        errors.append("AeTitle is required in the InformaticsGateaway section and must be under 16 characters.")
    else:
        for origin in gateway.get("data_origins") or []:                            # 292-301
            if origin not in sources:
                errors.append(f"Data origin {origin} does not exists. Please review sources configuration management.")
    if not tasks:
        errors.append("Workflow does not contain Tasks, please review Workflow.")
        return errors
    for task in tasks:
        if not TASK_ID.match(task.get("id", "")):
            errors.append(f"TaskId: '{task.get('id')}' Contains Invalid Characters.")
    # ValidateTasks, 146-184
    first = tasks[0]["id"]
    destinations = []
    for task in tasks:
        outputs = [a.get("name") for a in task.get("artifacts", {}).get("output", [])]
        if len(outputs) != len(set(outputs)):                                       # 304-319
            errors.append(f"Task: '{task['id']}' has multiple output names with the same value.")
        errors += task_type_errors(workflow, task)
        names = [d.get("name") for d in task.get("task_destinations", [])]
        if first in names:                                                          # 155-158
            errors.append(f"Converging Tasks Destinations in task: {task['id']} on root task: {first}")
        if sum(t["id"] == task["id"] for t in tasks) > 1:                           # 160-163
            errors.append(f"Found duplicate task id '{task['id']}'")
        destinations += names
    for dupe in sorted({d for d in destinations if destinations.count(d) > 1}):     # 168-183
        errors.append(f"Converging Tasks Destinations in tasks on task: {dupe}")
    # DetectUnreferencedTasks, 217-234
    unreferenced = [t["id"] for t in tasks[1:] if t["id"] not in destinations]
    if unreferenced:
        errors.append(f"Found Task(s) without any task destinations to it: {', '.join(unreferenced)}")
    # ValidateExportDestinations, 204-215 (CheckDestinationInMigDestinations, 186-202)
    for task in tasks:
        if task.get("export_destinations"):
            errors += destination_errors(task, gateway)
    return errors


def destination_errors(task: dict, gateway: dict | None) -> list[str]:
    registered = (gateway or {}).get("export_destinations") or []
    names = [d.get("name") for d in task.get("export_destinations", [])]
    errors = []
    if names and not registered:
        errors.append("InformaticsGateway ExportDestinations destinations can not be null with an Export Task.")
    errors += [f"Task: '{task['id']}' export_destination: '{n}' must be registered in the informatics_gateway object."
               for n in names if n not in registered]
    return errors


def task_type_errors(workflow: dict, task: dict) -> list[str]:
    """TaskTypeSpecificValidation, ValidateInputs, ValidateExportTask, ValidateArgoTask (321-421, 605-620)."""
    kind = str(task.get("type", "")).lower()
    if kind not in VALID_TASK_TYPES:
        return [f"Task: '{task['id']}' has an invalid type, please specify: {', '.join(sorted(VALID_TASK_TYPES))}"]
    errors = []
    if kind != "router":                                                            # ValidateInputs, 355-379
        inputs = task.get("artifacts", {}).get("input") or []
        if not inputs:
            errors.append(f"Task: '{task['id']}' must have Input Artifacts specified.")
        if any(not str(a.get("name") or "").strip() for a in inputs):
            errors.append(f"Task: '{task['id']}' Input Artifacts must have a Name.")
        if any(not str(a.get("value") or "").strip() for a in inputs):
            errors.append(f"Task: '{task['id']}' Input Artifacts must have a Value.")
    if kind == "export":                                                            # 605-620
        names = [d.get("name") for d in task.get("export_destinations", [])]
        if not names:
            errors.append(f"Task: '{task['id']}' does not contain a destination.")
        if len(names) != len(set(names)):
            errors.append(f"Task: '{task['id']}' contains duplicate destinations.")
    if kind == "argo":                                                              # 381-421
        args = task.get("args", {})
        if "workflow_template_name" not in args:
            errors.append(f"Task: '{task['id']}' workflow_template_name must be specified, this corresponds to an Argo template name.")
        invalid = sorted(set(args) - ARGO_PARAMETERS)
        if invalid:
            errors.append(f"Task: '{task['id']}' args has invalid keys: {', '.join(invalid)}.")
        elif "priority" in args and args["priority"].lower() not in ("high", "standard", "low"):
            errors.append(f"Task: '{task['id']}' TaskPriorityClassName must be one of \"high\", \"standard\" or \"low\"")
    return errors


def docker_plugin_errors(task: dict) -> list[str]:
    """DockerPlugin.ValidateEvent (DockerPlugin.cs:74-106): thrown as InvalidTaskException when the Task Manager
    builds the plug-in, i.e. after the validator let the workflow in."""
    args = task.get("args", {})
    errors = [f"Required parameter to execute Argo workflow is missing: {k}" for k in DOCKER_REQUIRED if k not in args]
    if "server_url" in args and not re.match(r"^[a-z][a-z0-9+.-]*://", args["server_url"]):
        errors.append(f"The value '{args['server_url']}' provided for 'server_url' is not a valid URI.")
    artifacts = task.get("artifacts", {})
    for a in artifacts.get("input", []) + artifacts.get("output", []):
        if a.get("name") not in args:
            errors.append(f"The mapping for storage '{a.get('name')}' is not defined as an envrionment variable.")
        elif not a["name"].startswith("env_"):
            # DockerPlugin.cs:346-354: only env_ arguments become the container's variables, so the app would
            # not be told where the folder is mounted
            errors.append(f"Artifact '{a['name']}' is mounted but not passed to the app: name it env_<VARIABLE>")
    return errors


def runtime_errors(workflow: dict, plugins: set[str]) -> list[str]:
    """What only shows once a study arrives: the plug-in lookup by type (TaskManager.cs:431, Express registers
    ``plugins``), the artifact values as ArtifactMapper parses them (135-189: `{{ context.input.dicom }}` or
    `{{ context.executions.<task>.artifacts.<output> }}`, split on spaces), and task destinations that name no
    task (the validator does not check them)."""
    tasks = {t["id"]: t for t in workflow.get("tasks", [])}
    errors = []
    for task in tasks.values():
        kind = task.get("type", "").lower()
        if kind not in WORKFLOW_MANAGER_TYPES and kind not in plugins:
            errors.append(f"Task: '{task['id']}' type '{kind}' has no Task Manager plug-in here ({sorted(plugins)})")
        if kind == "docker":
            errors += docker_plugin_errors(task)
        for d in task.get("task_destinations", []):
            if d.get("name") not in tasks:
                errors.append(f"Task: '{task['id']}' sends to '{d.get('name')}', which is no task")
        for a in task.get("artifacts", {}).get("input", []):
            parts = str(a.get("value", "")).split(" ")
            if len(parts) < 2:
                errors.append(f"Mandatory artifact failed to be parsed: {a.get('name')}, {a.get('value')}")
                continue
            words = parts[1].split(".")
            if parts[1].startswith("context.input.dicom"):
                continue
            if len(words) == 5 and words[:2] == ["context", "executions"] and words[3] == "artifacts":
                source = tasks.get(words[2])
                outputs = {o.get("name") for o in (source or {}).get("artifacts", {}).get("output", [])}
                if source is None or words[4] not in outputs:
                    errors.append(f"Mandatory artifact was not found: {a.get('name')}, {a.get('value')}")
                continue
            errors.append(f"Artifact {a.get('name')}: '{a.get('value')}' names no input or task output")
    return errors


def readme_registrations() -> dict[str, set[str]]:
    """What the MONAI Deploy Express steps (docs/deployment.md) register in the gateway: `aet add -a`,
    `src add -a`, `dst add -n`."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    section = text.split("### MONAI Deploy Express", 1)[1].split("\n### ", 1)[0]

    def values(command, flag):
        return {m.group(1) for line in re.findall(rf"mig-cli {command} add [^`\n]*", section)
                for m in [re.search(rf"(?:^|\s){flag}\s+(\S+)", line)] if m}
    return {"aet": values("aet", "-a"), "src": values("src", "-a"), "dst": values("dst", "-n")}


def all_errors(workflow: dict, plugins: set[str], sources: set[str]) -> list[str]:
    return field_errors(workflow) + validator_errors(workflow, sources) + runtime_errors(workflow, plugins)


EXPRESS_PLUGINS = {"docker"}                  # monai-deploy configs/task-manager.json:16-19
KUBERNETES_PLUGINS = {"argo"}                 # monai-deploy helm-charts/files/task-manager.json:19-21


@pytest.fixture(scope="module")
def registered():
    found = readme_registrations()
    assert all(found.values()), f"the Express steps (docs/deployment.md) register no AE title, source or destination: {found}"
    return found


@pytest.mark.parametrize("path,plugins", [(EXPRESS, EXPRESS_PLUGINS), (KUBERNETES, KUBERNETES_PLUGINS)],
                         ids=["express", "kubernetes"])
def test_workflow_passes_the_rules(path, plugins, registered):
    workflow = json.loads(path.read_text())
    assert all_errors(workflow, plugins, registered["src"]) == []
    gateway = workflow["informatics_gateway"]
    # what the Express steps register is what the workflow names: the gateway AE title, the sources (by AE title, which
    # is what workflows are matched on: WorkflowRepository.cs:204-223) and the destinations (by name)
    assert gateway["ae_title"] in registered["aet"]
    assert set(gateway["data_origins"]) <= registered["src"]
    assert set(gateway["export_destinations"]) <= registered["dst"]


def test_express_task_maps_the_maps_folders():
    """The docker task's artifacts are mounted where the MAP reads and writes, and their `env_` arguments tell it
    so (DockerPlugin.cs:346-354 turns env_X into X; 412 and 478 mount the artifact at the argument's value)."""
    workflow = json.loads(EXPRESS.read_text())
    task = next(t for t in workflow["tasks"] if t["type"] == "docker")
    args, artifacts = task["args"], task["artifacts"]
    assert [a["name"] for a in artifacts["input"]] == ["env_HOLOSCAN_INPUT_PATH"]
    assert [a["name"] for a in artifacts["output"]] == ["env_HOLOSCAN_OUTPUT_PATH"]
    assert args["env_HOLOSCAN_INPUT_PATH"] == "/var/holoscan/input"
    assert args["env_HOLOSCAN_OUTPUT_PATH"] == "/var/holoscan/output"
    assert args["server_url"] == "unix:///var/run/docker.sock"       # Express mounts it into the Task Manager
    assert args["temp_storage_container_path"] == "/var/lib/mde/"    # where Express mounts HOST_TEMP_STORAGE
    # the monitor gives up after task_timeout_minutes (ContainerStatusMonitor.cs:86-110, default 5 minutes,
    # DockerPlugin.cs:59-69) and the Workflow Manager's timeout must come after it
    assert int(args["task_timeout_minutes"]) >= 30 and task["timeout_minutes"] > int(args["task_timeout_minutes"])
    export = next(t for t in workflow["tasks"] if t["type"] == "export")
    assert export["artifacts"]["input"][0]["value"] == \
        "{{ context.executions.spine-seg.artifacts.env_HOLOSCAN_OUTPUT_PATH }}"


def test_kubernetes_task_has_the_helm_defaults():
    task = next(t for t in json.loads(KUBERNETES.read_text())["tasks"] if t["type"] == "argo")
    assert task["args"]["server_url"] == "http://monai-deploy-argo-workflows-server:2746"
    assert task["args"]["namespace"] == "default"


def _break(path: str, value=None, delete=False):
    """A mutation: set, append (index = length) or delete the item at a /-separated path of the Express
    workflow."""
    def mutate(workflow):
        *parents, last = path.split("/")
        node = workflow
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key = int(last) if isinstance(node, list) else last
        if delete:
            del node[key]
        elif isinstance(node, list) and key == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[key] = copy.deepcopy(value)
    return mutate


BROKEN = {
    "no name": (_break("name", ""), "Missing Workflow Name."),
    "no version": (_break("version", delete=True), "Missing Workflow Version."),
    "AE title of 16": (_break("informatics_gateway/ae_title", "SPINESEG-SPINESG"), "AeTitle is required"),
    "origin as a source name": (_break("informatics_gateway/data_origins", ["pacs-source"]), "Data origin pacs-source"),
    "task id with a dot": (_break("tasks/1/id", "spine.seg"), "Contains Invalid Characters"),
    "unknown type": (_break("tasks/1/type", "dockers"), "has an invalid type"),
    "argo on Express": (_break("tasks/1/type", "argo"), "has no Task Manager plug-in here"),
    "no input artifact": (_break("tasks/1/artifacts/input", []), "must have Input Artifacts"),
    "input without value": (_break("tasks/2/artifacts/input/0/value", ""), "Input Artifacts must have a Value"),
    "duplicate outputs": (_break("tasks/1/artifacts/output/1", {"name": "env_HOLOSCAN_OUTPUT_PATH"}),
                          "multiple output names"),
    "unreachable task": (_break("tasks/0/task_destinations", []), "without any task destinations"),
    "converging tasks": (_break("tasks/0/task_destinations/1", {"name": "export-results"}), "Converging Tasks"),
    "loop to the root": (_break("tasks/2/task_destinations", [{"name": "mr-spine-router"}]), "on root task"),
    "unregistered destination": (_break("tasks/2/export_destinations/0/name", "ORTHANC"), "must be registered"),
    "no destination": (_break("tasks/2/export_destinations", []), "does not contain a destination"),
    "destination to no task": (_break("tasks/1/task_destinations/0/name", "export"), "which is no task"),
    "docker without entrypoint": (_break("tasks/1/args/entrypoint", delete=True), "missing: entrypoint"),
    "server_url not a URI": (_break("tasks/1/args/server_url", "/var/run/docker.sock"), "not a valid URI"),
    "unmapped artifact": (_break("tasks/1/args/env_HOLOSCAN_OUTPUT_PATH", delete=True),
                          "'env_HOLOSCAN_OUTPUT_PATH' is not defined"),
    "artifact not env_": (_break("tasks/1/artifacts/input/0/name", "container_image"), "not passed to the app"),
    "value without spaces": (_break("tasks/1/artifacts/input/0/value", "{{context.input.dicom}}"),
                             "failed to be parsed"),
    "export of a missing output": (_break("tasks/2/artifacts/input/0/value",
                                          "{{ context.executions.spine-seg.artifacts.output }}"), "was not found"),
    "misspelt field": (_break("tasks/1/task_destination", []), "unknown field"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_copy_fails(case, registered):
    mutate, expected = BROKEN[case]
    workflow = json.loads(EXPRESS.read_text())
    mutate(workflow)
    errors = all_errors(workflow, EXPRESS_PLUGINS, registered["src"])
    assert any(expected in e for e in errors), errors


def test_argo_arguments_are_checked(registered):
    workflow = json.loads(KUBERNETES.read_text())
    workflow["tasks"][1]["args"]["container_image"] = "spine-seg"
    assert any("args has invalid keys: container_image" in e
               for e in all_errors(workflow, KUBERNETES_PLUGINS, registered["src"]))


def configure(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CONFIGURE), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("install,plugins", [("express", EXPRESS_PLUGINS), ("kubernetes", KUBERNETES_PLUGINS)])
def test_configured_workflow_passes_the_rules(install, plugins):
    extra = ["--image", "registry.example.org/spine-seg-cpu:0.1.0"] if install == "express" else ["--gpu"]
    proc = configure("--install", install, "--name", "spine-seg-site2", "--ae-title", "SPINE2",
                     "--origin", "RADPACS", "--origin", "MRI3T", "--destination", "RAD-PACS", *extra)
    assert proc.returncode == 0, proc.stderr
    workflow = json.loads(proc.stdout)
    assert all_errors(workflow, plugins, {"RADPACS", "MRI3T"}) == []
    gateway = workflow["informatics_gateway"]
    assert (workflow["name"], gateway["ae_title"], gateway["data_origins"], gateway["export_destinations"]) == \
        ("spine-seg-site2", "SPINE2", ["RADPACS", "MRI3T"], ["RAD-PACS"])
    export = next(t for t in workflow["tasks"] if t["type"] == "export")
    assert export["export_destinations"] == [{"name": "RAD-PACS"}]
    task = workflow["tasks"][1]
    if install == "express":
        assert task["args"]["container_image"] == "registry.example.org/spine-seg-cpu:0.1.0"
    else:
        assert task["args"]["workflow_template_name"] == "spine-seg-gpu"


@pytest.mark.parametrize("args,message", [
    (["--ae-title", "SPINESEG-SPINESG"], "1 to 15"),
    (["--origin", "BAD\\AE"], "1 to 15"),
    (["--gpu"], "for --install kubernetes"),
    (["--install", "kubernetes", "--image", "x"], "for --install express"),
])
def test_configure_refuses_bad_values(args, message):
    proc = configure(*args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
