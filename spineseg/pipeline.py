"""The app's stages as plain functions over plain data; the Holoscan operators call these.

    scan_study -> choose_series -> (load_volume -> segment -> write_results) per chosen series
"""
from __future__ import annotations

import logging
from pathlib import Path

from .delivery import deliver_all
from .dicom_input import ScanResult, SeriesInfo, Volume, load_volume, scan_dicom
from .errors import DeliveryError
from .inference import ModelPair, SegmentationResult, load_models, segment_volume
from .report import RunReport, structures_found
from .seg_writer import build_seg, write_label_nifti, write_seg
from .selection import select_series
from .settings import DEFAULT_MODELS, AppConfig, load_settings  # noqa: F401 (the app imports them from here)

log = logging.getLogger("spineseg")


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
    numbering = result.numbering
    if numbering is not None:
        entry["numbering"] = numbering.as_dict()
        log.info("series %s: %s", volume.series.series_number, numbering.summary)
        for w in numbering.warnings:
            report.warn(f"series {volume.series.series_number}: {w}")
    with report.stage("write_nifti"):
        nifti = write_label_nifti(result.labels, volume.affine, cfg.output_dir / f"{stem}_labels.nii.gz")
    report.add_output(nifti)
    if not found:
        report.warn(f"series {volume.series.series_number}: no structure segmented; no SEG written")
        entry["outputs"] = {"label_map": nifti.name}
        return entry
    with report.stage("write_seg"):
        sources, source_labels = volume.in_source_order(result.labels)
        seg, present = build_seg(sources, source_labels, models.describe(), cfg.seg, numbering)
        path = write_seg(seg, cfg.output_dir / f"{stem}_seg.dcm")
    report.add_output(path)
    entry["seg"] = {"sop_instance_uid": str(seg.SOPInstanceUID), "series_instance_uid": str(seg.SeriesInstanceUID),
                    "series_number": int(seg.SeriesNumber), "segments": len(present),
                    "segmentation_type": cfg.seg.segmentation_type, "transfer_syntax": str(seg.file_meta.TransferSyntaxUID)}
    entry["outputs"] = {"seg": path.name, "label_map": nifti.name}
    return entry


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

