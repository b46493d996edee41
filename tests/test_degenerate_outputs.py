"""Every writer on segmentations with little or nothing to measure (issue 24, item 4): one structure only, only
the cord and canal, everything cut by the field of view, labels in a single slice. Each still gives a valid SEG,
review picture (PNG and Secondary Capture), label map and measurements JSON; the measurement SR is written only
where there is a measurement to hold, and the report says why when it is not. The writers are called on
synthetic label maps over a small phantom series (no network runs)."""
import json
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from conftest import run_dciodvfy
from helpers import fake_model_description
from spineseg.inference.two_step import SegmentationResult
from spineseg.outputs.measurements import measure_levels
from spineseg.outputs.sr_writer import build_measurement_sr
from spineseg.pipeline import AppConfig, write_results
from spineseg.report import RunReport
from test_reading_aids import lumbar_series

MEASURED = ("volume_mm3", "height_anterior_mm", "height_centre_mm", "height_posterior_mm", "canal_area_mm2",
            "canal_ap_diameter_mm", "cord_area_mm2")
L3_L4 = 94


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A small lumbar sagittal series (4 mm slices, 2 mm pixels) and its true labels on the loaded grid."""
    return lumbar_series(tmp_path_factory.mktemp("degenerate"), 5205, 4.0, 2.0)


def only(truth, values):
    return np.where(np.isin(truth, values), truth, 0).astype(np.uint8)


def one_slice(truth):
    labels = np.zeros_like(truth)
    labels[truth.shape[0] // 2] = truth[truth.shape[0] // 2]
    return labels


def all_cut(truth):
    """Vertebrae, discs and sacrum, each reaching the first slice (so each is cut by the field of view), and no
    canal to tell anterior from posterior: nothing can be measured."""
    labels = only(truth, [v for v in np.unique(truth) if v > 2])
    for value in np.unique(labels)[1:]:
        labels[0][np.any(labels == value, axis=0)] = value
    return labels


CASES = {
    "one disc": lambda t: only(t, [L3_L4]),
    "cord and canal only": lambda t: only(t, [1, 2]),
    "everything cut by the field of view": all_cut,
    "labels in one slice": one_slice,
}


def write(volume, labels, out):
    """The pipeline's writers for one series, as a run calls them (phantom weights, every output on)."""
    out.mkdir()
    report = RunReport(out)
    models = SimpleNamespace(describe=fake_model_description, kind="phantom")
    entry = write_results(volume, SegmentationResult(labels), models, AppConfig(out, out), report, "series")
    return entry, report


@pytest.mark.parametrize("case", list(CASES))
def test_every_writer_copes_and_the_sr_is_written_only_with_something_to_report(series, tmp_path, case):
    volume, truth = series
    labels = CASES[case](truth)
    entry, report = write(volume, labels, tmp_path / "out")
    outputs = entry["outputs"]
    for key in ("seg", "label_map", "measurements_json", "review_png", "review_sc"):
        assert (tmp_path / "out" / outputs[key]).is_file(), key
    for key in ("seg", "review_sc"):
        assert run_dciodvfy(tmp_path / "out" / outputs[key])[0] == [], key
    table = json.loads((tmp_path / "out" / outputs["measurements_json"]).read_text())["levels"]
    assert table == entry["measurements"]
    assert [row["label"] for row in table] == [m.label for m in measure_levels(labels, volume.affine)]
    measured = any(row[k] is not None for row in table for k in MEASURED)
    assert ("measurements_sr" in outputs) == measured
    # the measurement table (second image of the review series) only beside an SR
    assert [r["kind"] for r in entry["dicom_outputs"]] == ["seg", *(["sr"] if measured else []), "sc",
                                                           *(["sc_table"] if measured else [])]
    assert ("measurements_table_sc" in outputs) == ("measurements_table_png" in outputs) == measured
    warned = [w for w in report.warnings if "no measurement SR written" in w]
    if measured:
        assert not warned
        sr = tmp_path / "out" / outputs["measurements_sr"]
        assert run_dciodvfy(sr)[0] == []
        assert pydicom.dcmread(sr).CurrentRequestedProcedureEvidenceSequence
        assert run_dciodvfy(tmp_path / "out" / outputs["measurements_table_sc"])[0] == []
    else:
        assert len(warned) == 1 and warned[0].startswith("series 5: nothing could be measured")
    assert set(report.outputs) == set(outputs.values())


def test_what_each_degenerate_case_measures(series):
    volume, truth = series
    # one disc and nothing else: its volume (no canal, so no antero-posterior direction for heights)
    (disc,) = measure_levels(CASES["one disc"](truth), volume.affine)
    assert disc.label == L3_L4 and disc.volume_mm3 > 0 and disc.height_centre_mm is None
    assert measure_levels(CASES["cord and canal only"](truth), volume.affine) == []
    cut = measure_levels(all_cut(truth), volume.affine)
    assert cut and all(m.cut_by_field_of_view and all(getattr(m, k) is None for k in MEASURED) for m in cut)
    # a disc in one sagittal slice shows no tilt: its heights would measure the slice (4 mm), so none is given
    flat = [m for m in measure_levels(one_slice(truth), volume.affine) if 63 <= m.label <= 100]
    assert flat and all(m.height_centre_mm is None and m.canal_area_mm2 is None and m.volume_mm3 for m in flat)
    assert all(any("single slice" in n for n in m.notes) for m in flat)


def test_the_sr_builder_makes_no_sr_without_a_measurement(series):
    """highdicom refuses a TID 1500 report without a measurement group ("Argument 'imaging_measurements' must
    contain at least one item"), which ended a real run in INTERNAL_ERROR after its SEG was written."""
    from spineseg.outputs.seg_writer import build_seg
    volume, truth = series
    labels = all_cut(truth)
    seg, _ = build_seg(volume.datasets, labels, fake_model_description())
    assert build_measurement_sr(seg, volume.datasets, [], True, volume) is None
    assert build_measurement_sr(seg, volume.datasets, measure_levels(labels, volume.affine), True, volume) is None


def test_the_report_of_a_run_without_measurements_says_why_and_succeeds(series, tmp_path):
    volume, truth = series
    _, report = write(volume, CASES["cord and canal only"](truth), tmp_path / "out")
    assert any("no vertebra, disc or sacrum segmented" in w for w in report.warnings)
    assert report.finish() == 0
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["status"] == "succeeded" and written["error"] is None
