"""spine-seg as an installed project (pyproject.toml; make venv installs it editable): the commands it declares
load, the package edits no sys.path, and ``python app`` runs both from the checkout and from the MAP image's
layout (app/ apart, the project's wheel pip-installed) without the checkout on the path."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import spineseg
from conftest import ROOT
from tools import package_map

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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel as the MAP image gets it (tools/package_map.py builds it for the CPU context)."""
    return package_map.project_wheel(tmp_path_factory.mktemp("dist"))


def test_the_wheel_holds_the_three_packages_and_the_commands(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"spineseg", "operators", "app"}
    ours = {str(p.relative_to(ROOT)) for d in ("spineseg", "operators", "app") for p in (ROOT / d).rglob("*.py")
            if "__pycache__" not in p.parts}
    assert ours == {n for n in names if n.endswith(".py")}
    assert "spine-seg = app.__main__:run" in entry_points and "spine-seg-resend = spineseg.resend:main" in entry_points


def test_the_same_tree_gives_the_same_wheel(wheel, tmp_path):
    # dated at the last commit: a rebuild of the same tree hits Docker's layer cache
    assert package_map.project_wheel(tmp_path).read_bytes() == wheel.read_bytes()


def test_python_app_runs_from_the_checkout_and_from_the_image_layout(wheel, tmp_path):
    proc = app_version(ROOT / "app", tmp_path)
    assert proc.returncode == 0 and f"spine-seg {spineseg.__version__}" in proc.stdout, proc.stderr[-2000:]
    # /opt/holoscan/app as deploy/map/Dockerfile.cpu lays it out, beside the wheel installed as pip installs it
    # (here into a folder ahead of the checkout's editable install), with a version of its own to tell them apart
    image = tmp_path / "opt" / "holoscan"
    shutil.copytree(ROOT / "app", image / "app", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    init = site / "spineseg" / "__init__.py"
    init.write_text(init.read_text().replace(spineseg.__version__, "9.9.9-image"))
    proc = app_version(image / "app", tmp_path, site)
    assert proc.returncode == 0 and "spine-seg 9.9.9-image" in proc.stdout, proc.stderr[-2000:]
