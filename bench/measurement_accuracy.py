"""Per-level measurements on the demo study: from the model's labels, from the ground-truth label map,
and the phantom generator's analytic values, side by side; and the time the reading aids add.

    python -m bench.measurement_accuracy [--json bench/results/measurements_demo.json]

The demo study is `make demo`'s: lumbar phantom seed 7, sagittal, 3.5 mm slices, 0.6 mm pixels.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from spineseg.inference.two_step import load_models, segment_volume
from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.outputs.measurements import measure_levels
from spineseg.outputs.review_image import render_review
from spineseg.outputs.sc_writer import build_review_sc
from spineseg.outputs.seg_writer import build_seg
from spineseg.outputs.sr_writer import build_measurement_sr
from tests.helpers import fake_model_description
from tools import phantom as P

ROOT = Path(__file__).resolve().parent.parent

FIELDS = [("disc_height_mm", "height_centre_mm"), ("body_height_mm", "height_centre_mm"),
          ("canal_area_mm2", "canal_area_mm2"), ("canal_ap_diameter_mm", "canal_ap_diameter_mm"),
          ("cord_area_mm2", "cord_area_mm2")]


def _round(value):
    return None if value is None else round(value, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    case = P.render_case(7, "lumbar", slice_thickness=3.5, pixel=0.6)     # `make demo`'s study
    ph, geom, truth_labels = case["phantom"], case["geometry"], case["labels"]
    models = load_models(ROOT / "models", "cpu")
    labels = segment_volume(case["image"], geom.affine, models).labels
    t0 = time.perf_counter()
    model = {m.label: m for m in measure_levels(labels, geom.affine)}
    t_measure = time.perf_counter() - t0
    from_truth = {m.label: m for m in measure_levels(truth_labels, geom.affine)}
    analytic = ph.true_measurements()
    rows = []
    for value, truth in analytic.items():
        for truth_key, field in FIELDS:
            if truth_key not in truth or value not in model:
                continue
            rows.append({"level": model[value].level, "quantity": truth_key, "analytic": round(truth[truth_key], 2),
                         "from_truth_labels": _round(getattr(from_truth.get(value), field, None)),
                         "from_model_labels": _round(getattr(model[value], field, None))})
    for r in rows:
        print(f"{r['level']:7s} {r['quantity']:22s} analytic {r['analytic']:8.2f}  truth-labels "
              f"{r['from_truth_labels'] if r['from_truth_labels'] is not None else '-':>8}  model "
              f"{r['from_model_labels'] if r['from_model_labels'] is not None else '-':>8}")
    # time of the other reading aids on this series (SR and review picture), as the app makes them from DICOM
    with tempfile.TemporaryDirectory() as tmp:
        P.write_series(case, Path(tmp))
        vol = load_volume(scan_dicom(Path(tmp) / "dicom").series[0])
        labels = segment_volume(vol.array, vol.affine, models).labels
        seg, _ = build_seg(vol.datasets, labels, fake_model_description(), None)
        t0 = time.perf_counter()
        build_measurement_sr(seg, vol.datasets, list(model.values()), True, vol)
        t_sr = time.perf_counter() - t0
        t0 = time.perf_counter()
        rgb, plane = render_review(vol.array, labels, vol.affine, phantom=True, footer=["x"])
        build_review_sc(vol, rgb, plane, str(seg.SOPInstanceUID), phantom=True)
        t_review = time.perf_counter() - t0
    timings = {"measure": round(t_measure, 2), "sr": round(t_sr, 2), "review_image": round(t_review, 2)}
    print("seconds:", timings)
    if a.json:
        a.json.write_text(json.dumps({"bench": "measurement_accuracy", "study": "demo (seed 7 lumbar, 3.5 mm / "
                                      "0.6 mm)", "rows": rows, "seconds": timings}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
