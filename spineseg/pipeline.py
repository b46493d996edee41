"""The app's stages as plain functions over plain data; the Holoscan operators call these.

    scan_study -> choose_series -> (load_volume -> segment -> write_results) per chosen series
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .delivery import RetryPolicy, deliver_all, destinations_from_settings, policy_from_settings
from .dicom_input import ScanResult, SeriesInfo, Volume, load_volume, scan_dicom
from .errors import DeliveryError, SpineSegError
from .inference import ModelPair, SegmentationResult, load_models, segment_volume
from .report import RunReport, structures_found
from .seg_writer import SegSettings, build_seg, write_label_nifti, write_seg
from .selection import SelectionRules, select_series

log = logging.getLogger("spineseg")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = REPO_ROOT / "models"
APP_YAML = REPO_ROOT / "app.yaml"


def load_settings(path: Path | None = None) -> dict:
    """The ``spineseg`` section of app.yaml (empty when the file is absent).

    Default: HOLOSCAN_CONFIG_PATH (set inside a MAP container) when it names a file, else the
    app.yaml beside the ``spineseg`` package.
    """
    import yaml
    if path is None:
        env = os.environ.get("HOLOSCAN_CONFIG_PATH")
        path = Path(env) if env and Path(env).is_file() else APP_YAML
    if not Path(path).exists():
        return {}
    return (yaml.safe_load(Path(path).read_text()) or {}).get("spineseg", {}) or {}


def _rules_text(value: str) -> str:
    value = value.strip()
    if value.startswith("{"):
        return value
    try:
        return Path(value).read_text()
    except OSError as exc:
        raise ValueError(f"not JSON and not a readable file ({exc.strerror})") from exc


@dataclass
class AppConfig:
    input_dir: Path
    output_dir: Path
    models_dir: Path = DEFAULT_MODELS
    device: str = "auto"                       # auto | cpu | cuda
    model_release: str = "auto"                # auto (newest installed release, else bundled) | direct | rYYYYMMDD
    max_voxels: int = 200_000_000
    seg: SegSettings = field(default_factory=SegSettings)
    selection: SelectionRules = field(default_factory=SelectionRules)
    destinations: list = field(default_factory=list)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_settings(cls, input_dir: Path, output_dir: Path, models_dir: Path | None,
                      settings: dict | None = None, env: dict | None = None) -> "AppConfig":
        """Settings from app.yaml's ``spineseg`` section, then SPINESEG_* environment overrides."""
        s = dict(settings or {})
        env = os.environ if env is None else env
        seg = dict(s.get("seg", {}))
        sel = dict(s.get("selection", {}))
        overrides = {
            "SPINESEG_DEVICE": (s, "device", str),
            "SPINESEG_MODEL_RELEASE": (s, "model_release", str),
            "SPINESEG_MAX_VOXELS": (s, "max_voxels", int),
            "SPINESEG_SEG_TYPE": (seg, "segmentation_type", str.upper),
            "SPINESEG_SEG_COMPRESSION": (seg, "compression", str.lower),
            "SPINESEG_SERIES_NUMBER": (seg, "series_number", int),
            "SPINESEG_ALL_SERIES": (sel, "all_eligible", lambda v: v.lower() in ("1", "true", "yes")),
            # selector rules as JSON text, or the path of a JSON file holding them
            "SPINESEG_SELECTION_RULES": (sel, "rules", _rules_text),
        }
        for var, (target, key, conv) in overrides.items():
            if env.get(var):
                try:
                    target[key] = conv(env[var])
                except ValueError as exc:
                    raise SpineSegError("BAD_SETTING", f"{var}={env[var]!r} is not valid: {exc}") from exc
        cfg = cls(Path(input_dir), Path(output_dir), Path(models_dir) if models_dir else DEFAULT_MODELS,
                  device=s.get("device", "auto"), model_release=str(s.get("model_release", "auto")),
                  max_voxels=int(s.get("max_voxels", 200_000_000)),
                  seg=SegSettings(**seg), selection=SelectionRules(**sel))
        cfg.destinations = destinations_from_settings(s, env)
        cfg.retry = policy_from_settings(s, env)
        cfg.seg.validate()
        return cfg


def scan_study(cfg: AppConfig, report: RunReport) -> ScanResult:
    with report.stage("scan"):
        scan = scan_dicom(cfg.input_dir)
    report.input.update({"files_seen": scan.files_seen, "files_skipped": len(scan.skipped),
                         "series": len(scan.series)})
    if scan.skipped:
        report.warn(f"{len(scan.skipped)} file(s) skipped, e.g. {Path(scan.skipped[0][0]).name}: {scan.skipped[0][1]}")
    return scan


def choose_series(scan: ScanResult, cfg: AppConfig, report: RunReport) -> list[SeriesInfo]:
    with report.stage("select"):
        chosen, ranked = select_series(scan.series, cfg.selection)
    report.series_seen = [c.as_dict() for c in ranked]
    for c in chosen:
        log.info("chosen series %s (%s, %s, %d images)", c.series.series_number, c.plane, c.contrast,
                 c.series.n_images)
    return [c.series for c in chosen]


def get_models(cfg: AppConfig, report: RunReport) -> ModelPair:
    with report.stage("load_models"):
        models = load_models(cfg.models_dir, cfg.device, cfg.model_release)
    report.models = models.describe()
    if models.kind == "phantom":
        report.warn("the models are the bundled PHANTOM-trained test weights, not the clinical TotalSpineSeg "
                    "release; results are for testing only")
    return models


def load_series(series: SeriesInfo, cfg: AppConfig, report: RunReport) -> Volume:
    with report.stage("load_pixels"):
        volume = load_volume(series, cfg.max_voxels)
    for w in volume.warnings:
        report.warn(f"series {series.series_number}: {w}")
    return volume


def segment(volume: Volume, models: ModelPair, report: RunReport) -> SegmentationResult:
    return segment_volume(volume.array, volume.affine, models, on_stage=report.record_stage)


def output_stem(volume: Volume, taken: set[str]) -> str:
    number = volume.series.series_number
    stem = f"series-{number:03d}" if number is not None else "series"
    i, candidate = 1, stem
    while candidate in taken:
        i += 1
        candidate = f"{stem}-{i}"
    taken.add(candidate)
    return candidate


def write_results(volume: Volume, result: SegmentationResult, models: ModelPair, cfg: AppConfig,
                  report: RunReport, stem: str) -> dict:
    """Write the SEG and the NIfTI label map; return the report entry of this series."""
    found = structures_found(result.labels, volume.voxel_volume_mm3)
    entry = {
        "study_instance_uid": volume.series.study_uid,
        "series_instance_uid": volume.series.series_uid,
        "series_number": volume.series.series_number,
        "series_description": volume.series.description,
        "shape": list(volume.array.shape), "spacing_mm": [round(s, 4) for s in volume.spacing],
        "structures": found,
    }
    with report.stage("write_nifti"):
        nifti = write_label_nifti(result.labels, volume.affine, cfg.output_dir / f"{stem}_labels.nii.gz")
    report.add_output(nifti)
    if not found:
        report.warn(f"series {volume.series.series_number}: no structure segmented; no SEG written")
        entry["outputs"] = {"label_map": nifti.name}
        return entry
    with report.stage("write_seg"):
        sources, source_labels = volume.in_source_order(result.labels)
        seg, present = build_seg(sources, source_labels, models.describe(), cfg.seg)
        path = write_seg(seg, cfg.output_dir / f"{stem}_seg.dcm")
    report.add_output(path)
    entry["seg"] = {"sop_instance_uid": str(seg.SOPInstanceUID), "series_instance_uid": str(seg.SeriesInstanceUID),
                    "series_number": int(seg.SeriesNumber), "segments": len(present),
                    "segmentation_type": cfg.seg.segmentation_type, "transfer_syntax": str(seg.file_meta.TransferSyntaxUID)}
    entry["outputs"] = {"seg": path.name, "label_map": nifti.name}
    expected_missing = _missing_between(present)
    if expected_missing:
        report.warn(f"series {volume.series.series_number}: levels missing inside the labelled range: "
                    + ", ".join(expected_missing))
    return entry


def _missing_between(present: list[int]) -> list[str]:
    """Vertebra names absent between the highest and lowest vertebra found (a labelling gap)."""
    from .codes_table import STRUCTURES
    order = [v for v in STRUCTURES if 11 <= v <= 45]
    found = [v for v in order if v in present]
    if len(found) < 2:
        return []
    lo, hi = order.index(found[0]), order.index(found[-1])
    return [STRUCTURES[v]["name"] for v in order[lo:hi + 1] if v not in present]


def seg_files(report: RunReport) -> list[Path]:
    return [report.output_dir / e["outputs"]["seg"] for e in report.processed if "seg" in e.get("outputs", {})]


def deliver_results(cfg: AppConfig, report: RunReport) -> None:
    """Send the SEGs; raise DeliveryError (exit 5) when a configured destination did not take them."""
    with report.stage("deliver"):
        report.delivery = deliver_all(seg_files(report), cfg.destinations, cfg.retry)
    failed = [d for d in report.delivery.get("destinations", []) if d["status"] != "delivered"]
    if failed:
        raise DeliveryError("DELIVERY_FAILED", "Results are in the output folder but were not delivered to "
                            + "; ".join(f"{d['destination']} ({d['reason']})" for d in failed)
                            + ". Re-send later with `python -m spineseg.resend OUTPUT_FOLDER`.")


def run_all(cfg: AppConfig, report: RunReport) -> list[dict]:
    """The whole job without Holoscan (used by tests and by the operators' logic)."""
    scan = scan_study(cfg, report)
    chosen = choose_series(scan, cfg, report)
    models = get_models(cfg, report)
    taken: set[str] = set()
    for series in chosen:
        volume = load_series(series, cfg, report)
        result = segment(volume, models, report)
        report.processed.append(write_results(volume, result, models, cfg, report, output_stem(volume, taken)))
        del volume, result
    deliver_results(cfg, report)
    return report.processed

