#!/usr/bin/env python3
"""Writes spine-seg's clinical workflow for one site: its name, the AE title the Informatics Gateway listens on
for it, the AE titles of the PACS that may send studies, the gateway destination the results go to and, for
Express, the image (for the Kubernetes install the image is in the Argo template).

    python3 deploy/mde/configure_workflow.py --ae-title SPINESEG --origin PACSAE --destination PACS > wf.json
    python3 deploy/mde/configure_workflow.py --install kubernetes --namespace mde --gpu > wf.json

Only the standard library; prints the workflow JSON to post to the Workflow Manager (README, "Deployment").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent
TEMPLATES = {"express": DEPLOY / "mde" / "spine-seg-workflow.json",
             "kubernetes": DEPLOY / "argo" / "spine-seg-workflow.json"}


def ae_title(value: str) -> str:
    """An AE title as DICOM (PS3.5 AE VR) and the Workflow Manager (at most 15 characters) accept it."""
    value = value.strip()
    if not 0 < len(value) <= 15 or not value.isascii() or "\\" in value or not value.isprintable():
        raise argparse.ArgumentTypeError(f"{value!r}: an AE title has 1 to 15 printable ASCII characters, no '\\'")
    return value


def configure(workflow: dict, args: argparse.Namespace) -> dict:
    gateway = workflow["informatics_gateway"]
    if args.name:
        workflow["name"] = args.name
    if args.ae_title:
        gateway["ae_title"] = args.ae_title
    if args.origin:
        gateway["data_origins"] = args.origin
    for task in workflow["tasks"]:
        if args.destination and task["type"] == "export":
            task["export_destinations"] = [{"name": args.destination}]
        if task["type"] == "docker" and args.image:
            task["args"]["container_image"] = args.image
        if task["type"] == "argo":
            task["args"]["namespace"] = args.namespace or task["args"]["namespace"]
            task["args"]["server_url"] = args.argo_server or task["args"]["server_url"]
            task["args"]["workflow_template_name"] = "spine-seg-gpu" if args.gpu else "spine-seg-cpu"
    if args.destination:
        gateway["export_destinations"] = [args.destination]
    return workflow


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--install", choices=sorted(TEMPLATES), default="express",
                   help="express: Docker task (MONAI Deploy Express); kubernetes: Argo task (Helm install)")
    p.add_argument("--name", help="workflow name (unique in the Workflow Manager)")
    p.add_argument("--ae-title", type=ae_title, help="AE title the gateway listens on for this workflow (mig-cli aet add -a)")
    p.add_argument("--origin", type=ae_title, action="append",
                   help="AE title of a PACS that may send studies (mig-cli src add -a); repeat for several")
    p.add_argument("--destination", help="gateway destination name the results go to (mig-cli dst add -n)")
    p.add_argument("--image", help="express: the MAP image on the Express host")
    p.add_argument("--namespace", help="kubernetes: namespace of Argo (default: default)")
    p.add_argument("--argo-server", help="kubernetes: Argo server URL (default: http://monai-deploy-argo-workflows-server:2746)")
    p.add_argument("--gpu", action="store_true", help="kubernetes: the spine-seg-gpu template")
    args = p.parse_args(argv)
    if args.install == "express" and (args.namespace or args.argo_server or args.gpu):
        p.error("--namespace, --argo-server and --gpu are for --install kubernetes")
    if args.install == "kubernetes" and args.image:
        p.error("--image is for --install express; on Kubernetes the image is in deploy/argo/spine-seg-*.yaml")
    if args.name is not None and not args.name.strip():
        p.error("--name must not be empty")
    workflow = configure(json.loads(TEMPLATES[args.install].read_text()), args)
    json.dump(workflow, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
