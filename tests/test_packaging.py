"""spine-seg as an installed project (pyproject.toml; make venv installs it editable): the commands it declares
load, the package edits no sys.path, and ``python app`` runs both from the checkout and from the MAP image's
layout (app/ apart, spineseg/ and operators/ on PYTHONPATH) without the checkout on the path."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import spineseg
from conftest import ROOT

PATH_EDIT = re.compile(r"sys\.path(\.insert|\.append|\[:0\]\s*=|\s*=)")


def test_the_package_edits_no_sys_path():
    edits = [f"{p.relative_to(ROOT)}:{n}" for d in ("spineseg", "app", "operators") for p in (ROOT / d).rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1) if PATH_EDIT.search(line)]
    assert edits == []


def test_the_installed_project_is_this_checkout_with_its_commands():
    assert metadata.version("spine-seg") == spineseg.__version__
    assert Path(spineseg.__file__).resolve().parent == ROOT / "spineseg", "run make venv (pip install -e .)"
    commands = {ep.name: ep for ep in metadata.entry_points(group="console_scripts") if ep.dist.name == "spine-seg"}
    assert {name: ep.value for name, ep in commands.items()} == {"spine-seg": "app.__main__:run",
                                                                  "spine-seg-resend": "spineseg.resend:main"}
    assert all(callable(ep.load()) for ep in commands.values())


def app_version(app_dir: Path, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, str(app_dir), "--version"], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_python_app_runs_from_the_checkout_and_from_the_image_layout(tmp_path):
    proc = app_version(ROOT / "app", tmp_path)
    assert proc.returncode == 0 and f"spine-seg {spineseg.__version__}" in proc.stdout, proc.stderr[-2000:]
    # /opt/holoscan/app and /opt/holoscan/lib as deploy/map/Dockerfile.cpu lays them out; the installed package
    # comes after PYTHONPATH, so these copies are the ones imported
    image = tmp_path / "opt" / "holoscan"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "app", image / "app", ignore=ignore)
    for name in ("spineseg", "operators"):
        shutil.copytree(ROOT / name, image / "lib" / name, ignore=ignore)
    (image / "lib" / "spineseg" / "__init__.py").write_text(
        (ROOT / "spineseg" / "__init__.py").read_text().replace(spineseg.__version__, "9.9.9-image"))
    proc = app_version(image / "app", tmp_path, image / "lib")
    assert proc.returncode == 0 and "spine-seg 9.9.9-image" in proc.stdout, proc.stderr[-2000:]
