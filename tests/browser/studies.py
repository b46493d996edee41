"""The studies the OHIF display test opens, their SEGs in each encoding, and upload to the PACS.

Each study is a phantom (tools/phantom.py) whose ground truth is rendered on the loader's own grid, so the
expected label map of every source instance is known exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from tests.helpers import fake_model_description
from tools import phantom as P
from spineseg.outputs.codes_table import STRUCTURES
from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.outputs.seg_writer import SegSettings, build_seg, encoding_for, write_seg

# name -> phantom.write_case arguments. "demo" is `make demo`'s study (462x187 frames, not byte-aligned);
# the others are small, to keep the browser test short.
STUDIES = {
    "demo": dict(seed=7, fov="lumbar", slice_thickness=3.5, pixel=0.6),
    "aligned": dict(seed=5301, fov="lumbar", slice_thickness=4.0, pixel=2.0, matrix=96),        # 96x96
    "axial": dict(seed=5302, fov="lumbar", plane="axial", slice_thickness=6.0, pixel=1.7),      # 66x43
    "oblique": dict(seed=5303, fov="lumbar", slice_thickness=4.0, pixel=1.3, oblique_deg=17),  # 223x99
}


@dataclass
class Study:
    name: str
    volume: object
    labels: np.ndarray
    files: list

    @property
    def matrix(self) -> tuple[int, int]:
        return int(self.volume.datasets[0].Rows), int(self.volume.datasets[0].Columns)

    @property
    def uid(self) -> str:
        return str(self.volume.datasets[0].StudyInstanceUID)

    def expected(self) -> dict:
        return {str(ds.SOPInstanceUID): self.labels[i] for i, ds in enumerate(self.volume.datasets)}

    def middle_sop(self) -> str:
        """The source instance with the most labelled pixels: where the overlay is checked on the canvas."""
        return str(self.volume.datasets[int(np.argmax((self.labels > 0).sum(axis=(1, 2))))].SOPInstanceUID)


def make_study(name: str, root: Path) -> Study:
    kw = dict(STUDIES[name])
    case = P.write_case(kw.pop("seed"), root / name, **kw)
    vol = load_volume(scan_dicom(root / name / "dicom").series[0])
    _, labels = P.render(case["phantom"], vol.affine, vol.array.shape)
    return Study(name, vol, labels, sorted((root / name / "dicom").iterdir()))


def write_study_seg(study: Study, settings: SegSettings, path: Path) -> tuple[Path, str, dict]:
    """(SEG file, encoding written, {label value: segment label})."""
    seg, present = build_seg(study.volume.datasets, study.labels, fake_model_description(), settings)
    encoding, _ = encoding_for(settings, *study.matrix)
    assert str(seg.SegmentationType) == encoding
    return write_seg(seg, path), encoding, {v: STRUCTURES[v]["name"] for v in present}


def upload(orthanc, paths) -> None:
    """Store files in Orthanc through its REST API (loopback, with the test credentials)."""
    with requests.Session() as s:
        s.auth = (orthanc.USER, orthanc.PASSWORD)
        for p in paths:
            s.post(f"http://127.0.0.1:{orthanc.http_port}/instances", data=Path(p).read_bytes(),
                   timeout=30).raise_for_status()
