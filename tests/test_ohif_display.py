"""The SEG shows correctly in OHIF v3 (current and previous minor), in a real headless Chromium.

For each case: OHIF's in-memory labelmap equals our label map voxel for voxel, the segment panel lists
our segment labels, and overlay pixels appear on the canvas over our labels (our label map, mapped through
the viewport's canvas-to-world transform) in each segment's recommended colour and go when the segmentation
is hidden. The app's default
encoding (app.yaml and SPINESEG_SEG_TYPE, as a deployment runs) is opened on every study and must be
exact on every OHIF version; every explicit encoding is opened on the demo study (462x187, frames not
byte-aligned) and must do what README's "SEG encoding" table says. So SPINESEG_SEG_TYPE=BINARY fails the
demo default case on OHIF 3.13. Needs Orthanc, node, chromium and `make ohif` (fails under CI=true
when they are missing, skips otherwise). The full table is bench/ohif_display.py.
"""
from __future__ import annotations

import os

import pytest

from browser.ohif_harness import (OHIF_VERSIONS, Case, colour_errors, dist, documented_exact, missing_tools,
                                  run_browser, verdict)
from browser.ohif_server import OhifServer
from browser.studies import STUDIES, make_study, upload, write_study_seg
from spineseg.outputs.seg_writer import ENCODINGS, SegSettings, encoding_for
from spineseg.settings import AppConfig, load_settings

# (study, encoding): "default" is what the app writes with its settings
CASES = [("demo", "default"), *[("demo", e) for e in ENCODINGS], *[(n, "default") for n in STUDIES if n != "demo"]]


def default_settings(tmp) -> SegSettings:
    return AppConfig.from_settings(tmp, tmp, None, load_settings(), os.environ).seg


def require_browser():
    missing = missing_tools()
    if missing:
        message = "the OHIF browser test needs " + "; ".join(missing) + " (.ci/run installs them; locally: make ohif)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def displayed(tmp_path_factory, orthanc):
    """{(version, study, encoding): (Case, verdict, encoding written)}: each distinct SEG opened once per version
    in one Chromium, against one Orthanc."""
    require_browser()
    tmp = tmp_path_factory.mktemp("ohif_display")
    studies, segs, keys = {}, {}, {}
    for name, enc in CASES:
        if name not in studies:
            studies[name] = make_study(name, tmp / "studies")
            upload(orthanc, studies[name].files)
        study = studies[name]
        settings = default_settings(tmp) if enc == "default" else SegSettings(segmentation_type=enc)
        written, _ = encoding_for(settings, *study.matrix)
        keys[(name, enc)] = (name, written)
        if (name, written) in segs:          # the default is one of the explicit encodings
            continue
        settings.series_number = 900 + len(segs)
        path, written, names = write_study_seg(study, settings, tmp / f"{name}-{written}.dcm")
        upload(orthanc, [path])
        segs[(name, written)] = (study, settings.series_number, names)
    out = {}
    for version in OHIF_VERSIONS:
        server = OhifServer(dist(version), f"http://127.0.0.1:{orthanc.http_port}", orthanc.USER,
                            orthanc.PASSWORD).start()
        try:
            run = [Case(f"{version}-{n}-{w}", s.uid, number, s.expected(), names, s.middle_sop(),
                        tmp / "screenshots" / version / f"{n}-{w}") for (n, w), (s, number, names) in segs.items()]
            run_browser(server.url, run, tmp / f"browser-{version}", total_s=420)
        finally:
            server.stop()
        for key, case in zip(segs, run):
            out[(version, *key)] = (case, verdict(case), key[1])
    return {(v, n, e): out[(v, *keys[(n, e)])] for v in OHIF_VERSIONS for n, e in CASES}


@pytest.mark.parametrize("version", OHIF_VERSIONS)
@pytest.mark.parametrize("study,encoding", CASES)
def test_ohif_shows_the_seg_as_documented(displayed, version, study, encoding):
    case, v, written = displayed[(version, study, encoding)]
    rows, columns = next(iter(case.expected.values())).shape
    where = f"{written} SEG, screenshots in {case.out}"
    if encoding == "default":
        assert v["verdict"] == "exact", f"OHIF {version} does not show the default SEG exactly: {v}; {where}"
    elif not documented_exact(version, written, rows, columns):
        assert v["verdict"] != "exact", f"README says OHIF {version} does not show this exactly, it did; {where}"
        return
    assert v["verdict"] == "exact", f"OHIF {version} {study}: {v}; {where}"
    # the segment list shows every segment label we wrote
    missing = [label for label in case.names.values() if label not in case.result.get("panelText", "")]
    assert missing == [], f"segment panel lacks {missing}; {where}"
    # each segment is drawn in its recommended colour (a shifted colour table names the wrong level)
    assert colour_errors(case) == [], f"{colour_errors(case)[:3]}; {where}"
    # overlay pixels appear over our labels on the canvas, and go when the segmentation is hidden
    c = case.result["canvas"]
    assert "error" not in c and c["onLabel"] > 100, f"too few labelled pixels in view: {c}; {where}"
    assert c["onLabelChanged"] >= 0.95 * c["onLabel"], f"overlay missing over our labels: {c}; {where}"
    assert c["changedOnLabel"] >= 0.95 * c["changed"], f"overlay drawn where we have no label: {c}; {where}"
