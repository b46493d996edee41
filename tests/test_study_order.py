"""A study's labels do not depend on the order its series are processed in.

Study-level numbering (a partner naming a series without a landmark, a count checked against a whole-spine
partner, stations of one Frame of Reference reconciled to one count) holds state across series: a series
segmented earlier as another's partner is reused, a renumbered station is compared again with the next one.
Whatever order the selection hands the series over in, every series must come out with the same label map and
the same numbering (confidence, anchors, warnings). Each study is segmented in its given order, reversed, and
rotated; the bundled phantom models make the label maps exact to compare.
"""
from __future__ import annotations

import numpy as np
import pytest

import phantom as P
from spineseg.pipeline import AppConfig, choose_series, get_models, scan_study, segment_study
from spineseg.report import RunReport

STUDIES = {
    # three stations of a six-lumbar spine: the lumbar one (counted from L5-S1) is renumbered to the count the
    # cervical station carries down from C2-C3
    "stations, 6 lumbar": (5203, P.STATIONS, "6-lumbar", {}),
    # the same with SPINESEG_PARTNER=always: each station's own count is also checked against its best partner,
    # which is another output here (segmented first as a partner or as an output, depending on the order)
    "stations, 6 lumbar, partner=always": (5203, P.STATIONS, "6-lumbar", {"SPINESEG_PARTNER": "always"}),
}


def outcome(segmented) -> dict:
    """series UID -> (label map bytes, numbering as the report writes it)."""
    out = {}
    for volume, result in segmented:
        n = result.numbering
        out[volume.series.series_uid] = (result.labels.tobytes(), result.labels.shape,
                                         None if n is None else (n.confidence, tuple(n.anchors),
                                                                 tuple(sorted(n.warnings))))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDIES))
def test_the_labels_do_not_depend_on_the_order_of_the_series(tmp_path, name):
    seed, specs, variant, env = STUDIES[name]
    P.write_study(seed, tmp_path / "exam", specs, variant=variant)
    cfg = AppConfig.from_settings(tmp_path / "exam", tmp_path / "out", None, {"selection": {"all_eligible": True}},
                                  env=env)
    report = RunReport(tmp_path / "out")
    scan = scan_study(cfg, report)
    chosen = choose_series(scan, cfg, report)
    assert len(chosen) >= 2
    models = get_models(cfg, report)
    orders = {"given": chosen, "reversed": chosen[::-1], "rotated": chosen[1:] + chosen[:1]}
    results = {k: outcome(segment_study(order, scan.series, models, cfg, report)) for k, order in orders.items()}
    given = results.pop("given")
    for order, got in results.items():
        assert got.keys() == given.keys()
        for uid, (labels, shape, numbering) in given.items():
            other = got[uid]
            assert other[1] == shape
            changed = int((np.frombuffer(other[0], np.uint8) != np.frombuffer(labels, np.uint8)).sum())
            assert changed == 0, f"{name}, {order}: series {uid} has {changed} voxels labelled otherwise"
            assert other[2] == numbering, f"{name}, {order}: series {uid} numbered {other[2]}, given order {numbering}"
