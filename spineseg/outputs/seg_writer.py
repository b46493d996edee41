"""DICOM SEG (and NIfTI label map) of a TotalSpineSeg result, built with highdicom.

One SEG per processed source series: it references every source instance, shares the source's
Frame of Reference, patient and study, names every structure with its SNOMED CT code, and
identifies the algorithm and the exact weights (release tag or "phantom" plus checksums), so a
phantom-model SEG can never pass for a clinical one.
"""
from __future__ import annotations

import gzip
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from spineseg import APP_NAME, __version__
from spineseg.outputs.atomic import write_atomic, write_bytes_atomic
from spineseg.outputs.codes_table import STRUCTURES
from spineseg.errors import InputError, SpineSegError

ENCODINGS = ("BINARY", "LABELMAP", "FRACTIONAL")     # PS3.3 C.8.20.2 Segmentation Type
SEGMENTATION_TYPES = ("AUTO", *ENCODINGS)
# what AUTO writes when BINARY frames would not start on a byte boundary (measured in OHIF, docs/seg-encodings-and-ohif.md)
AUTO_UNALIGNED = "LABELMAP"
COMPRESSION = {"none": ExplicitVRLittleEndian, "rle": RLELossless, "jpeg2000": JPEG2000Lossless}


@dataclass
class SegSettings:
    segmentation_type: str = "AUTO"          # AUTO | BINARY | LABELMAP | FRACTIONAL (see encoding_for)
    compression: str = "none"                # none | rle (not BINARY, so not AUTO) | jpeg2000
    series_number: int | None = None         # default: 1000 + source SeriesNumber
    series_description: str = "Spine segmentation (TotalSpineSeg)"
    content_creator_name: str = "SPINESEG^AI"
    institution_name: str | None = None

    def validate(self) -> None:
        if self.segmentation_type not in SEGMENTATION_TYPES:
            raise SpineSegError("BAD_SETTING", f"segmentation_type must be one of {SEGMENTATION_TYPES}, "
                                f"not {self.segmentation_type!r}")
        if self.compression not in COMPRESSION:
            raise SpineSegError("BAD_SETTING", f"compression must be one of {sorted(COMPRESSION)}, "
                                f"not {self.compression!r}")
        if self.series_number is not None and not (isinstance(self.series_number, int)
                                                   and 0 <= self.series_number <= 2**31 - 1):
            raise SpineSegError("BAD_SETTING", f"series_number must be an integer in 0..{2**31 - 1} (DICOM IS), "
                                f"not {self.series_number!r}")
        if self.segmentation_type in ("BINARY", "AUTO") and self.compression == "rle":
            # PS3.3 C.8.20.2: RLE is not allowed for 1-bit BINARY frames (and AUTO writes BINARY when it can)
            raise SpineSegError("BAD_SETTING", f"compression 'rle' is not allowed for {self.segmentation_type} "
                                "segmentations (BINARY frames cannot be RLE); use 'jpeg2000', 'none', or "
                                "segmentation_type LABELMAP or FRACTIONAL")


def encoding_for(settings: SegSettings, rows: int, columns: int) -> tuple[str, str]:
    """(Segmentation Type written, why) for frames of ``rows`` x ``columns``.

    BINARY frames are packed 1 bit per pixel with no padding between frames (PS3.5 8.1.1, PS3.3 C.8.20.2):
    when Rows x Columns is not a multiple of 8 every frame after the first starts inside a byte, which
    OHIF v3 decodes wrongly (issue 13, measured with tests/browser). AUTO then writes AUTO_UNALIGNED instead.
    """
    aligned = (rows * columns) % 8 == 0
    if settings.segmentation_type != "AUTO":
        return settings.segmentation_type, ("configured (segmentation_type setting)" if aligned or
                                            settings.segmentation_type != "BINARY" else
                                            f"configured (segmentation_type setting); {rows}x{columns} BINARY "
                                            "frames are not byte-aligned, which OHIF v3 mis-draws")
    if aligned:
        return "BINARY", f"auto: {rows}x{columns} frames are byte-aligned as 1-bit BINARY"
    return AUTO_UNALIGNED, (f"auto: {rows}x{columns} = {rows * columns} pixels is not a multiple of 8, so BINARY "
                            f"frames would not start on byte boundaries, which viewers mis-decode")


def encoding_record(settings: SegSettings, seg: Dataset) -> dict:
    """What report.json says of a written SEG's encoding: its Segmentation Type and why it was chosen."""
    written, reason = encoding_for(settings, int(seg.Rows), int(seg.Columns))
    return {"segmentation_type": written, "segmentation_type_setting": settings.segmentation_type,
            "segmentation_type_reason": reason}


def derived_uid(*parts: str) -> str:
    """Deterministic UID (2.25 root): re-running the same series with the same weights gives the
    same SEG identity, so a repeated delivery replaces rather than duplicates."""
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return "2.25." + str(int(digest[:32], 16))


def identity_key(source_datasets: list[Dataset], model_description: dict, settings: SegSettings) -> tuple:
    """What a SEG's identity derives from: the exact set of source instances (a series missing some
    slices is different content, so it must not share the UIDs of the full series), the weights, the
    app version and every setting that changes the object."""
    sources = sorted(f"{ds.SOPInstanceUID}:{int(getattr(ds, 'NumberOfFrames', 1) or 1)}" for ds in source_datasets)
    weights_id = model_description["step1"]["sha256"] + model_description["step2"]["sha256"]
    return (str(source_datasets[0].SeriesInstanceUID), hashlib.sha256("|".join(sources).encode()).hexdigest(),
            weights_id, __version__, repr(sorted(vars(settings).items())))


def seg_series_number(source: Dataset, settings: SegSettings) -> int:
    """The configured SeriesNumber, else 1000 + the source's, kept inside the IS range (0..2^31-1)."""
    if settings.series_number is not None:
        return settings.series_number
    return offset_series_number(source, 1000)


def offset_series_number(source: Dataset, offset: int) -> int:
    """``offset`` + the source's SeriesNumber, inside the IS range (0..2^31-1); 0 for an unreadable one."""
    try:
        number = int(float(getattr(source, "SeriesNumber", 0) or 0))
    except (TypeError, ValueError, OverflowError):
        number = 0
    return min(max(offset + number, 0), 2**31 - 1)


def segment_descriptions(label_values: list[int], algorithm, tracking_key: str) -> list:
    """One description per label value; tracking UIDs derive from ``tracking_key`` and the label,
    so the same structure of the same series keeps its identity across re-runs."""
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept

    descs = []
    for number, value in enumerate(label_values, start=1):
        entry = STRUCTURES[value]
        descs.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=entry["name"],
            segmented_property_category=CodedConcept(*entry["category"]),
            segmented_property_type=CodedConcept(*entry["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=derived_uid("tracking", tracking_key, str(value)),
            tracking_id=entry["name"],
            display_color=hd.color.CIELabColor.from_rgb(*entry["rgb"]),
        ))
    return descs


def weights_release(model_description: dict) -> str:
    """The weights' release ("r20260730", "phantom"), or both when the two steps differ."""
    s1, s2 = model_description["step1"]["release"], model_description["step2"]["release"]
    return s1 if s1 == s2 else f"{s1}+{s2}"


def algorithm_identification(model_description: dict):
    import highdicom as hd

    s1, s2 = model_description["step1"], model_description["step2"]
    release = weights_release(model_description)
    return hd.AlgorithmIdentificationSequence(
        name="TotalSpineSeg",
        family=codes.cid7162.ArtificialIntelligence,
        version=f"{release} step1:{s1['sha256'][:12]} step2:{s2['sha256'][:12]}"[:64],
        source=f"{APP_NAME} {__version__}",
        parameters={"weights": s1["kind"], "step1_sha256": s1["sha256"], "step2_sha256": s2["sha256"]},
    )


def compose_long_string(parts: list[str], limit: int = 64) -> str:
    """Join ``parts`` with "; " up to ``limit`` characters (LO, PS3.5 6.2), keeping whole parts:
    the first part always (cut only if it alone is too long), each later one only if it fits, so a
    safety notice placed first is never cut and nothing ends mid-word."""
    text = parts[0][:limit]
    for part in parts[1:]:
        if part and len(text) + 2 + len(part) <= limit:
            text = f"{text}; {part}"
    return text


_tables_read: threading.Thread | None = None


def _read_standard_tables() -> None:
    try:
        from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
        get_sop_class_iod_map(), get_iod_module_map(), get_module_attribute_map()
    except Exception:       # whatever fails here fails again where the SEG is made, and is reported there
        pass


def read_standard_tables_in_background() -> None:
    """Start reading highdicom's tables of the DICOM standard in a background thread, once per process.

    highdicom reads them (its module attribute map is a 22 MB JSON: 0.3 s here) when the first SEG, SR or
    Secondary Capture of a process is made. The pipeline starts this as the networks begin: nnU-Net's
    resampling leaves the GIL and a core free for most of that time. :func:`build_seg` waits for it; the
    tables are highdicom's own, cached as ever, so the objects are the same."""
    global _tables_read
    if _tables_read is None:
        _tables_read = threading.Thread(target=_read_standard_tables, name="spineseg-dicom-tables", daemon=True)
        _tables_read.start()


SHARED_GEOMETRY = ("PlaneOrientationSequence", "PixelMeasuresSequence")


def with_shared_geometry(source: Dataset) -> Dataset:
    """``source`` as highdicom can derive a SEG from it. highdicom reads a multi-frame image's orientation and
    pixel spacing from its shared functional groups only; an Enhanced MR image may hold them in each frame's
    group instead (Philips and Siemens XA do), and highdicom then refuses it ("Source images must have a
    shared orientation"). For such an image: a shallow copy whose shared group also holds the first frame's
    Plane Orientation and Pixel Measures, which every frame has alike (``dicom_input.load_volume`` refuses
    the series otherwise, MIXED_GEOMETRY). The copy is read, never written: the SEG references the source's
    own SOP Instance UID. Any other image is returned as it is."""
    import copy

    if "PerFrameFunctionalGroupsSequence" not in source or not len(source.PerFrameFunctionalGroupsSequence):
        return source
    shared = source.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in source else Dataset()
    first = source.PerFrameFunctionalGroupsSequence[0]
    missing = [kw for kw in SHARED_GEOMETRY if kw not in shared and kw in first]
    if not missing:
        return source
    shared = copy.deepcopy(shared)
    for keyword in missing:
        setattr(shared, keyword, copy.deepcopy(first[keyword].value))
    completed = copy.copy(source)
    completed.SharedFunctionalGroupsSequence = [shared]
    return completed


def build_seg(source_datasets: list[Dataset], labels: np.ndarray, model_description: dict,
              settings: SegSettings | None = None, numbering=None) -> tuple[Dataset, list[int]]:
    """DICOM SEG over ``source_datasets``: one per slice of ``labels`` in the same order, or a single
    multi-frame image whose frames are the slices of ``labels`` in frame order.

    ``numbering`` (:class:`spineseg.inference.numbering.Numbering`) puts how sure the level names are where a
    radiologist sees it: its short form in SeriesDescription (after the phantom warning, before the
    configured description) and in ContentDescription.

    Returns the dataset and the label values it holds as segments 1..N (empty structures left out).
    """
    import highdicom as hd

    if _tables_read is not None:
        _tables_read.join()         # highdicom's tables, read while the networks ran
    settings = settings or SegSettings()
    settings.validate()
    n_frames = sum(int(getattr(ds, "NumberOfFrames", 1) or 1) for ds in source_datasets)
    if labels.shape[0] != n_frames:
        raise SpineSegError("INTERNAL_GEOMETRY", f"{labels.shape[0]} label slices for {n_frames} source frames")
    present = [int(v) for v in np.unique(labels) if v != 0]
    unknown = [v for v in present if v not in STRUCTURES]
    if unknown:
        # not a bug to crash on: the weights produced a value outside TotalSpineSeg's final scheme
        raise InputError("UNKNOWN_LABEL", f"The segmentation holds label value(s) {unknown}, which are not in "
                         "TotalSpineSeg's final label scheme, so no SEG was written; the label map is kept in the "
                         "output folder. Check that the models are TotalSpineSeg's (README, 'Models').")
    lut = np.zeros(256, np.uint8)
    for number, value in enumerate(present, start=1):
        lut[value] = number
    segment_map = lut[labels]
    src = source_datasets[0]
    phantom = model_description["step1"]["kind"] == "phantom" or model_description["step2"]["kind"] == "phantom"
    # the phantom warning comes first so that the 64-character limit of LO can never cut it off, then
    # how sure the level names are, then the configured description if it still fits whole
    description = compose_long_string([*(["PHANTOM MODEL NOT FOR CLINICAL USE"] if phantom else []),
                                       *([numbering.short] if numbering is not None else []),
                                       settings.series_description])
    series_number = seg_series_number(src, settings)
    key = identity_key(source_datasets, model_description, settings)
    transfer_syntax = COMPRESSION[settings.compression]
    encoding, _ = encoding_for(settings, int(src.Rows), int(src.Columns))
    seg = hd.seg.Segmentation(
        source_images=[with_shared_geometry(ds) for ds in source_datasets],
        pixel_array=segment_map,
        segmentation_type=encoding,
        segment_descriptions=segment_descriptions(present, algorithm_identification(model_description),
                                                  str(src.SeriesInstanceUID)),
        series_instance_uid=derived_uid("series", *key),
        series_number=series_number,
        sop_instance_uid=derived_uid("instance", *key, hashlib.sha256(np.ascontiguousarray(labels)).hexdigest()),
        instance_number=1,
        manufacturer=APP_NAME,
        manufacturer_model_name=f"{APP_NAME} TotalSpineSeg",
        software_versions=__version__,
        device_serial_number="spine-seg",
        content_description=(numbering.content if numbering is not None else
                             ("Vertebrae, discs, spinal cord and canal by TotalSpineSeg"
                              + (" (phantom-trained test weights)" if phantom else ""))[:64]),
        content_creator_name=settings.content_creator_name,
        content_label="SPINESEG",
        transfer_syntax_uid=transfer_syntax,
        omit_empty_frames=True,
    )
    if encoding == "LABELMAP":
        # highdicom describes the background as segment 0, first in the Segment Sequence. The background is
        # optional in a LABELMAP SEG (PS3.3 C.8.20.2: Pixel Padding Value 0 marks it), and OHIF v3 gives each
        # segment the colour of the item at its number's position, so with that item every colour shifts by one.
        seg.SegmentSequence = [item for item in seg.SegmentSequence if int(item.SegmentNumber) != 0]
    seg.SeriesDescription = description
    if settings.institution_name:
        seg.InstitutionName = settings.institution_name
    return seg, present


def write_seg(seg: Dataset, path: Path) -> Path:
    return write_atomic(path, lambda tmp: seg.save_as(tmp, enforce_file_format=True))


def write_label_nifti(labels: np.ndarray, affine_lps: np.ndarray, path: Path) -> Path:
    """Label map in the source geometry (array axes as the DICOM stack: slice, row, column)."""
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    img = nib.Nifti1Image(labels.astype(np.uint8), ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    return write_bytes_atomic(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
