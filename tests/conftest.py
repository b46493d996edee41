"""Shared fixtures: phantom studies, the bundled models, the real data in ../shared (when present)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

SHARED_DATA = ROOT.parent / "shared" / "data"
REAL_T2_DICOM = SHARED_DATA / "sct_t2_dicom" / "mr"
REAL_T2_NIFTI = SHARED_DATA / "sct_testing_data" / "t2" / "t2.nii.gz"
MODELS = ROOT / "models"


def dciodvfy_path() -> str | None:
    venv_bin = Path(sys.executable).parent / "dciodvfy"
    return str(venv_bin) if venv_bin.exists() else shutil.which("dciodvfy")


def run_dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) reported by dciodvfy for one file."""
    exe = dciodvfy_path()
    if exe is None:
        pytest.fail("dciodvfy is not installed (requirements.txt installs the dicom3tools package)")
    proc = subprocess.run([exe, "-new", str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


@pytest.fixture(scope="session")
def real_t2_dicom() -> Path:
    if not REAL_T2_DICOM.is_dir():
        pytest.skip(f"real test data not found at {REAL_T2_DICOM} (it lives in ../shared/data beside the repository)")
    return REAL_T2_DICOM


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory):
    """A lumbar phantom as a 2 mm sagittal DICOM series, with its ground truth."""
    import phantom as P
    out = tmp_path_factory.mktemp("phantom_lumbar")
    case = P.write_case(5001, out, fov="lumbar", slice_thickness=2.0, pixel=1.0)
    return case


@pytest.fixture(scope="session")
def make_case(tmp_path_factory):
    """Factory: write a phantom case with the given options into a fresh folder."""
    import phantom as P

    def _make(seed: int, **kw):
        out = tmp_path_factory.mktemp(f"phantom_{seed}")
        return P.write_case(seed, out, **kw)
    return _make
