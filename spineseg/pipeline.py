"""The app's stages as plain functions over plain data; the Holoscan operators call these.

    scan_study -> choose_series -> (load_volume -> segment -> write_results) per chosen series
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace

from spineseg import APP_NAME, __version__
from spineseg.outputs.atomic import write_bytes_atomic, write_dicom_atomic, write_json_atomic
from spineseg.delivery.send import deliver_all
from spineseg.input.dicom_input import ScanResult, SeriesInfo, Volume, load_volume, preflight, scan_dicom
from spineseg import logsafe
from spineseg.errors import DeliveryError, InputError
from spineseg.inference.stations import AGREEMENT_FLOOR, anchor_rank, renumber
from spineseg.inference.stations import compare as compare_stations
from spineseg.inference.two_step import (ModelPair, SegmentationResult, NetworkMemo, load_models, localizer_image,
                                         segment_volume)
from spineseg.input.localizer import partner_candidates, same_frame
from spineseg.outputs.measurement_table import render_measurement_table
from spineseg.outputs.measurements import measure_levels, measurements_table
from spineseg.report import RunReport, structures_found
from spineseg.outputs.review_image import encode_png, render_review
from spineseg.outputs.sc_writer import build_review_sc, build_table_sc
from spineseg.outputs.seg_writer import (build_seg, encoding_record, read_standard_tables_in_background,
                                        weights_release, write_label_nifti, write_seg)
from spineseg.input.selection import select_series
from spineseg.outputs.sr_writer import build_measurement_sr, measured_values
from spineseg.settings import DEFAULT_MODELS, AppConfig, load_settings  # noqa: F401 (the app imports them from here)
from spineseg.study import StudyMemo

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
        preflight(c.series, cfg.max_voxels)   # refuse what cannot be processed before the models load
    return [c.series for c in chosen]


def cuda_build_of_torch() -> bool:
    import torch
    return torch.version.cuda is not None


def get_models(cfg: AppConfig, report: RunReport) -> ModelPair:
    with report.stage("load_models"):
        models = load_models(cfg.models_dir, cfg.device, cfg.model_release, cfg.backend)
    report.models = models.describe()
    if cfg.device == "auto" and models.device == "cpu" and cuda_build_of_torch():
        # the GPU MAP on a node without a GPU (or without the NVIDIA runtime): say so once, plainly
        log.info("no GPU visible to this CUDA build of torch: the networks run on the CPU (backend %s)",
                 models.backend)
    for warning in models.warnings:          # e.g. a damaged OpenVINO cache entry, exported again
        report.warn(warning)
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


def segment(volume: Volume, models: ModelPair, report: RunReport, memo: NetworkMemo | None = None,
            **partner) -> SegmentationResult:
    """``volume`` through both steps (``partner``: the localizer and localizer_name that name its levels)."""
    def on_stage(name: str, seconds: float) -> None:
        report.record_stage(name, seconds)
        if name == "preprocess":        # step 1's network next: nnU-Net's resampling leaves a core to spare
            read_standard_tables_in_background()
    return segment_volume(volume.array, volume.affine, models, on_stage=on_stage, dicom_stack=True,
                          memo=memo, **partner)


def segment_series(volume: Volume, study: list[SeriesInfo], models: ModelPair, cfg: AppConfig,
                   report: RunReport, done: StudyMemo | None = None) -> SegmentationResult:
    """Segment ``volume``; when it shows no landmark disc, let a partner series of the same study and Frame
    of Reference (a localizer, another station) name its levels, as ``totalspineseg --loc`` does.

    Each partner tried costs a full segmentation: at most ``cfg.partner_max_attempts`` are tried, best
    first (``partner_candidates``), and a candidate that certainly cannot help is skipped without counting
    (:func:`_cannot_help`). Where none names the levels, the NO_LEVEL_LANDMARK message lists every other
    series of the study and what became of it; where one does after others failed, the numbering notes
    list those.

    ``done`` holds what this run segmented already (``study.StudyMemo``): a station segmented as another's
    partner is not segmented again (with ``SPINESEG_PARTNER=always`` its own count is still checked, once),
    the partner found there is reused, and one that failed is not tried again.
    """
    done = StudyMemo() if done is None else done
    memo = NetworkMemo()        # a retry with a partner's labels reuses this series' network outputs
    cached = done.get(volume.series.series_uid)
    if cached is not None and not cached.failed:
        if cfg.partner == "always" and not cached.count_checked:
            cached.count_checked = True
            cross_check_count(volume, cached.result, study, models, cfg, report, done)
        return cached.result
    try:
        if cached is not None:        # it failed as another series' partner: the same weights fail it again
            raise cached.error
        result = segment(volume, models, report, memo)
        entry = done.segmented(volume.series.series_uid, volume.affine, result)
        if cfg.partner == "always":
            entry.count_checked = True
            cross_check_count(volume, result, study, models, cfg, report, done)
        return result
    except InputError as exc:
        done.failed(volume.series.series_uid, exc)     # as a partner of another series, it is not tried again
        if exc.code != "NO_LEVEL_LANDMARK":
            raise
        no_landmark = exc
    candidates, refused = partner_candidates(volume.series, study)
    tried: list[str] = []           # "series N (...): what happened", for the message or the notes
    for i, partner in enumerate(candidates):
        name = series_name(partner)
        if len(tried) == cfg.partner_max_attempts:
            rest = [series_name(s) for s in candidates[i:]]
            refused.append(f"{', '.join(rest)}: not tried, {len(tried)} partner series were tried already "
                           "(SPINESEG_PARTNER_MAX_ATTEMPTS)")
            log.info("series %s: partner search stopped after %d attempts", volume.series.series_number, len(tried))
            break
        reason = _cannot_help(partner, cfg, done)
        if reason:
            refused.append(f"{name}: skipped, {reason}")
            continue
        log.info("series %s has no landmark; labelling it with the help of %s", volume.series.series_number,
                 logsafe.escape(name))
        try:
            partner_affine, anchor = _segmented_partner(partner, models, cfg, report, done)
        except InputError as err:
            tried.append(f"{name}: tried, its own segmentation ended " + (
                f"{err.code} (no landmark disc either)" if err.code == "NO_LEVEL_LANDMARK" else
                f"{err.code} ({err.message.split(';')[0]})"))
            continue
        try:
            loc = localizer_image(anchor.labels, partner_affine, dicom_stack=True)
            result = segment(volume, models, report, memo, localizer=loc, localizer_name=name)
        except InputError as err:
            tried.append(f"{name}: tried, labelling series {volume.series.series_number} with it ended {err.code} "
                         f"({err.message.split(';')[0]})")
            continue
        if result.numbering is not None and anchor.numbering is not None:
            result.numbering.notes.append(f"levels named from {name}, itself numbered from "
                                          f"{' and '.join(anchor.numbering.anchors) or 'no landmark'} "
                                          f"(confidence {anchor.numbering.confidence})")
            if tried:
                result.numbering.notes.append("partner series tried before it: " + "; ".join(tried))
        result.partner = {"series_instance_uid": partner.series_uid, "series_number": partner.series_number,
                          "series_description": partner.description,
                          "anchors": anchor.numbering.anchors if anchor.numbering else [],
                          "confidence": anchor.numbering.confidence if anchor.numbering else None}
        done.segmented(volume.series.series_uid, volume.affine, result)
        return result
    others = tried + refused
    raise InputError("NO_LEVEL_LANDMARK", no_landmark.message + " No other series of the study could name its "
                     "levels" + (": " + "; ".join(others) if others else " (the study holds no other series)") + ".",
                     series_uid=volume.series.series_uid) from no_landmark


def series_name(series: SeriesInfo) -> str:
    return f"series {series.series_number} ({series.description or 'no description'})"


def _cannot_help(partner: SeriesInfo, cfg: AppConfig, done: StudyMemo) -> str | None:
    """Why segmenting ``partner`` certainly cannot name a series' levels, or None. Only certainties count, as
    they cost no partner attempt: the same series segmented already in this run and failed (the same weights
    give the same labels), or one the loader refuses from its headers alone (``preflight``: one image, mixed
    geometry, as a three-plane localizer has, missing slices, too large), which it would refuse again before
    any segmentation. Geometry that cannot help is refused earlier (``localizer.partner_candidates``: another
    Frame of Reference, too little overlap, no coverage beyond the series'). A series segmented without a
    landmark does NOT rule out another that covers the same part of the spine: a low-resolution localizer may
    miss a landmark that a cervical T2 beside it shows; such candidates are tried, within the bound."""
    cached = done.get(partner.series_uid)
    if cached is not None and cached.failed:
        return f"segmented already in this run, which ended {cached.error.code}"
    if cached is None:
        try:
            preflight(partner, cfg.max_voxels)
        except InputError as err:
            return f"it cannot be processed ({err.code})"
    return None


def _segmented_partner(partner: SeriesInfo, models: ModelPair, cfg: AppConfig, report: RunReport,
                       done: StudyMemo) -> tuple:
    """(affine, result) of a partner series, segmented once per run; its InputError, raised again, when that
    segmentation failed (kept in ``done``)."""
    if partner.series_uid not in done:
        with report.stage("partner"):
            try:
                partner_volume = load_volume(partner, cfg.max_voxels)
                done.segmented(partner.series_uid, partner_volume.affine,
                               segment_volume(partner_volume.array, partner_volume.affine, models, dicom_stack=True))
                del partner_volume
            except InputError as err:
                done.failed(partner.series_uid, err)
    entry = done.get(partner.series_uid)
    if entry.failed:
        raise entry.error
    return entry.affine, entry.result


def cross_check_count(volume: Volume, result: SegmentationResult, study: list[SeriesInfo], models: ModelPair,
                      cfg: AppConfig, report: RunReport, done: StudyMemo) -> None:
    """``SPINESEG_PARTNER=always``: check a series' own count against the partner covering most of the spine
    (a whole-spine localizer, say); where the partner's count is the stronger (counted from C2-C3, as
    TotalSpineSeg numbers a whole spine) and they differ by one shift, renumber this series to it."""
    candidates, _ = partner_candidates(volume.series, study)
    if not candidates:
        return
    partner = candidates[0]
    name = series_name(partner)
    try:
        partner_affine, anchor = _segmented_partner(partner, models, cfg, report, done)
    except InputError as err:
        if result.numbering is not None:
            result.numbering.notes.append(f"count not checked against {name}: {err.code}")
        return
    comparison = compare_stations(result.labels, volume.affine, anchor.labels, partner_affine)
    if not comparison.judged:
        if result.numbering is not None:
            result.numbering.notes.append(f"count not checked against {name}: too little anatomy seen by both")
        return
    view = (SimpleNamespace(series=partner, affine=partner_affine), anchor)
    ranks = {id(result): _count_rank(result), id(anchor): _count_rank(anchor)}
    if reconcile((volume, result), view, ranks, fixed=anchor, comparison=comparison) and result.numbering is not None:
        result.numbering.notes.append(f"count checked against {name}, numbered from "
                                      f"{' and '.join(anchor.numbering.anchors) if anchor.numbering else '?'}")


def _count_rank(result: SegmentationResult) -> int:
    """How much a numbering's count is worth (stations.ANCHOR_PRIORITY): its own anchors, or those of the
    partner it was named from."""
    anchors = list(result.numbering.anchors) if result.numbering else []
    anchors += (result.partner or {}).get("anchors", [])
    return anchor_rank(anchors)


def check_station_agreement(segmented: list[tuple[Volume, SegmentationResult]]) -> None:
    """One numbering for a study. Where two processed series of one Frame of Reference name the vertebrae
    they both see differently (each counted from its own landmarks; transitional anatomy does that), the
    one whose count TotalSpineSeg would trust less on a single whole-spine image (stations.ANCHOR_PRIORITY:
    C2-C3 first) is renumbered to the other's count when one level shift explains the difference; both are
    flagged (confidence low, a warning naming the series and levels), since the anatomy is then atypical.
    Where no shift explains it, or both counts rest on the same landmark, both are only flagged."""
    ranks = {id(r): _count_rank(r) for _, r in segmented}
    # pairs in series order, whatever order the series were processed in: the messages name them alike
    ordered = sorted(segmented, key=lambda pair: (pair[0].series.series_number is None,
                                                  pair[0].series.series_number or 0, pair[0].series.series_uid))
    for i in range(len(ordered)):
        for j in range(i + 1, len(ordered)):
            if same_frame(ordered[i][0].series, ordered[j][0].series):
                reconcile(ordered[i], ordered[j], ranks)


def reconcile(a: tuple, b: tuple, ranks: dict[int, int], fixed: SegmentationResult | None = None,
              comparison=None) -> bool:
    """Compare two (volume, result) pairs of one Frame of Reference (``comparison``: theirs, when the caller
    made it already); where they name shared vertebrae differently, renumber the weaker count to the
    stronger (never ``fixed``, e.g. a partner that is not an output) and flag both. True when they agree
    (after renumbering, if any)."""
    (va, ra), (vb, rb) = a, b
    comparison = comparison or compare_stations(ra.labels, va.affine, rb.labels, vb.affine)
    if comparison.consistent:
        return True
    log.warning("series %s and %s name the vertebrae they share differently", va.series.series_number,
                vb.series.series_number)
    names = f"series {va.series.series_number} and series {vb.series.series_number}"
    told = f"{names} name the vertebrae they share differently ({comparison.describe()})"
    renumbered = _renumber_weaker(a, b, comparison, ranks, fixed)
    if renumbered is not None:
        weak, strong, shift = renumbered
        warning = (f"{told}; series {weak.series.series_number} was renumbered {abs(shift)} level(s) "
                   f"{'down' if shift > 0 else 'up'} to the count of series {strong.series.series_number}, "
                   "which TotalSpineSeg would follow on one whole-spine image (counting from C2-C3). Two "
                   "landmarks disagree, so the anatomy is likely transitional: confirm the levels on a "
                   "whole-spine image")
        tag = "stations renumbered"
    else:
        warning = f"{told}: at least one count is wrong, confirm it on a whole-spine image"
        tag = "stations disagree"
    for result in (ra, rb):
        if result.numbering is not None:
            result.numbering.flag(tag, warning)
            result.numbering.confidence = "low"
    return renumbered is not None


def _renumber_weaker(a: tuple, b: tuple, comparison, ranks: dict[int, int],
                     fixed: SegmentationResult | None = None) -> tuple[Volume, Volume, int] | None:
    """Renumber the station with the weaker count (``ranks``: id of a result -> its count's rank, updated
    here) to the other's, in place; (weak, strong, shift) or None where it cannot be done safely or the
    weaker one is ``fixed``."""
    (va, ra), (vb, rb) = a, b
    rank_a, rank_b = ranks[id(ra)], ranks[id(rb)]
    if rank_a == rank_b or comparison.shift == 0 or comparison.shift_share < AGREEMENT_FLOOR:
        return None
    # comparison.shift takes a's names to b's
    (weak_v, weak_r, strong_v, strong_r, shift) = ((va, ra, vb, rb, comparison.shift) if rank_a > rank_b
                                                   else (vb, rb, va, ra, -comparison.shift))
    if weak_r is fixed:
        return None
    shifted = renumber(weak_r.labels, shift)
    if shifted is None or not compare_stations(shifted, weak_v.affine, strong_r.labels, strong_v.affine).consistent:
        return None
    weak_r.labels = shifted
    ranks[id(weak_r)] = ranks[id(strong_r)]
    if weak_r.numbering is not None:
        weak_r.numbering.notes.append(f"levels renumbered {shift:+d} to the count of series "
                                      f"{strong_v.series.series_number}; the anchors, landmarks and ranges listed "
                                      "here are those of this series' own count, before renumbering")
    return weak_v, strong_v, shift


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
        if result.partner:
            entry["numbering"]["anchored_by"] = result.partner    # the series whose labels named the levels
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
                    "sop_class_uid": str(seg.SOPClassUID),
                    "series_number": int(seg.SeriesNumber), "segments": len(present),
                    **encoding_record(cfg.seg, seg), "transfer_syntax": str(seg.file_meta.TransferSyntaxUID)}
    entry["outputs"] = {"seg": path.name, "label_map": nifti.name}
    entry["dicom_outputs"] = [dicom_record("seg", seg, path)]
    write_reading_aids(volume, result, seg, models, cfg, report, stem, entry, sources, source_labels)
    return entry


def dicom_record(kind: str, ds, path: Path) -> dict:
    """What resend later checks a file against: its kind, name and identity."""
    return {"kind": kind, "file": path.name, "sop_class_uid": str(ds.SOPClassUID),
            "sop_instance_uid": str(ds.SOPInstanceUID), "series_instance_uid": str(ds.SeriesInstanceUID)}


class _Background:
    """``function(*args)`` in a daemon thread; :meth:`result` waits for it and returns its value or raises its
    error. For pictures: numpy, scipy and zlib leave the GIL, so they are drawn and encoded on the second core
    while the main thread builds the SEG's companions (highdicom, pure Python)."""

    def __init__(self, function, *args, **kwargs):
        self._value, self._error = None, None
        self._thread = threading.Thread(target=self._run, args=(function, args, kwargs), daemon=True,
                                        name="spineseg-picture")
        self._thread.start()

    def _run(self, function, args, kwargs) -> None:
        try:
            self._value = function(*args, **kwargs)
        except BaseException as exc:   # raised again by result(), in the thread that uses it
            self._error = exc

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _review_picture(volume: Volume, labels, phantom: bool, footer: list[str]) -> tuple:
    rgb, plane = render_review(volume.array, labels, volume.affine, phantom=phantom, footer=footer)
    return rgb, plane, encode_png(rgb)


def _table_picture(levels: list, phantom: bool, footer: list[str]) -> tuple:
    table = render_measurement_table(levels, phantom=phantom, footer=footer)
    return table.rgb, encode_png(table.rgb)


def write_reading_aids(volume: Volume, result: SegmentationResult, seg, models: ModelPair, cfg: AppConfig,
                       report: RunReport, stem: str, entry: dict, sources: list, source_labels) -> None:
    """Beside the SEG: per-level measurements (JSON and DICOM SR TID 1500) and the review picture (PNG and
    DICOM Secondary Capture), each optional (``spineseg.outputs``); with both, and an SR written, the
    measurement table too (PNG, and the second image of the review series); all written atomically and listed.

    The pictures are drawn and encoded in the background (:class:`_Background`) while the measurements and the
    SR are made (where the pictures' numpy, scipy and zlib leave the GIL, highdicom's pure Python goes on); each
    is written in its own stage, in the same order as ever, so a stage's time is what it still had to wait for
    and write."""
    phantom = models.kind == "phantom"
    footer = review_footer(result, models)
    review = _Background(_review_picture, volume, result.labels, phantom, footer) if cfg.outputs.review_image else None
    table = None
    if cfg.outputs.measurements:
        with report.stage("measure"):
            levels = measure_levels(result.labels, volume.affine)
            rows = measurements_table(levels)
            json_path = write_json_atomic(cfg.output_dir / f"{stem}_measurements.json",
                                          {"series_instance_uid": volume.series.series_uid,
                                           "phantom_model": phantom, "definitions": "docs/outputs.md#measurements",
                                           "levels": rows})
        if review is not None and measured_values(levels):      # an SR will be written: the table goes with it
            table = _Background(_table_picture, levels, phantom, footer)
        with report.stage("write_sr"):
            sr = build_measurement_sr(seg, sources, levels, phantom, volume)
            sr_path = write_dicom_atomic(sr, cfg.output_dir / f"{stem}_measurements_sr.dcm") if sr else None
        entry["measurements"] = rows
        entry["outputs"]["measurements_json"] = json_path.name
        report.add_output(json_path)
        if sr is None:
            report.warn(f"series {volume.series.series_number}: nothing could be measured ({unmeasured(levels)}); "
                        "no measurement SR written, the measurements JSON lists what was found")
        else:
            entry["outputs"]["measurements_sr"] = sr_path.name
            entry["dicom_outputs"].append(dicom_record("sr", sr, sr_path))
            report.add_output(sr_path)
    if review is not None:
        with report.stage("review_image"):
            rgb, plane, png_bytes = review.result()
            png = write_bytes_atomic(cfg.output_dir / f"{stem}_review.png", png_bytes)
            sc = build_review_sc(volume, rgb, plane, str(seg.SOPInstanceUID), phantom)
            sc_path = write_dicom_atomic(sc, cfg.output_dir / f"{stem}_review_sc.dcm")
        entry["outputs"].update({"review_png": png.name, "review_sc": sc_path.name})
        entry["dicom_outputs"].append(dicom_record("sc", sc, sc_path))
        report.add_output(png)
        report.add_output(sc_path)
        if table is not None:     # the SR's values, for the viewers that show no SR (drawn where an SR is written)
            with report.stage("measurement_table"):
                table_rgb, table_bytes = table.result()
                table_png = write_bytes_atomic(cfg.output_dir / f"{stem}_measurements_table.png", table_bytes)
                table_sc = build_table_sc(volume, table_rgb, plane, str(seg.SOPInstanceUID), phantom)
                table_path = write_dicom_atomic(table_sc, cfg.output_dir / f"{stem}_measurements_table_sc.dcm")
            entry["outputs"].update({"measurements_table_png": table_png.name,
                                     "measurements_table_sc": table_path.name})
            entry["dicom_outputs"].append(dicom_record("sc_table", table_sc, table_path))
            report.add_output(table_png)
            report.add_output(table_path)


def review_footer(result: SegmentationResult, models: ModelPair) -> list[str]:
    """The lines under the review picture and the measurement table: the numbering's confidence, what the
    field of view cannot verify, and the app, weights and derived-image line."""
    numbering = result.numbering
    return [numbering.content if numbering else "",
            *(f"Not verifiable in this view: {limit}" for limit in (numbering.cannot_verify if numbering else [])),
            f"{APP_NAME} {__version__} - TotalSpineSeg {weights_release(models.describe())} - "
            "derived image, not for primary diagnosis"]


def unmeasured(levels: list) -> str:
    """Why ``levels`` (measurements.measure_levels) hold no value, in a few words for the report."""
    if not levels:
        return "no vertebra, disc or sacrum segmented"
    cut = sum(m.cut_by_field_of_view for m in levels)
    return (f"{len(levels)} structure(s) segmented, {cut} of them cut by the field of view, none complete "
            "enough for a volume, height or canal section")


def seg_files(entries: list[dict], output_dir: Path) -> list[Path]:
    """Every DICOM object written for ``entries`` (write_study's), to deliver: per series its SEG, then its SR,
    review picture and measurement table."""
    files = []
    for e in entries:
        records = e.get("dicom_outputs") or ([{"file": e["outputs"]["seg"]}] if "seg" in e.get("outputs", {}) else [])
        files += [Path(output_dir) / r["file"] for r in records]
    return files


def deliver_results(entries: list[dict], cfg: AppConfig, report: RunReport) -> None:
    """Send the SEGs; raise DeliveryError (exit 5) when a configured destination did not take them."""
    with report.stage("deliver"):
        report.delivery = deliver_all(seg_files(entries, cfg.output_dir), cfg.destinations, cfg.retry)
    failed = [d for d in report.delivery.get("destinations", []) if d["status"] != "delivered"]
    if failed:
        raise DeliveryError("DELIVERY_FAILED", "Results are in the output folder but were not delivered to "
                            + "; ".join(f"{d['destination']} ({d['reason']})" for d in failed)
                            + ". Re-send later with `python -m spineseg.resend OUTPUT_FOLDER`.")


def segment_study(chosen: list[SeriesInfo], study: list[SeriesInfo], models: ModelPair, cfg: AppConfig,
                  report: RunReport) -> list[tuple[Volume, SegmentationResult]]:
    """Load and segment each chosen series (a partner of ``study`` names the levels of one without a
    landmark; each series is segmented once per run), then give the study one numbering where stations of
    one Frame of Reference disagree."""
    done = StudyMemo()
    segmented = []
    for series in chosen:
        volume = load_series(series, cfg, report)
        segmented.append((volume, segment_series(volume, study, models, cfg, report, done)))
    check_station_agreement(segmented)
    return segmented


def write_study(segmented: list[tuple[Volume, SegmentationResult]], models: ModelPair, cfg: AppConfig,
                report: RunReport) -> list[dict]:
    """Write every series' outputs; their report entries, in order (each also recorded in the report as
    soon as it is written)."""
    taken: set[str] = set()
    entries = []
    for volume, result in segmented:
        entries.append(write_results(volume, result, models, cfg, report, output_stem(volume, taken)))
        report.processed.append(entries[-1])
    return entries


def run_all(cfg: AppConfig, report: RunReport) -> list[dict]:
    """The whole job as plain calls (``--engine plain``); the Holoscan graph runs the same stages, one
    operator each, with the same data on its ports (operators/)."""
    scan = scan_study(cfg, report)
    chosen = choose_series(scan, cfg, report)
    models = get_models(cfg, report)
    segmented = segment_study(chosen, scan.series, models, cfg, report)
    entries = write_study(segmented, models, cfg, report)
    del segmented
    deliver_results(entries, cfg, report)
    return entries
