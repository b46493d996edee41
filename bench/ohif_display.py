"""Which SEG encodings OHIF v3 displays exactly: every encoding x OHIF version x study matrix, measured in
headless Chromium (the same harness as tests/test_ohif_display.py), recorded in bench/results/ohif_display.json.

    python -m bench.ohif_display [--studies demo aligned axial oblique] [--out DIR]   (needs `make ohif`)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from spineseg.outputs.seg_writer import ENCODINGS, SegSettings
from tests.browser.ohif_harness import OHIF_VERSIONS, Case, colour_errors, dist, missing_tools, run_browser, verdict
from tests.browser.ohif_server import OhifServer
from tests.browser.studies import STUDIES, make_study, upload, write_study_seg
from tests.conftest import OrthancServer

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--studies", nargs="+", default=list(STUDIES))
    ap.add_argument("--encodings", nargs="+", default=list(ENCODINGS))
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "ohif-display")
    ap.add_argument("--record", type=Path, default=ROOT / "bench" / "results" / "ohif_display.json")
    a = ap.parse_args(argv)
    if missing_tools():
        print("missing:", "; ".join(missing_tools()))
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        orthanc = OrthancServer(tmp / "orthanc").start()
        try:
            cases, meta = [], {}
            for name in a.studies:
                study = make_study(name, tmp / "studies")
                upload(orthanc, study.files)
                for k, enc in enumerate(a.encodings):
                    number = 900 + k
                    path, written, names = write_study_seg(
                        study, SegSettings(segmentation_type=enc, series_number=number), tmp / f"{name}-{enc}.dcm")
                    upload(orthanc, [path])
                    meta[(name, enc)] = (study, number, names, path.stat().st_size)
            for version in OHIF_VERSIONS:
                server = OhifServer(dist(version), f"http://127.0.0.1:{orthanc.http_port}", orthanc.USER,
                                    orthanc.PASSWORD).start()
                try:
                    cases = [Case(f"{version}-{n}-{e}", s.uid, num, s.expected(), names, s.middle_sop(),
                                  a.out / version / f"{n}-{e}") for (n, e), (s, num, names, _) in meta.items()]
                    t0 = time.monotonic()
                    run_browser(server.url, cases, tmp / f"browser-{version}", total_s=1800)
                    print(f"OHIF {version}: {len(cases)} cases in {time.monotonic() - t0:.0f} s")
                finally:
                    server.stop()
                for ((n, e), (s, _, _, size)), c in zip(meta.items(), cases):
                    v = verdict(c)
                    rows.append({"ohif": version, "study": n, "matrix": "x".join(map(str, s.matrix)),
                                 "byte_aligned": s.matrix[0] * s.matrix[1] % 8 == 0, "encoding": e,
                                 "seg_bytes": size, "verdict": v["verdict"],
                                 "mismatched_voxels": v.get("mismatched_voxels"), "voxels": v.get("voxels"),
                                 "canvas": c.result.get("canvas"), "problems": v.get("problems"),
                                 "colour_errors": colour_errors(c) if c.result.get("segments") else None,
                                 "screenshots": str(c.out)})
                    print(f"  {n:8s} {rows[-1]['matrix']:8s} {e:10s} {v['verdict']:9s} "
                          f"{v.get('mismatched_voxels')} / {v.get('voxels')} colours wrong: "
                          f"{len(rows[-1]['colour_errors'] or [])} {(v.get('problems') or [''])[0][:120]}", flush=True)
        finally:
            orthanc.stop()
    a.record.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
