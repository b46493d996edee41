"""The measurements reach the reader in OHIF v3 (current and previous minor), in a real headless Chromium.

For each study (the demo study, a byte-aligned and an oblique phantom) the SEG, the measurement SR and the review
Secondary Capture series (picture and measurement table) are stored in Orthanc, and a reader's steps are
replayed: double-click the SR, answer "Yes" to tracking, double-click the review series and show its table.
Checked: no error notification, page error or "Something went wrong"; OHIF's SR view places every value of the SR
(none left unloaded: a group without image coordinates used to stop the SR with an error); after tracking, OHIF's
measurement service holds every length, as its Length tool, with its value equal to the JSON's (to 0.1 mm), on
the image the SR names, its end points within one pixel of ours, and every other value as an arrow annotation
at its place with the SR's text (label, value, unit); the measurement panel lists each length's label;
the table image is shown and is not blank. Screenshots beside the test's output. Needs Orthanc, node, chromium
and `make ohif` (fails under CI=true when they are missing, skips otherwise).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from browser.ohif_harness import OHIF_VERSIONS, dist, results_by_name, run_node
from browser.ohif_server import OhifServer
from browser.studies import make_study, upload, write_study_seg
from helpers import drawn_values, image_point, reader_label
from test_ohif_display import default_settings, require_browser

STUDIES = ("demo", "aligned", "oblique")
SCRIPT = Path(__file__).parent / "browser" / "ohif_sr_check.cjs"
FIELDS = ("volume_mm3", "height_anterior_mm", "height_centre_mm", "height_posterior_mm", "canal_area_mm2",
          "canal_ap_diameter_mm", "cord_area_mm2")


def write_reading_aids(study, seg_path, out):
    """The SR and the review series (picture, table) the app writes beside ``seg_path``, and the JSON rows."""
    from spineseg.outputs.measurement_table import render_measurement_table
    from spineseg.outputs.measurements import measure_levels, measurements_table
    from spineseg.outputs.review_image import render_review
    from spineseg.outputs.sc_writer import build_review_sc, build_table_sc
    from spineseg.outputs.sr_writer import build_measurement_sr

    seg = pydicom.dcmread(seg_path)
    vol = study.volume
    levels = measure_levels(study.labels, vol.affine)
    sr = build_measurement_sr(seg, vol.datasets, levels, True, vol)
    footer = ["Numbering: phantom test study", "derived image, not for primary diagnosis"]
    rgb, plane = render_review(vol.array, study.labels, vol.affine, phantom=True, footer=footer)
    review = build_review_sc(vol, rgb, plane, str(seg.SOPInstanceUID), True)
    table = build_table_sc(vol, render_measurement_table(levels, phantom=True, footer=footer).rgb, plane,
                           str(seg.SOPInstanceUID), True)
    paths = []
    out.mkdir(parents=True, exist_ok=True)
    for name, ds in (("sr", sr), ("review", review), ("table", table)):
        paths.append(out / f"{name}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return sr, review, table, levels, measurements_table(levels), paths


@pytest.fixture(scope="module")
def opened(tmp_path_factory, orthanc):
    """{(version, study): (result, what we wrote)}: every study's SR and review series opened once per version."""
    require_browser()
    import highdicom as hd

    tmp = tmp_path_factory.mktemp("ohif_sr")
    written = {}
    for name in STUDIES:
        study = make_study(name, tmp / "studies")
        upload(orthanc, study.files)
        settings = default_settings(tmp)
        settings.series_number = 900
        seg_path, _, _ = write_study_seg(study, settings, tmp / f"{name}-seg.dcm")
        sr, review, table, levels, rows, paths = write_reading_aids(study, seg_path, tmp / name)
        upload(orthanc, [seg_path, *paths])
        drawn = drawn_values(hd.sr.srread(paths[0]))
        written[name] = {"study": study, "sr": sr, "review": review, "table": table, "levels": levels,
                         "rows": rows, "drawn": drawn}
    out = {}
    for version in OHIF_VERSIONS:
        server = OhifServer(dist(version), f"http://127.0.0.1:{orthanc.http_port}", orthanc.USER,
                            orthanc.PASSWORD).start()
        try:
            cases = []
            for name, w in written.items():
                lengths = [d for d in w["drawn"] if d["graphic"] == "POLYLINE"]
                cases.append({"name": f"{version}-{name}", "study": w["study"].uid,
                              "sr_series_number": int(w["sr"].SeriesNumber),
                              "sc_series_number": int(w["review"].SeriesNumber),
                              "table_sop": str(w["table"].SOPInstanceUID),
                              "expected_tracked": len(lengths), "panel_labels": [d["label"] for d in lengths],
                              "out": str(tmp / "screenshots" / version / name)})
            job = {"base_url": server.url, "timeouts": {"load_s": 90, "sr_s": 45, "step_s": 60},
                   "cases": cases}
            results = results_by_name(run_node(SCRIPT, job, tmp / f"browser-{version}", total_s=480),
                                      [c["name"] for c in cases], tmp)
        finally:
            server.stop()
        for name in written:
            out[(version, name)] = (results[f"{version}-{name}"], written[name],
                                    tmp / "screenshots" / version / name)
    return out


def problems(result: dict) -> list[str]:
    """Every error a reader would see or the page raised."""
    found = list(result.get("errors", []))
    found += [f"{n['type']} notification: {n['title']}: {n['message']}" for n in result.get("notifications", [])
              if n.get("type") == "error"]
    found += [f"{t['type']} toast: {t['text']}" for t in result.get("toasts", []) if t.get("type") == "error"
              or "went wrong" in t.get("text", "").lower()]
    if result.get("somethingWentWrong"):
        found.append('"Something went wrong" on the page')
    return found


@pytest.mark.parametrize("version", OHIF_VERSIONS)
@pytest.mark.parametrize("study", STUDIES)
def test_ohif_shows_every_measurement_without_an_error(opened, version, study):
    result, written, shots = opened[(version, study)]
    where = f"OHIF {version}, {study}; screenshots in {shots}"
    assert problems(result) == [], f"{problems(result)}; {where}"
    view = result["srView"]
    assert view.get("isLoaded"), f"SR not loaded: {view}; {where}"
    # the SR view places every value the SR holds, each with its label and value
    assert len(view["measurements"]) == len(written["drawn"]), where
    unplaced = [m for m in view["measurements"] if not m["loaded"] or not m["coords"]]
    assert unplaced == [], f"{len(unplaced)} values not placed, e.g. {unplaced[:2]}; {where}"
    shown = {label for m in view["measurements"] for label, _ in m["labels"]}
    assert {d["text"] for d in written["drawn"]} <= shown, where


@pytest.mark.parametrize("version", OHIF_VERSIONS)
@pytest.mark.parametrize("study", STUDIES)
def test_every_length_is_tracked_on_its_image_with_the_json_value(opened, version, study):
    result, written, shots = opened[(version, study)]
    where = f"OHIF {version}, {study}; screenshots in {shots}"
    vol = written["study"].volume
    json_values = {reader_label(m, f): row[f] for m, row in zip(written["levels"], written["rows"]) for f in FIELDS
                   if row[f] is not None}
    lengths = {d["label"]: d for d in written["drawn"] if d["graphic"] == "POLYLINE"}
    assert len(lengths) >= 25, f"too few lengths drawn as lines: {len(lengths)}; {where}"
    tracked = {m["label"]: m for m in result.get("tracked", [])}
    missing = sorted(set(lengths) - set(tracked))
    assert missing == [], f"{len(missing)} lengths not tracked, e.g. {missing[:3]}; {where}"
    spacing = np.linalg.norm(vol.affine[:3, 1:3], axis=0).min()
    normal = np.cross(vol.affine[:3, 2], vol.affine[:3, 1])
    normal = normal / np.linalg.norm(normal)
    for label, d in lengths.items():
        m = tracked[label]
        assert m["toolName"] == "Length", (label, m)
        assert abs(m["length"] - json_values[label]) <= 0.1, (label, m["length"], json_values[label], where)
        assert m["sop"] == d["sop"], (label, m["sop"], d["sop"], where)
        # OHIF's end points, in patient space, lie within one pixel of ours on that image
        ours = [image_point(vol, d["sop"], p) for p in d["points"]]
        for theirs, mine in zip(m["points"], ours):
            off = np.asarray(theirs, float) - mine
            assert np.linalg.norm(off - (off @ normal) * normal) <= spacing, (label, theirs, mine.tolist(), where)
    # the measurement panel lists every length by its label
    unlisted = [label for label in lengths if label not in result.get("panelText", "")]
    assert unlisted == [], f"panel ({result.get('panel')}) lacks {unlisted[:3]}; {where}"


@pytest.mark.parametrize("version", OHIF_VERSIONS)
@pytest.mark.parametrize("study", STUDIES)
def test_every_other_value_is_tracked_as_a_labelled_arrow_at_its_place(opened, version, study):
    """Volumes, areas and lengths too oblique to draw: after tracking, each is an arrow annotation pointing at
    where it was measured, on the SR's image, whose text is the SR's (label, value and unit)."""
    result, written, shots = opened[(version, study)]
    where = f"OHIF {version}, {study}; screenshots in {shots}"
    vol = written["study"].volume
    points = {d["text"]: d for d in written["drawn"] if d["graphic"] == "POINT"}
    assert len(points) >= 10, where
    tracked = {m["label"]: m for m in result.get("tracked", []) if m["toolName"] == "ArrowAnnotate"}
    assert sorted(tracked) == sorted(points), f"arrows {len(tracked)}, SR points {len(points)}; {where}"
    spacing = np.linalg.norm(vol.affine[:3, 1:3], axis=0).min()
    for text, d in points.items():
        m = tracked[text]
        assert m["sop"] == d["sop"], (text, where)
        tip = np.asarray(m["points"][0], float) - image_point(vol, d["sop"], d["points"][0])
        assert np.linalg.norm(tip) <= 1.5 * spacing, (text, m["points"][0], where)


@pytest.mark.parametrize("version", OHIF_VERSIONS)
def test_the_review_series_shows_the_measurement_table(opened, version):
    from PIL import Image
    result, written, shots = opened[(version, "demo")]
    where = f"OHIF {version}; screenshots in {shots}"
    table = result.get("table") or {}
    assert str(written["table"].SOPInstanceUID) in str(table.get("shown")), f"{table}; {where}"
    assert table.get("images") == 2, f"review series should hold the picture and the table: {table}; {where}"
    pixels = np.asarray(Image.open(shots / "table.png").convert("L"), float)
    # text on a dark background: many bright pixels and a wide spread, not a blank or uniform canvas
    assert pixels.std() > 20 and (pixels > 128).mean() > 0.01, f"table not drawn: {where}"
