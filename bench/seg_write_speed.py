"""Time to build and write the DICOM SEG of a clinical-size series with ~50 segments.

A whole-spine phantom is rendered on a sagittal grid of 512x512 pixels x 20 slices (3.5 mm), so every
vertebra, disc, the cord, canal and sacrum (50 structures) are present; every encoding is timed (AUTO is
BINARY here: 512x512 frames are byte-aligned).

    python -m bench.seg_write_speed [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from spineseg.input.dicom_input import load_volume, scan_dicom
from spineseg.outputs.seg_writer import ENCODINGS, SegSettings, build_seg, write_seg
from tests.helpers import fake_model_description
from tools import phantom as P


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ph = P.make_phantom(5300, "whole")
        length = ph.fov_z[0] - ph.fov_z[1]
        geom = P.series_geometry(ph, "sagittal", 3.5, length / 512, lr_width=70, ap_width=length)
        geom = P.SeriesGeometry(geom.affine, (20, 512, 512), geom.row_dir, geom.col_dir, geom.spacing)
        P.write_series(P.render_series(ph, geometry=geom), tmp)
        vol = load_volume(scan_dicom(tmp / "dicom").series[0])
        _, labels = P.render(ph, vol.affine, vol.array.shape)      # the truth in the loaded series' slice order
        n_segments = len(np.unique(labels)) - 1
        print(f"series {vol.array.shape[0]}x{vol.array.shape[1]}x{vol.array.shape[2]}, {n_segments} segments")
        for seg_type in ENCODINGS:
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                seg, _ = build_seg(vol.datasets, labels, fake_model_description(), SegSettings(segmentation_type=seg_type))
                path = write_seg(seg, tmp / f"{seg_type}.dcm")
                times.append(time.perf_counter() - t0)
            print(f"{seg_type:10s} build+write: best {min(times):.2f} s, median {np.median(times):.2f} s, "
                  f"{path.stat().st_size / 1e6:.1f} MB, {int(seg.NumberOfFrames)} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
