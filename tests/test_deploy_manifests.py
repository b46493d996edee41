"""The Kubernetes (Argo) workflow and its Argo templates, and the mercure adapter: structurally consistent.
Both MONAI Deploy workflows are checked against the Workflow Manager's own rules in test_mde_workflow_rules.py."""
import json
import os
import subprocess

import pytest
import yaml

from conftest import ROOT

DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def workflow():
    return json.loads((DEPLOY / "argo" / "spine-seg-workflow.json").read_text())


@pytest.fixture(scope="module")
def templates():
    return {t["metadata"]["name"]: t for t in (yaml.safe_load(p.read_text()) for p in (DEPLOY / "argo").glob("*.yaml"))}


def test_argo_templates_name_no_secret():
    """The Argo plug-in sets every artifact's s3 block and its own secret (ArgoPlugin.cs 0.2.0), so a secret
    named in a template would only be one more thing to create for nothing."""
    for path in (DEPLOY / "argo").glob("*.yaml"):
        assert "Secret" not in path.read_text(), path


def test_workflow_references_resolve(workflow, templates):
    assert workflow["name"] and workflow["version"] and len(workflow["name"]) <= 15
    tasks = {t["id"]: t for t in workflow["tasks"]}
    assert len(tasks) == len(workflow["tasks"]), "duplicate task id"
    gateway = workflow["informatics_gateway"]
    for task in workflow["tasks"]:
        assert task["type"] in ("router", "argo", "export")
        for dest in task.get("task_destinations", []):
            assert dest["name"] in tasks, f"{task['id']} -> unknown task {dest['name']}"
        for dest in task.get("export_destinations", []):
            assert dest["name"] in gateway["export_destinations"]
        if task["type"] == "argo":
            template = templates[task["args"]["workflow_template_name"]]
            step = next(t for t in template["spec"]["templates"] if "container" in t)
            assert {a["name"] for a in task["artifacts"]["input"]} == {a["name"] for a in step["inputs"]["artifacts"]}
            assert {a["name"] for a in task["artifacts"]["output"]} == {a["name"] for a in step["outputs"]["artifacts"]}
        for artifact in task.get("artifacts", {}).get("input", []):
            if "executions." in artifact.get("value", ""):
                source = artifact["value"].split("executions.")[1].split(".artifacts")[0]
                assert source in tasks and tasks[source]["type"] == "argo"
    first = workflow["tasks"][0]
    assert first["type"] == "router" and "'MR'" in first["task_destinations"][0]["conditions"][0]


@pytest.mark.parametrize("name", ["spine-seg-cpu", "spine-seg-gpu"])
def test_argo_templates_run_the_map_with_resources(templates, name):
    spec = templates[name]["spec"]
    names = {t["name"] for t in spec["templates"]}
    assert spec["entrypoint"] in names
    for t in spec["templates"]:
        for group in t.get("steps", []):
            for step in group:
                assert step["template"] in names
    container = next(t for t in spec["templates"] if "container" in t)
    c = container["container"]
    assert c["command"] == ["python3", "/opt/holoscan/app"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HOLOSCAN_INPUT_PATH"] == container["inputs"]["artifacts"][0]["path"]
    assert env["HOLOSCAN_OUTPUT_PATH"] == container["outputs"]["artifacts"][0]["path"]
    assert env["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models"
    requests = c["resources"]["requests"]
    assert "cpu" in requests and "memory" in requests
    assert ("nvidia.com/gpu" in requests) == name.endswith("gpu")
    assert c["image"].startswith("spine-seg-cpu-" if name.endswith("cpu") else "spine-seg-x64")


def test_mercure_entrypoint_maps_its_folders(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text('#!/bin/sh\necho "$@"\n')
    (fake / "python3").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", MERCURE_IN_DIR="/in/x", MERCURE_OUT_DIR="/out/y")
    out = subprocess.run(["sh", str(DEPLOY / "mercure" / "docker-entrypoint.sh")], capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.returncode == 0 and out.stdout.split() == ["/opt/holoscan/app", "-i", "/in/x", "-o", "/out/y"]
