"""The docs' speed, memory and agreement figures, generated from the bench records in bench/results/, and the
README's settings table, generated from spineseg.settings.SETTINGS.

Every figure README.md and docs/*.md quote about speed, memory or agreement sits between two markers::

    <!-- BEGIN generated:NAME (tools/docs_figures.py) -->
    ...
    <!-- END generated:NAME -->

and is written here from its record, with the record's date, commit and machine (``recorded``) where the
record carries them and "not recorded" where it does not: nothing is filled in from memory or git.

    python tools/docs_figures.py           # rewrite the generated blocks in place
    python tools/docs_figures.py --check   # exit 1 and name the blocks that differ (tests/test_docs.py does this)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC_FILES = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- BEGIN generated:(?P<name>[a-z0-9-]+) \(tools/docs_figures.py\) -->\n)"
                   r"(?P<body>.*?)"
                   r"(<!-- END generated:(?P=name) -->)", re.S)
BACKENDS = ("torch", "openvino", "openvino-bf16")

# records the docs do not quote, and why: each measured a code path the app no longer runs
NOT_QUOTED = {
    "bench_e2e.txt": "predates the OpenVINO default, the measurement SR and the review picture",
    "network_speed_cpu.json": "plain PyTorch network timing before the in-process backends; "
                              "backends.json's torch row replaces it",
    "measurements_demo.json": "measurement-by-measurement values, read by tests/test_reading_aids.py, not a figure",
    "study_profile.json": "issue 28's several-series check (models loaded once, each step once per series); "
                          "not yet a generated figure",
}
# bench/agreement.py's keys, and the names records made before it gave the same figures (bench/backends.py:
# all_voxels, foreground; bench/reference_agreement*.py: agreement)
EARLIER_KEYS = {"agreement_all": ("all_voxels", "agreement"), "agreement_foreground": ("foreground",)}


def record(name: str):
    return json.loads((RESULTS / name).read_text())


def recorded(rec) -> tuple[str, str, str]:
    """(date, commit, machine) as the record states them: its ``recorded`` section, else (machine only) its
    ``cpu`` or ``device`` field, else "not recorded"."""
    r = rec.get("recorded", {}) if isinstance(rec, dict) else {}
    machine = r.get("machine")
    if machine is None and isinstance(rec, dict):
        machine = next((f"{rec[k]} (its `{k}` field)" for k in ("cpu", "device") if k in rec), None)
    return r.get("date", "not recorded"), r.get("commit", "not recorded"), machine or "not recorded"


def figure(row: dict, key: str):
    """``row[key]`` for one of bench/agreement.py's keys, under the name the record gave it."""
    return next(row[k] for k in (key, *EARLIER_KEYS.get(key, ())) if k in row)


def provenance(name: str, rec) -> str:
    """One line naming the record and what it says of when, at which commit and where it was measured."""
    date, commit, machine = recorded(rec)
    return f"_Record `bench/results/{name}`: date {date}, commit {commit}, machine {machine}._"


def pct(x: float, digits: int = 4) -> str:
    return f"{100 * x:.{digits}f} %"


def wrap(text: str, bullet: bool = False) -> list[str]:
    """Prose at 115 characters a line (a bullet's continuation lines indented), so no line runs long."""
    return textwrap.wrap(text, 115, subsequent_indent="  " if bullet else "", break_on_hyphens=False,
                         break_long_words=False)


def table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


# --- the blocks --------------------------------------------------------------------------------------

def block_records() -> list[str]:
    rows = []
    for path in sorted(RESULTS.iterdir()):
        rec = json.loads(path.read_text()) if path.suffix == ".json" else None
        date, commit, machine = recorded(rec)
        quoted = "no: " + NOT_QUOTED[path.name] if path.name in NOT_QUOTED else "yes"
        rows.append([f"`{path.name}`", date, commit, machine, quoted])
    return table(["record", "date", "commit", "machine", "quoted in the docs"], rows)


def block_backends_fullsize() -> list[str]:
    rec = record("backends.json")
    f = rec["fullsize_clinical_lumbar"]
    s = f["study"]
    rows = []
    for b in BACKENDS:
        r = f[b]
        st = r["stages_s"]
        rows.append([f"`{b}`", f"{r['dicom_to_outputs_s']:.0f} s", f"{st['step1_network']:.0f} s + {st['step2_network']:.0f} s",
                     f"{st['load_models']:.1f} s", f"{r['peak_rss_gb']:.1f} GB",
                     f"{pct(r['step1_argmax_agreement_random_weights'], 2)} / "
                     f"{pct(r['step2_argmax_agreement_random_weights'], 2)}"])
    la = rec["fullsize_load_average"]
    return [provenance("backends.json", rec), "",
            f"Phantom clinical lumbar study (seed {s['seed']}, {s['slice_thickness']} mm slices, {s['pixel']} mm "
            f"pixels, {s['matrix']}x{s['matrix']}), {f['network']}, {rec['torch_threads']} torch threads, "
            f"load average {la[0]}-{la[1]}, OpenVINO IRs already in the cache:", "",
            *table(["backend", "DICOM to SEG, SR and review picture", "networks (step 1 + step 2)", "model load",
                    "peak memory (process)", "argmax agreement with torch, step 1 / step 2 (random weights)"], rows)]


def block_backends_phantom() -> list[str]:
    rec = record("backends.json")
    rows = []
    for b in BACKENDS:
        r = rec["phantom_cases"][b]
        agree = [c["agreement_with_torch"] for c in r["cases"]]
        diff = [a["differing_voxels"] for a in agree]
        low = min(agree, key=lambda a: a["lowest_dice"]["dice"])["lowest_dice"]
        rows.append([f"`{b}`", len(r["cases"]), pct(figure(r["minimum_agreement"], "agreement_all")),
                     pct(figure(r["minimum_agreement"], "agreement_foreground")), f"{min(diff)}-{max(diff)}",
                     "yes" if r["same_structures_in_every_case"] else "no",
                     f"{low['dice']:.4f}" + (f" (label {low['label']})" if low["label"] else ""),
                     f"{sum(c['seconds'] for c in r['cases']):.0f} s", f"{r['peak_rss_gb']:.2f} GB"])
    la = rec["phantom_cases_load_average"]
    return [provenance("backends.json", rec), "",
            f"The six reference-agreement phantoms with the bundled (phantom) models, each backend in its own "
            f"process; final labels compared with the `torch` backend's (load average {la[0]}-{la[1]}: other jobs "
            "ran beside it, so the seconds are indicative):", "",
            *table(["backend", "cases", "voxels alike (minimum)", "foreground alike (minimum)", "voxels differing per case",
                    "same structures", "lowest Dice of any label", "seconds, all cases", "peak memory"], rows)]


def block_stage_profile() -> list[str]:
    rec = record("stage_profile_demo.json")
    st = rec["stages_s"]
    rows = [[k, f"{v:.2f} s"] for k, v in st.items()]
    return [provenance("stage_profile_demo.json", rec), "",
            f"{rec['study']}, backend `{rec['backend']}`, bundled models, warm IR cache: the whole process took "
            f"{rec['process_wall_s']:.1f} s, of which start-up (imports before the first stage) {rec['start_up_s']:.1f} s, "
            f"the networks {rec['networks_s']:.1f} s and everything else {rec['outside_networks_s']:.1f} s.", "",
            *table(["stage", "seconds"], rows)]


def block_gpu_network() -> list[str]:
    rec = record("network_speed_h200.json")
    rows = [[step, "x".join(map(str, rec[step]["input_shape"])), f"{rec[step]['median_s']:.2f} s",
             f"{rec[step]['gpu_peak_gb']:.2f} GB"] for step in ("step1", "step2")]
    return [provenance("network_speed_h200.json", rec), "",
            f"Full-size network ({rec['step1']['parameters_m']} M parameters, patch "
            f"{'x'.join(map(str, rec['step1']['patch']))}), torch, median of {rec['runs']} runs; "
            f"networks {rec['network_total_median_s']:.2f} s in all, process peak {rec['peak_rss_gb']:.2f} GB:", "",
            *table(["step", "1 mm input", "seconds", "GPU memory peak"], rows)]


def block_precision_options() -> list[str]:
    rec = record("precision_options.json")
    labels = rec["phantom_final_labels_vs_torch"]
    names = {"f32": "fp32", "bf16": "bf16", "f16": "f16", "head32": "bf16, first encoder stage fp32",
             "tail32": "bf16, last decoder stage and logits fp32", "ends32": "bf16, both ends fp32"}
    rows = []
    for k, v in rec["full_size_patch"].items():
        lab = labels.get(k)
        rows.append([names.get(k, k), f"{v['seconds_per_patch']:.1f} s", pct(v["argmax_agreement_random_weights"], 2),
                     pct(lab["minimum_foreground"], 3) if lab else "not measured"])
    return [provenance("precision_options.json", rec), "",
            f"OpenVINO on the CPU, one full-size patch (load average {rec['load_average_at_start']} at start, "
            f"{rec['load_average_at_end']} at end):", "",
            *table(["precision", "seconds per patch", "argmax agreement with fp32 (random weights)",
                    "phantom final labels vs torch, foreground (minimum of 6)"], rows)]


def block_reference_agreement() -> list[str]:
    rec = record("reference_agreement.json")
    rows = [[c["seed"], c["fov"], "x".join(map(str, c["shape"])), pct(figure(c, "agreement_all")),
             c["differing_voxels"], f"{c['reference_s']:.0f} s", f"{c['ours_s']:.1f} s"] for c in rec]
    return [provenance("reference_agreement.json", rec), "",
            *table(["phantom seed", "field of view", "shape", "same label", "voxels differing",
                    "`totalspineseg` command", "in-process pipeline"], rows)]


def block_reference_agreement_loc() -> list[str]:
    rec = record("reference_agreement_loc.json")
    return [provenance("reference_agreement_loc.json", rec), "",
            *table(["phantom seed", "localizer labels alike", "T2 labels alike (with the localizer)",
                    "`totalspineseg --loc` command", "partner segmentation", "T2 with the localizer's labels"],
                   [[rec["seed"], pct(figure(rec["localizer"], "agreement_all")),
                     pct(figure(rec["t2_with_loc"], "agreement_all")),
                     f"{rec['reference_s']:.0f} s", f"{rec['partner_segmentation_s']:.1f} s",
                     f"{rec['t2_with_localizer_s']:.1f} s"]])]


def block_seed_pipeline() -> list[str]:
    rec = record("seed_pipeline_agreement.json")
    rows = []
    for s in rec["studies"]:
        geo = f"{s['plane']}, {s['slice_mm']} mm / {s['pixel_mm']} mm"
        rows.append([s["study"], geo, "DICOM path (torch, in process)", pct(s["agreement_all"]),
                     pct(s["agreement_foreground"]), s["differing_voxels"],
                     f"{s['timings_s']['ours_read_and_segment']:.1f} s (command {s['timings_s']['totalspineseg_command']:.0f} s)"])
        for a in s["app"]:
            rows.append([s["study"], geo, f"the app, `{a['setting']}` ({a['backend']})", pct(a["agreement_all"]),
                         pct(a["agreement_foreground"]), a["differing_voxels"], f"{a['wall_s']:.1f} s"])
    return [provenance("seed_pipeline_agreement.json", rec), "",
            f"Against dcm2niix -> the unmodified `totalspineseg` command, same DICOM study and bundled weights "
            f"(`{rec['command']}`):", "",
            *table(["study", "geometry", "ours", "voxels alike", "foreground alike", "voxels differing", "wall time"],
                   rows)]


def block_ohif_display() -> list[str]:
    rec = record("ohif_display.json")
    studies, cells = [], {}
    for r in rec:
        key = (r["study"], r["matrix"])
        if key not in studies:
            studies.append(key)
        verdict = r["verdict"]
        if verdict == "wrong" and r.get("voxels"):
            verdict += f" ({round(100 * r['mismatched_voxels'] / r['voxels'])} % of voxels)"
        cells[(key, r["ohif"], r["encoding"])] = verdict
    versions = sorted({r["ohif"] for r in rec}, key=lambda v: [int(x) for x in v.split(".")], reverse=True)
    rows = [[f"{s} {m}" if v == versions[0] else "", v,
             *(cells.get(((s, m), v, e), "not measured") for e in ("BINARY", "LABELMAP", "FRACTIONAL"))]
            for s, m in studies for v in versions]
    return [provenance("ohif_display.json", rec), "",
            *table(["study, matrix", "OHIF", "BINARY", "LABELMAP", "FRACTIONAL"], rows)]


def block_phantom_accuracy() -> list[str]:
    rec = record("phantom_accuracy.json")
    s = rec["summary"]
    right = sum(c["levels_correct"] for c in rec["cases"])
    total = sum(c["levels_total"] for c in rec["cases"])
    return [provenance("phantom_accuracy.json", rec), "",
            *table(["held-out phantoms", "Dice cord", "Dice canal", "Dice vertebrae", "Dice discs", "levels named right"],
                   [[f"{s['cases']} ({s['slice_thickness_mm']} mm slices)", s["cord"], s["canal"], s["vertebrae"], s["discs"],
                     f"{right}/{total} ({100 * s['level_accuracy']:.1f} %)"]])]


def block_variant_accuracy() -> list[str]:
    rec = record("variant_accuracy.json")
    rows = [[r["variant"], r["fov"], f"{r['levels_correct']}/{r['levels']}", r["confidence"], f"`{r['short']}`",
             len(r["warnings"]), "yes" if r["field_of_view_cannot_verify"] else "no",
             "**yes**" if r["wrong_but_silent"] else "no"] for r in rec["rows"]]
    silent = [r for r in rec["rows"] if r["wrong_but_silent"]]
    return [provenance("variant_accuracy.json", rec), "",
            f"Phantoms of {rec['slice_thickness']} mm slices and {rec['pixel']} mm pixels, bundled models; "
            f"{len(silent)} of {len(rec['rows'])} cases named a level wrongly with no warning"
            + (": " + "; ".join(f"{r['variant']} seen {r['fov']}-only ({r['levels_correct']} of {r['levels']} levels "
                                f"right, confidence {r['confidence']}, and the view cannot verify it: "
                                f"{r['field_of_view_cannot_verify'][0]})" for r in silent) if silent else "") + ".", "",
            *table(["variant", "field of view", "levels right", "confidence", "SEG tag", "warnings",
                    "'not verifiable' note", "wrong and silent"], rows)]


def block_official_image() -> list[str]:
    name = "official_image.json"
    if not (RESULTS / name).is_file():
        return [f"_No record yet: `python -m bench.official_image --json bench/results/{name}` makes it._"]
    rec = record(name)
    rows = []
    for backend, r in rec["backends"].items():
        st = r.get("stages_s") or {}
        networks = (f"{st['step1_network']:.0f} s + {st['step2_network']:.0f} s" if "step2_network" in st else
                    "step 2 not reached")
        rows.append([f"`{backend}`", f"{r['exit_status']} ({r.get('error') or r.get('status')})",
                     f"{r['container_wall_s']:.0f} s", networks, f"{r['peak_memory_gb']['anon_gb']:.2f} GB",
                     f"{r['peak_memory_gb']['usage_gb']:.2f} GB", "yes" if r["oom_killed"] else "no"])
    b, s = rec["build"], rec["study"]
    return [provenance(name, rec), "",
            *wrap(f"Zips of {rec['zips_gb']:.2f} GB ({rec['release_shape']}, {rec['network']}); "
                  f"`make image WEIGHTS=` on top of a built CPU MAP: verify {b['seconds']['verify']:.0f} s, install "
                  f"{b['seconds']['install']:.0f} s, docker build with the IR export {b['seconds']['docker_build']:.0f} s; "
                  f"image {b['size_gb']:.2f} GB. Phantom clinical lumbar study (seed {s['seed']}, {s['slice_thickness']} mm "
                  f"slices, {s['pixel']} mm pixels, {s['matrix']}x{s['matrix']}) run in the image with app.yaml's "
                  f"resources, load average {rec['load_average_at_start']} at the start and "
                  f"{rec['load_average_at_end']} at the end. Random weights label nothing real: the exit "
                  "status is whatever the study-level checks make of their output, and their labels make step 2's "
                  "crop and post-processing far larger than trained weights' (their times: performance.md). What "
                  "the table shows is that the release runs as `official` inside the declared memory."), "",
            *table(["backend", "exit status", "container, start to exit", "networks (step 1 + step 2)",
                    "peak process memory", "peak cgroup usage (page cache included)", "OOM-killed"], rows)]


def block_readme_glance() -> list[str]:
    """The README's few figures, each with its record."""
    prof = record("stage_profile_demo.json")
    backends = record("backends.json")
    back = backends["fullsize_clinical_lumbar"]
    acc = record("phantom_accuracy.json")["summary"]
    var = record("variant_accuracy.json")
    images = record("images.json")
    silent = sum(r["wrong_but_silent"] for r in var["rows"])
    return [
        f"- Demo study, bundled models, 2 CPU cores: {prof['process_wall_s']:.0f} s for the whole process "
        f"(`bench/results/stage_profile_demo.json`, date {recorded(prof)[0]}).",
        "- Full-size networks of the official architecture (random weights) on a lumbar study, 2 CPU cores, DICOM to "
        "all outputs: " + ", ".join(f"`{b}` {back[b]['dicom_to_outputs_s']:.0f} s (peak {back[b]['peak_rss_gb']:.1f} GB)"
                                    for b in BACKENDS)
        + f" (`bench/results/backends.json`, date {recorded(backends)[0]}).",
        f"- Bundled phantom models on {acc['cases']} held-out phantoms: Dice cord {acc['cord']}, canal {acc['canal']}, "
        f"vertebrae {acc['vertebrae']}, discs {acc['discs']}; {100 * acc['level_accuracy']:.1f} % of levels named "
        "right (`bench/results/phantom_accuracy.json`). **Phantoms, not patients.**",
        f"- Level numbering on {len(var['rows'])} anatomical-variant phantoms: {silent} wrong without a warning "
        f"(`bench/results/variant_accuracy.json`, date {recorded(var)[0]}; see the confidence table).",
        *wrap(f"- MAP images built offline from scratch (`make image GPU=1`): CPU {images['cpu']['size_gb']:.2f} GB in "
              f"{images['cpu']['build_steps_s']['total']:.0f} s, GPU {images['gpu']['size_gb']:.2f} GB in "
              f"{images['gpu']['build_steps_s']['total']:.0f} s more; the demo study's first run "
              f"{images['cpu']['first_run']['container_wall_s']:.0f} s in the CPU image and "
              f"{images['gpu']['first_run']['container_wall_s']:.0f} s in the GPU one on this CPU host "
              f"(`bench/results/images.json`, date {recorded(images)[0]}).", bullet=True),
    ]


def block_images() -> list[str]:
    rec = record("images.json")
    rows = []
    for name in ("cpu", "gpu"):
        r, run = rec[name], rec[name]["first_run"]
        steps = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in r["build_steps_s"].items() if k != "total")
        rows.append([name.upper(), f"`{r['tag']}`", f"{r['size_gb']:.2f} GB", f"{r['build_steps_s']['total']:.0f} s ({steps})",
                     f"{run['container_wall_s']:.0f} s (app {run['app_wall_s']:.0f} s, model load {run['load_models_s']:.1f} s)",
                     f"{run['peak_memory_gb']['anon_gb']:.2f} GB"])
    return [provenance("images.json", rec), "",
            *wrap(f"`make image GPU=1` on an engine holding no image (the Debian root file system tarball and the "
                  f"wheelhouses already on disk): {rec['make_image_gpu_s']:.0f} s in all, load average "
                  f"{rec['load_average_at_start']} at the start. First run: the demo study in a fresh container, "
                  "non-root, read-only, app.yaml's 2 CPUs and 8 GiB, no GPU:"), "",
            *table(["image", "tag", "size", "build", "first demo run, start to exit", "peak process memory"], rows)]


def block_settings() -> list[str]:
    """The README's settings table: not a bench record but spineseg.settings.SETTINGS, the table the app reads
    its settings by, so the documented keys, variables, bounds and defaults are the ones in force."""
    from spineseg.settings import settings_table_markdown
    return settings_table_markdown()


BLOCKS = {
    "records": block_records,
    "backends-fullsize": block_backends_fullsize,
    "backends-phantom": block_backends_phantom,
    "stage-profile": block_stage_profile,
    "gpu-network": block_gpu_network,
    "precision-options": block_precision_options,
    "reference-agreement": block_reference_agreement,
    "reference-agreement-loc": block_reference_agreement_loc,
    "seed-pipeline": block_seed_pipeline,
    "ohif-display": block_ohif_display,
    "phantom-accuracy": block_phantom_accuracy,
    "variant-accuracy": block_variant_accuracy,
    "readme-glance": block_readme_glance,
    "official-image": block_official_image,
    "images": block_images,
    "settings": block_settings,
}


def doc_paths() -> list[Path]:
    paths = []
    for pattern in DOC_FILES:
        paths += sorted(ROOT.glob(pattern))
    return paths


def render(text: str) -> str:
    """``text`` with every generated block rewritten from its record (KeyError for an unknown block)."""
    def fill(m: re.Match) -> str:
        lines = []
        for line in BLOCKS[m["name"]]():
            lines += [line] if line.startswith("|") or len(line) <= 115 else wrap(line, line.startswith("- "))
        body = "\n".join(lines) + "\n"
        return m.group(1) + body + m.group(4)
    return BLOCK.sub(fill, text)


def blocks_in(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a generated block is stale")
    args = p.parse_args(argv)
    stale = []
    for path in doc_paths():
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("stale generated figures in: " + ", ".join(stale) + " (run python tools/docs_figures.py)",
              file=sys.stderr)
        return 1
    for name in stale if not args.check else []:
        print(f"rewrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
