"""End to end, DICOM in -> SEG out: spine-seg versus the pipeline a user would otherwise script.

(a) spine-seg:  python app -i DICOM -o OUT
(b) reference:  dcm2niix (DICOM -> NIfTI) -> totalspineseg (both steps, --no-stalling, CPU)
                -> itkimage2segimage (dcmqi, NIfTI labels -> DICOM SEG)

Both use the same weights (the bundled models, or -m). Peak memory is the largest total resident
memory of the whole process tree (sampled every 50 ms with psutil), so worker processes count.

    python -m bench.bench_e2e [--runs 3] [--study small|clinical|both]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from spineseg.outputs.codes_table import STRUCTURES
from tools import phantom as P
from tools import reference_cli as R

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

STUDIES = {
    # name: (seed, fov, slice thickness mm, pixel mm, in-plane matrix or None for the spine's extent)
    "small": (5600, "lumbar", 2.0, 1.0, None),
    "clinical": (5601, "lumbar", 3.5, 0.6, 512),  # sagittal lumbar T2-like: 21 slices of 512x512 px
}


def run_measured(cmd: list[str], **kw) -> tuple[float, float, int]:
    """(wall seconds, peak MB of the process tree, exit code)."""
    peak = 0.0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    done = threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.05)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    done.set()
    t.join()
    return time.perf_counter() - t0, peak, rc


def dcmqi_metadata(labels: list[int], path: Path) -> Path:
    attrs = [[{
        "labelID": v, "SegmentLabel": STRUCTURES[v]["name"], "SegmentDescription": STRUCTURES[v]["name"],
        "SegmentAlgorithmType": "AUTOMATIC", "SegmentAlgorithmName": "TotalSpineSeg",
        "SegmentedPropertyCategoryCodeSequence": dict(zip(("CodeValue", "CodingSchemeDesignator", "CodeMeaning"),
                                                          STRUCTURES[v]["category"])),
        "SegmentedPropertyTypeCodeSequence": dict(zip(("CodeValue", "CodingSchemeDesignator", "CodeMeaning"),
                                                      STRUCTURES[v]["type"])),
        "recommendedDisplayRGBValue": list(STRUCTURES[v]["rgb"])} for v in labels]]
    meta = {"ContentCreatorName": "REFERENCE", "ClinicalTrialSeriesID": "1", "ClinicalTrialTimePointID": "1",
            "SeriesDescription": "TotalSpineSeg reference", "SeriesNumber": "300", "InstanceNumber": "1",
            "BodyPartExamined": "SPINE", "segmentAttributes": attrs}
    path.write_text(json.dumps(meta))
    return path


def reference_pipeline(dicom: Path, work: Path, models: Path) -> dict:
    """The scripted reference; returns per-step wall time and peak memory."""
    import nibabel as nib
    steps = {}
    (work / "nii").mkdir(parents=True)
    steps["dcm2niix"] = run_measured([str(BIN / "dcm2niix"), "-z", "y", "-f", "case", "-o", str(work / "nii"),
                                      str(dicom)])
    data_dir = R.prepare_data_dir(models, work / "data")
    steps["totalspineseg"] = run_measured(R.command(work / "nii" / "case.nii.gz", work / "tss", data_dir))
    seg_nii = work / "tss" / "step2_output" / "case.nii.gz"
    labels = sorted(int(v) for v in np.unique(np.asanyarray(nib.load(seg_nii).dataobj)) if v)
    meta = dcmqi_metadata(labels, work / "meta.json")
    steps["itkimage2segimage"] = run_measured([str(BIN / "itkimage2segimage"), "--inputImageList", str(seg_nii),
                                               "--inputDICOMDirectory", str(dicom), "--outputDICOM",
                                               str(work / "seg.dcm"), "--inputMetadata", str(meta)])
    return steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--study", choices=["small", "clinical", "both"], default="both")
    ap.add_argument("-m", "--models", type=Path, default=ROOT / "models")
    a = ap.parse_args(argv)
    names = list(STUDIES) if a.study == "both" else [a.study]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in names:
            seed, fov, thick, pixel, matrix = STUDIES[name]
            case = P.write_case(seed, tmp / name, fov=fov, slice_thickness=thick, pixel=pixel, matrix=matrix)
            dicom = tmp / name / "dicom"
            shape = case["geometry"].shape
            ours, ref, breakdown = [], [], None
            for r in range(a.runs):
                out = tmp / f"{name}_ours_{r}"
                wall, peak, rc = run_measured([sys.executable, str(ROOT / "app"), "-i", str(dicom), "-o", str(out),
                                               "-m", str(a.models)])
                report = json.loads((out / "report.json").read_text())
                breakdown = report["timings_seconds"]
                ours.append((wall, peak, rc))
                steps = reference_pipeline(dicom, tmp / f"{name}_ref_{r}", a.models)
                ref.append((sum(s[0] for s in steps.values()), max(s[1] for s in steps.values()),
                            max(s[2] for s in steps.values()), steps))
                print(f"[{name} run {r + 1}] spine-seg {wall:.1f} s {peak:.0f} MB (exit {rc}); reference "
                      f"{ref[-1][0]:.1f} s {ref[-1][1]:.0f} MB (exit {ref[-1][2]}): "
                      + ", ".join(f"{k} {v[0]:.1f} s/{v[1]:.0f} MB" for k, v in steps.items()), flush=True)
            o_wall, o_peak = np.median([x[0] for x in ours]), np.median([x[1] for x in ours])
            r_wall, r_peak = np.median([x[0] for x in ref]), np.median([x[1] for x in ref])
            print(f"== {name} study {shape[0]}x{shape[1]}x{shape[2]} ({thick} mm slices, {pixel} mm pixels), "
                  f"median of {a.runs} runs")
            print(f"   spine-seg: {o_wall:.1f} s, peak {o_peak:.0f} MB")
            print(f"   reference: {r_wall:.1f} s, peak {r_peak:.0f} MB")
            print(f"   speed-up {r_wall / o_wall:.1f}x, memory ratio {r_peak / o_peak:.2f}")
            print("   spine-seg stages (last run): " + ", ".join(f"{k} {v:.2f} s" for k, v in breakdown.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
