"""The measurement table (issue 26, item 2): the SR's values as a picture, the second image of the review
Secondary Capture series, for the PACS viewers that show no SR. Its cells are checked against the values read
back from the written SR and measurements JSON (the renderer returns the text of every cell, and the pixels
written are shown to be the pixels of that rendering), without reading the pixels as text."""
import json
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from PIL import Image

from conftest import run_dciodvfy
from helpers import fake_model_description
from spineseg import labels as L
from spineseg.inference.two_step import SegmentationResult
from spineseg.outputs.codes_table import STRUCTURES
from spineseg.outputs.measurement_table import (CUT_NOTE, NOT_MEASURED, VALUE_COLUMNS, render_measurement_table,
                                                table_rows)
from spineseg.outputs.measurements import LevelMeasurements, measure_levels
from spineseg.outputs.seg_writer import derived_uid
from spineseg.outputs.sr_writer import disc_level_site
from spineseg.pipeline import AppConfig, review_footer, write_results
from spineseg.report import RunReport
from spineseg.settings import OutputSettings
from test_reading_aids import lumbar_series

HEIGHTS = {"255549009": "height_anterior_mm", "26216008": "height_centre_mm", "255551008": "height_posterior_mm"}
FINDING, FINDING_SITE, MODIFIER = "121071", "363698007", "106233006"
VOLUME, HEIGHT, AREA = "118565006", "121207", "42798000"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """The demo study's grid (3.5 mm slices, 0.6 mm pixels) and its true labels."""
    return lumbar_series(tmp_path_factory.mktemp("table"), 7, 3.5, 0.6)


def write(volume, labels, out, kind="phantom", **outputs):
    out.mkdir()
    report = RunReport(out)
    models = SimpleNamespace(describe=lambda: fake_model_description(kind), kind=kind)
    cfg = AppConfig(out, out, outputs=OutputSettings(**outputs))
    result = SegmentationResult(labels)
    return write_results(volume, result, models, cfg, report, "series"), report, review_footer(result, models)


@pytest.fixture(scope="module")
def written(series, tmp_path_factory):
    volume, labels = series
    out = tmp_path_factory.mktemp("written") / "out"
    entry, report, footer = write(volume, labels, out)
    return out, entry, report, footer


def sr_values(sr_path) -> dict[tuple[str, str], list[float]]:
    """Every NUM of the written SR, keyed (level, LevelMeasurements field), read from the content tree whatever
    its groups' layout: the structure is the group's Finding (DCM 121071), the level of a canal or cord section
    its Finding Site, the height's place the site's topographical modifier, on the NUM or on its group. A canal
    and a cord area at one disc share the concept, site and modifier: they are keyed (level, "area"), both
    values listed."""
    structure_of = {entry["type"][0]: value for value, entry in STRUCTURES.items()}
    disc_at_site = {disc_level_site(d).value: d for d in L.DISCS}
    values: dict[tuple[str, str], list[float]] = {}

    def codes_of(items, context):
        found = dict(context)
        for item in items:
            concept = item.ConceptNameCodeSequence[0].CodeValue
            if item.ValueType == "CODE" and concept in (FINDING, FINDING_SITE):
                found[concept] = item.ConceptCodeSequence[0].CodeValue
                for child in item.get("ContentSequence", []):
                    if child.ConceptNameCodeSequence[0].CodeValue == MODIFIER:
                        found[MODIFIER] = child.ConceptCodeSequence[0].CodeValue
        return found

    def walk(items, context):
        context = codes_of(items, context)
        for item in items:
            if item.ValueType == "NUM":
                at = codes_of(item.get("ContentSequence", []), context)
                name = item.ConceptNameCodeSequence[0].CodeValue
                number = float(item.MeasuredValueSequence[0].NumericValue)
                if name in (VOLUME, HEIGHT):
                    level = L.level_name(structure_of[at[FINDING]])
                    field = "volume_mm3" if name == VOLUME else HEIGHTS[at[MODIFIER]]
                else:
                    level = L.level_name(disc_at_site[at[FINDING_SITE]])
                    field = "area" if name == AREA else "canal_ap_diameter_mm"
                values.setdefault((level, field), []).append(number)
            elif item.ValueType == "CONTAINER":
                walk(item.get("ContentSequence", []), context)

    walk(pydicom.dcmread(sr_path).ContentSequence, {})
    return {key: sorted(v) for key, v in values.items()}


def cell_values(rows: list[list[str]]) -> dict[tuple[str, str], float]:
    """The printed values, keyed (level, LevelMeasurements field)."""
    return {(row[0], name): float(row[1 + i]) for row in rows for i, (name, _, _) in enumerate(VALUE_COLUMNS)
            if row[1 + i] != NOT_MEASURED}


def as_sr_keys(values: dict[tuple[str, str], float]) -> dict[tuple[str, str], list[float]]:
    """``values`` keyed as :func:`sr_values` keys the SR's."""
    out: dict[tuple[str, str], list[float]] = {}
    for (level, field), number in values.items():
        out.setdefault((level, "area" if field.endswith("area_mm2") else field), []).append(number)
    return {key: sorted(v) for key, v in out.items()}


def test_the_table_is_the_second_image_of_the_review_series(written):
    out, entry, report, _ = written
    assert [r["kind"] for r in entry["dicom_outputs"]] == ["seg", "sr", "sc", "sc_table"]
    review = pydicom.dcmread(out / entry["outputs"]["review_sc"])
    table = pydicom.dcmread(out / entry["outputs"]["measurements_table_sc"])
    seg = pydicom.dcmread(out / entry["outputs"]["seg"], stop_before_pixels=True)
    assert table.SeriesInstanceUID == review.SeriesInstanceUID and table.SeriesNumber == review.SeriesNumber
    assert (review.InstanceNumber, table.InstanceNumber) == (1, 2)
    assert table.SOPInstanceUID == derived_uid("measurement-table-instance", str(seg.SOPInstanceUID))
    assert table.SOPInstanceUID != review.SOPInstanceUID
    for keyword in ("SeriesDescription", "StudyInstanceUID", "PatientID", "SOPClassUID", "Modality",
                    "BodyPartExamined", "SourceImageSequence"):
        assert table.get(keyword) == review.get(keyword), keyword
    assert table.BurnedInAnnotation == "YES" and list(table.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert table.PatientOrientation is None or list(table.PatientOrientation) == []
    png = np.asarray(Image.open(out / entry["outputs"]["measurements_table_png"]))
    assert np.array_equal(table.pixel_array, png)
    record = entry["dicom_outputs"][-1]
    assert record == {"kind": "sc_table", "file": entry["outputs"]["measurements_table_sc"],
                      "sop_class_uid": table.SOPClassUID, "sop_instance_uid": table.SOPInstanceUID,
                      "series_instance_uid": table.SeriesInstanceUID}
    assert set(report.outputs) == set(entry["outputs"].values())
    errors, _ = run_dciodvfy(out / entry["outputs"]["measurements_table_sc"])
    assert errors == []


def test_the_values_printed_are_the_srs_and_the_jsons(series, written):
    out, entry, _, footer = written
    volume, labels = series
    levels = measure_levels(labels, volume.affine)
    table = render_measurement_table(levels, phantom=True, footer=footer)
    # the cells below are those of the written picture
    assert np.array_equal(table.rgb, np.asarray(Image.open(out / entry["outputs"]["measurements_table_png"])))
    json_rows = json.loads((out / entry["outputs"]["measurements_json"]).read_text())["levels"]
    assert [row[0] for row in table.rows] == [r["level"] for r in json_rows]       # head to foot, every structure
    printed = cell_values(table.rows)
    from_json = {(r["level"], name): r[name] for r in json_rows for name, _, _ in VALUE_COLUMNS
                 if r[name] is not None}
    assert len(printed) >= 30 and printed == from_json
    assert as_sr_keys(printed) == sr_values(out / entry["outputs"]["measurements_sr"])
    # and printed with the SR's two decimals; a structure cut by the field of view says so
    assert all(c == NOT_MEASURED or len(c.split(".")[1]) == 2 for row in table.rows for c in row[1:-1])
    cut = {r["level"] for r in json_rows if r["cut_by_field_of_view"]}
    assert cut and {row[0] for row in table.rows if row[-1] == CUT_NOTE} == cut


def test_text_is_drawn_in_every_cell_and_the_banner_only_when_phantom(series):
    volume, labels = series
    levels = measure_levels(labels, volume.affine)
    footer = ["Levels anchored on L5-S1, confidence high", "derived image, not for primary diagnosis"]
    table = render_measurement_table(levels, phantom=True, footer=footer)
    rgb = table.rgb.astype(int)
    for (r, c), (x0, y0, x1, y1) in table.boxes.items():
        bright = (rgb[y0:y1, x0:x1].min(axis=2) > 150).sum()           # white or grey text on the dark ground
        assert (bright > 10) == bool(table.rows[r][c]), (table.rows[r][c], bright)
    red = lambda img: ((img[5:15, :, 0] > 150) & (img[5:15, :, 1] < 60)).mean()     # noqa: E731
    assert red(rgb) > 0.5
    plain = render_measurement_table(levels, phantom=False, footer=footer)
    assert red(plain.rgb.astype(int)) == 0
    assert plain.rows == table.rows and plain.rgb.shape[0] < table.rgb.shape[0]


def test_a_whole_spine_stays_one_readable_image():
    """About 50 rows (C1 to the sacrum, every disc): one taller image, every row inside it, text >= 18 px."""
    levels = [LevelMeasurements(v, L.level_name(v), volume_mm3=1234.567, height_centre_mm=9.876)
              for v in L.ANATOMICAL_SEQUENCE]
    table = render_measurement_table(levels, phantom=False, footer=["Levels anchored on C2-C3, confidence high"])
    h, w = table.rgb.shape[:2]
    assert len(table.rows) == len(levels) >= 49
    assert max(y1 for _, _, _, y1 in table.boxes.values()) < h and max(x1 for x0, _, x1, _ in table.boxes.values()) <= w
    assert min(y1 - y0 for _, y0, _, y1 in table.boxes.values()) >= 30          # rows of 20 px text
    assert table.rows[0][:3] == ["C1", "1234.57", NOT_MEASURED] and table.rows[0][3] == "9.88"
    assert table_rows(levels) == table.rows


@pytest.mark.parametrize("outputs", [{"measurements": False}, {"review_image": False}])
def test_no_table_without_both_the_measurements_and_the_review_image(series, tmp_path, outputs):
    volume, labels = series
    entry, report, _ = write(volume, labels, tmp_path / "out", **outputs)
    assert "sc_table" not in [r["kind"] for r in entry["dicom_outputs"]]
    assert not any("measurements_table" in name for name in entry["outputs"].values())
    assert not list((tmp_path / "out").glob("*measurements_table*"))
