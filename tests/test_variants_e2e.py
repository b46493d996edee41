"""Anatomical variants end to end: every label the model can produce is written, and a numbering that
the generator's truth contradicts always carries a warning (bench/variant_accuracy.py measures levels)."""
import nibabel as nib
import numpy as np
import pydicom
import pytest

import phantom as P
from conftest import run_dciodvfy
from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.errors import InputError
from spineseg.inference.two_step import SegmentationResult
from spineseg.pipeline import AppConfig, run_all
from spineseg.report import RunReport
from helpers import app_report, run_app


def level_accuracy(labels, truth) -> float:
    levels = [v for v in np.unique(truth) if v >= 11]
    right = sum(np.bincount(labels[truth == v], minlength=256).argmax() == v for v in levels)
    return right / len(levels)


def run_in_process(case, out):
    cfg = AppConfig.from_settings(case["dicom_files"][0].parent, out, None, {}, env={})
    report = RunReport(out)
    run_all(cfg, report)
    return report


@pytest.fixture(scope="module")
def six_lumbar(make_case, tmp_path_factory):
    case = make_case(5203, fov="whole", variant="6-lumbar", slice_thickness=3.0, pixel=1.2)
    out = tmp_path_factory.mktemp("six_lumbar_out")
    proc = run_app(case["dicom_files"][0].parent, out)
    report = app_report(out)
    return case, proc, report, out


def test_six_lumbar_spine_gets_L6_and_L5_L6_segments_and_a_warning(six_lumbar):
    case, proc, report, out = six_lumbar
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = report["processed"][0]
    seg = pydicom.dcmread(out / entry["outputs"]["seg"])
    segments = {s.SegmentLabel: s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence}
    assert segments["L6 vertebra"] == "73903008" and segments["L5-L6 intervertebral disc"] == "75782005"
    assert run_dciodvfy(out / entry["outputs"]["seg"])[0] == []
    numbering = entry["numbering"]
    assert numbering["lumbar_vertebrae"] == 6 and numbering["confidence"] == "low"
    assert any("6 lumbar-type vertebrae" in w and "confirm the count" in w for w in report["warnings"])
    # where the radiologist sees it: the series list and the SEG's content description
    assert seg.SeriesDescription.startswith("PHANTOM MODEL NOT FOR CLINICAL USE; CHECK LEVELS")
    assert len(seg.SeriesDescription) <= 64 and "CHECK" in seg.ContentDescription
    assert numbering["anchors"] and set(numbering["anchors"]) <= {"C2-C3", "C7-T1", "T12-L1", "L5-S1"}


@pytest.mark.parametrize("variant,fov", [("4-lumbar", "whole"), ("11-thoracic", "whole"), ("6-lumbar", "lumbar")])
def test_a_wrong_or_unusual_count_is_never_silent(make_case, tmp_path, variant, fov):
    case = make_case(5203 if fov == "whole" else 5205, fov=fov, variant=variant, slice_thickness=3.0, pixel=1.2)
    report = run_in_process(case, tmp_path / "out")
    entry = report.processed[0]
    vol = load_volume(scan_dicom(case["dicom_files"][0].parent).series[0])
    labels = np.asarray(nib.load(tmp_path / "out" / entry["outputs"]["label_map"]).dataobj)
    _, truth = P.render(case["phantom"], vol.affine, vol.array.shape)
    accuracy = level_accuracy(labels, truth)
    numbering = entry["numbering"]
    if accuracy < 0.95:
        # the numbering is wrong against the generator's truth: it must say so
        assert numbering["confidence"] == "low" and numbering["warnings"], (accuracy, numbering)
    # a spine without the usual 12 thoracic + 5 lumbar vertebrae is flagged even when numbered right
    assert numbering["warnings"], numbering
    assert all(any(w in r for r in report.warnings) for w in numbering["warnings"])   # in the report's list too


def test_a_label_outside_the_scheme_is_an_input_error_and_keeps_the_label_map(phantom_study, tmp_path, monkeypatch):
    import spineseg.pipeline as pipeline

    def fake_segment(volume, models, report, *_, **__):
        labels = np.zeros(volume.array.shape, np.uint8)
        labels[:, 10:20, 10:20] = 41
        labels[:, 30:40, 10:20] = 99                     # no TotalSpineSeg label has this value
        return SegmentationResult(labels)
    monkeypatch.setattr(pipeline, "segment", fake_segment)
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        run_in_process(phantom_study, out)
    assert err.value.code == "UNKNOWN_LABEL" and err.value.exit_code == 3
    assert "99" in err.value.message
    kept = list(out.glob("*_labels.nii.gz"))
    assert len(kept) == 1 and 99 in np.unique(np.asarray(nib.load(kept[0]).dataobj))
    assert not list(out.glob("*_seg.dcm"))
