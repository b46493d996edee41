"""Drive OHIF v3 in headless Chromium (``ohif_check.cjs``) and compare what it decoded with our label map.

The verdict per case is one of ``exact`` (OHIF's in-memory labelmap equals ours voxel for voxel, PS3.3
C.8.20 Segmentation IOD decoded as we wrote it), ``wrong`` (it loaded, but differs) or ``not shown`` (no
segmentation, or an error). Everything is on 127.0.0.1; the node process has a hard time limit.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OHIF_ROOT = ROOT / "build" / "ohif"
NODE_MODULES = OHIF_ROOT / "node" / "node_modules"
# current and previous minor, as pinned in ohif-versions.txt; tests/browser/fetch_ohif.sh (make ohif) installs them
OHIF_VERSIONS = tuple(line.split()[0] for line in Path(__file__).with_name("ohif-versions.txt").read_text().splitlines()
                      if line.strip() and not line.startswith("#"))
CHECK_SCRIPT = Path(__file__).with_name("ohif_check.cjs")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_tools() -> list[str]:
    """What the browser test needs and this machine lacks (``make ohif`` / ``.ci/run`` install it)."""
    missing = [name for name in ("node",) if shutil.which(name) is None]
    if chromium_path() is None:
        missing.append("chromium (apt-get install chromium)")
    if not (NODE_MODULES / "playwright-core").is_dir():
        missing.append(f"playwright-core in {NODE_MODULES} (make ohif)")
    missing += [f"OHIF {v} in {dist(v)} (make ohif)" for v in OHIF_VERSIONS if not (dist(v) / "index.html").is_file()]
    return missing


def dist(version: str) -> Path:
    return OHIF_ROOT / version / "package" / "dist"


# Where README ("SEG encoding") records that OHIF does not display an encoding exactly (measured with
# bench/ohif_display.py); every other encoding x version x matrix displays exactly.
def documented_exact(version: str, encoding: str, rows: int, columns: int) -> bool:
    if version.startswith("3.13.") and encoding == "BINARY" and rows * columns % 8:
        return False            # 1-bit frames that start inside a byte: drawn wrong, or not at all
    if version.startswith("3.12.") and encoding == "FRACTIONAL":
        return False            # "Fractional segmentations are not yet supported": nothing drawn
    return True


@dataclass
class Case:
    """One SEG to open: ``expected`` maps each source SOP Instance UID to its label map (TotalSpineSeg values)."""
    name: str
    study: str
    seg_series_number: int
    expected: dict
    names: dict                        # label value -> segment label we wrote
    show_sop: str                      # the source instance to display for the canvas check
    out: Path
    result: dict = field(default_factory=dict)


def run_node(script: Path, job: dict, tmp: Path, total_s: int) -> list[dict]:
    """Run a playwright-core check script on ``job`` (node_modules, chromium and the time limit added) in its own
    process group, killed with the Chromium it started whatever happens; its results (one dict per case)."""
    job = {"node_modules": str(NODE_MODULES), "chromium": chromium_path(), **job}
    job.setdefault("timeouts", {})["total_s"] = total_s
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINESEG_")}    # no secrets to the browser
    with open(tmp / "node.log", "wb") as log:
        proc = subprocess.Popen(["node", str(script), str(tmp / "job.json"), str(tmp / "result.json")],
                                cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=total_s + 30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    return json.loads((tmp / "result.json").read_text()) if (tmp / "result.json").exists() else []


def results_by_name(results: list[dict], names: list[str], tmp: Path) -> dict:
    """Each case's result; a case without one gets the last error the script reported (or where its log is)."""
    by_name = {r["name"]: r for r in results}
    last = (results[-1].get("errors") if results else None) or [f"no result (see {tmp / 'node.log'})"]
    return {n: by_name.get(n) or {"errors": last[:1]} for n in names}


def run_browser(base_url: str, cases: list[Case], tmp: Path, total_s: int = 600) -> None:
    """Run every SEG case in one Chromium (``ohif_check.cjs``); fills ``case.result``."""
    job = {"base_url": base_url, "timeouts": {"load_s": 90, "seg_s": 45, "step_s": 60},
           "cases": [{"name": c.name, "study": c.study, "seg_series_number": c.seg_series_number,
                      "show_sop": c.show_sop, "out": str(c.out), "labels": list(c.names.values()),
                      "show_labels": base64.b64encode((c.expected[c.show_sop] > 0).astype(np.uint8).tobytes()).decode()}
                     for c in cases]}
    results = results_by_name(run_node(CHECK_SCRIPT, job, tmp, total_s), [c.name for c in cases], tmp)
    for c in cases:
        c.result = results[c.name]


def ohif_labels(case: Case) -> tuple[dict, list[str]]:
    """OHIF's labelmap per source SOP Instance UID, in our label values, and problems found reading it."""
    r, problems = case.result, []
    by_label = {name: value for value, name in case.names.items()}
    lut = np.zeros(256, np.uint8)
    for index, label, *_ in r.get("segments", []):
        if index == 0:
            continue
        if label not in by_label:
            problems.append(f"OHIF segment {index} has label {label!r}, which we did not write")
        elif index < 256:
            lut[index] = by_label[label]
    out: dict = {}
    for s in r.get("slices", []):
        if s.get("error") or s.get("sop") not in case.expected:
            problems.append(f"labelmap image for {s.get('sop')!r}: {s.get('error', 'not a source instance')}")
            continue
        if s.get("over255"):
            problems.append(f"{s['over255']} labelmap values over 255 on {s['sop']}")
        values = np.frombuffer(base64.b64decode(s["data"]), np.uint8).reshape(s["rows"], s["columns"])
        mapped = lut[values]
        prev = out.get(s["sop"])
        out[s["sop"]] = mapped if prev is None else np.where(mapped > 0, mapped, prev)    # several layers
    return out, problems


def colour_errors(case: Case) -> list[str]:
    """Segments whose colour in OHIF is not their Recommended Display CIELab Value (PS3.3 C.8.20.4) as RGB."""
    from spineseg.outputs.codes_table import STRUCTURES
    by_label = {name: value for value, name in case.names.items()}
    errors = []
    for index, label, rgba in case.result.get("segments", []):
        if label in by_label:
            want = STRUCTURES[by_label[label]]["rgb"]
            if len(rgba) < 3 or max(abs(int(a) - int(b)) for a, b in zip(rgba, want)) > 4:
                errors.append(f"segment {index} {label}: OHIF colour {rgba[:3]}, ours {list(want)}")
    return errors


def verdict(case: Case) -> dict:
    """``{"verdict": exact|wrong|not shown, "mismatched_voxels", "per_segment": {...}, "problems": [...]}``."""
    r = case.result
    if r.get("errors") and not r.get("slices"):
        return {"verdict": "not shown", "problems": r["errors"][:3] + r.get("console", [])[:3]}
    got, problems = ohif_labels(case)
    if not got:
        return {"verdict": "not shown", "problems": problems or ["OHIF holds no labelmap images"]}
    mismatched, per_segment = 0, {}
    for sop, want in case.expected.items():
        have = got.get(sop, np.zeros_like(want))
        if have.shape != want.shape:
            problems.append(f"{sop}: OHIF labelmap {have.shape}, source {want.shape}")
            mismatched += want.size
            continue
        bad = have != want
        mismatched += int(bad.sum())
        for value in np.union1d(np.unique(want), np.unique(have)):
            if value == 0:
                continue
            w, h = want == value, have == value
            entry = per_segment.setdefault(case.names.get(int(value), str(value)), {"ours": 0, "ohif": 0, "both": 0})
            entry["ours"] += int(w.sum())
            entry["ohif"] += int(h.sum())
            entry["both"] += int((w & h).sum())
    exact = mismatched == 0 and not problems
    empty = not any(a.any() for a in got.values())        # loaded as an empty segmentation: nothing drawn
    return {"verdict": "exact" if exact else "not shown" if empty else "wrong", "mismatched_voxels": mismatched,
            "voxels": int(sum(int((w > 0).sum()) for w in case.expected.values())),
            "per_segment": per_segment, "problems": problems[:5]}
