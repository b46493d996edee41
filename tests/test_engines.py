"""One orchestration: the Holoscan graph (what every container runs) and ``--engine plain`` pass the same data
through the same stages (spineseg.pipeline's segment_study, write_study, deliver_results), so a multi-series
study gives the same outputs from both: label maps, measurements and pictures byte for byte, the DICOM objects
equal but for their creation times and highdicom's random Dimension Organization UID, and the same report
but for its timings."""
import json

import pydicom
import pytest

import phantom as P
from helpers import run_app

pytestmark = pytest.mark.slow

# DICOM attributes that say when an object was made (or highdicom draws at random), not what it holds
VOLATILE = {"InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime", "SeriesDate",
            "SeriesTime", "DimensionOrganizationUID", "ContributionDateTime", "TimeOfSecondaryCapture"}
REPORT_VOLATILE = {"started", "finished", "wall_seconds", "timings_seconds"}


def run_engine(study, out, engine):
    proc = run_app(study, out, engine=engine, env={"SPINESEG_ALL_SERIES": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def without_volatile(ds):
    """The dataset's elements as comparable values, recursing into sequences, without VOLATILE ones."""
    out = {}
    for elem in ds:
        if elem.keyword in VOLATILE:
            continue
        if elem.VR == "SQ":
            out[elem.tag] = [without_volatile(item) for item in elem.value]
        else:
            out[elem.tag] = elem.value
    return out


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory, openvino_cache):
    root = tmp_path_factory.mktemp("engines")
    P.write_study(5203, root / "exam", P.STATIONS)
    return {engine: run_engine(root / "exam", root / engine, engine) for engine in ("plain", "holoscan")}


def test_a_three_station_study_gives_the_same_outputs_from_both_engines(both_engines):
    plain, holoscan = both_engines["plain"], both_engines["holoscan"]
    names = sorted(p.name for p in plain.iterdir() if p.name.startswith("series"))
    assert names == sorted(p.name for p in holoscan.iterdir() if p.name.startswith("series"))
    assert len([n for n in names if n.endswith("_seg.dcm")]) == 3          # one SEG per station
    for name in names:
        a, b = plain / name, holoscan / name
        if name.endswith(".dcm"):
            assert without_volatile(pydicom.dcmread(a)) == without_volatile(pydicom.dcmread(b)), name
        else:
            assert a.read_bytes() == b.read_bytes(), name


def test_both_engines_report_the_same_run(both_engines):
    reports = [json.loads((both_engines[e] / "report.json").read_text()) for e in ("plain", "holoscan")]
    for report in reports:
        assert report["status"] == "succeeded"
        for key in REPORT_VOLATILE:
            report.pop(key)
        for step in ("step1", "step2"):          # the first run may export the IR the second takes from the cache
            report["models"][step].pop("openvino_ir", None)
    assert reports[0] == reports[1]
