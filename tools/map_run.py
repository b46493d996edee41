"""The MAP run as a hospital runs it (README, Deployment step 3): the `docker run` options, the service's uid and
its output folder. The container tests (tests/container_helpers.run_map) and the image benches
(bench/official_image.run_in_image) both build their runs from here, so they run the image the same way.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_YAML = yaml.safe_load((ROOT / "app.yaml").read_text())
# a uid the image does not know, as OpenShift-style hosts assign; a non-root runner uses its own
UID = 4242 if os.geteuid() == 0 else os.getuid()
INPUT_PATH, OUTPUT_PATH = "/var/holoscan/input", "/var/holoscan/output"


def owned_output(path: Path) -> Path:
    """``path`` made, and given to the service's uid when we are root (the host gives it its output folder)."""
    path.mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(path, UID, UID)
    return path


def run_options(image: str, study: Path, out: Path, *, network: str = "none", env_names=(), cpus=None,
                memory=None, entrypoint: str | None = None, input_path: str = INPUT_PATH,
                output_path: str = OUTPUT_PATH) -> list[str]:
    """What follows `docker run` (and its own flags, such as ``-d --name``) up to the image, the image last: non-root
    uid, read-only root with a tmpfs at /tmp, app.yaml's cpu and memory unless given, the study read-only and the
    output folder mounted, no network unless given. ``env_names`` reach the container by name only, so their values
    come from the `docker` process's environment and never stand on a command line; ``entrypoint`` replaces the
    image's (its arguments go after the image)."""
    resources = APP_YAML["resources"]
    memory = str(memory or resources["memory"]).replace("Gi", "g")
    return ["--network", network, "--user", f"{UID}:{UID}", "--read-only", "--tmpfs", "/tmp:rw,size=512m",
            "--cpus", str(cpus or resources["cpu"]), "--memory", memory,
            "-v", f"{study}:{input_path}:ro", "-v", f"{out}:{output_path}",
            *[a for name in env_names for a in ("-e", name)],
            *(["--entrypoint", entrypoint] if entrypoint else []), image]
