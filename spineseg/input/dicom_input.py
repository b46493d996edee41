"""Reading a DICOM study: header scan, series grouping and checked volume assembly.

The scan reads headers only (``stop_before_pixels``), so memory does not grow with the size of the
series we will not process; pixels are decoded in :func:`load_volume` for the chosen series alone.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from spineseg.input.codestream import BadCodestream, check_frames
from spineseg.errors import InputError
from spineseg.input.safe_read import Unreadable, read_dataset

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# relative tolerances for the slice stack
SPACING_TOLERANCE = 0.05      # 5 % deviation from the median slice step is still "uniform"
DUPLICATE_TOLERANCE_MM = 0.01


@dataclass
class SeriesInfo:
    """One series as seen by the header scan (no pixel data held)."""

    study_uid: str
    series_uid: str
    modality: str
    description: str
    series_number: int | None
    files: list[Path] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)

    @property
    def first(self) -> Dataset:
        return self.headers[0]

    @property
    def n_images(self) -> int:
        """Images in the series: frames of multi-frame (Enhanced) instances count one each."""
        total = 0
        for ds in self.headers:
            try:
                total += max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
            except (TypeError, ValueError):
                total += 1
        return total

    def summary(self) -> dict:
        """Identifiers and descriptors safe for logs and reports (no patient data)."""
        return {
            "study_instance_uid": self.study_uid,
            "series_instance_uid": self.series_uid,
            "series_number": self.series_number,
            "modality": self.modality,
            "series_description": self.description,
            "instances": len(self.files),
            "images": self.n_images,
            "image_type": [str(v) for v in safe_values(self.first, "ImageType")],
            "body_part_examined": " ".join(str(v) for v in safe_values(self.first, "BodyPartExamined")),
        }


@dataclass
class ScanResult:
    series: list[SeriesInfo]
    files_seen: int
    skipped: list[tuple[str, str]]     # (path, reason)


@dataclass
class Volume:
    """A series assembled into a 3D array with its geometry.

    ``array`` is indexed (slice, row, column) with slices sorted along the slice normal;
    ``affine`` maps those indices to patient (LPS) millimetres; ``datasets[k]`` is the header of
    the source instance of slice ``k``.
    """

    array: np.ndarray
    affine: np.ndarray
    datasets: list[Dataset]
    series: SeriesInfo
    warnings: list[str] = field(default_factory=list)
    source_frames: list[int] | None = None   # multi-frame source: its frame index of each slice

    def in_source_order(self, labels: np.ndarray) -> tuple[list[Dataset], np.ndarray]:
        """(source datasets, labels as frames in their order) as a SEG must reference them."""
        if self.source_frames is None:
            return self.datasets, labels
        out = np.empty_like(labels)
        out[self.source_frames] = labels
        return self.datasets, out

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(np.linalg.norm(self.affine[:3, i])) for i in range(3))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))


def scan_dicom(root: Path) -> ScanResult:
    """Find every DICOM image under ``root`` (recursively) and group it by series."""
    root = Path(root)
    if not root.exists():
        raise InputError("INPUT_NOT_FOUND", f"Input path {root} does not exist; mount or pass the folder "
                         "that holds the study's DICOM files.", path=str(root))
    skipped: list[tuple[str, str]] = []
    paths = [root] if root.is_file() else files_under(root, skipped)
    if not paths:
        raise InputError("EMPTY_INPUT", f"Input folder {root} is empty; it should hold the DICOM files of "
                         "one spine MR study.", path=str(root))
    by_series: dict[str, SeriesInfo] = {}
    for path in paths:
        try:
            ds = read_dataset(path, headers_only=True)
            fields = _header_fields(ds, path)
        except (Unreadable, OSError) as exc:     # a FIFO, a device, a file too large: never read
            skipped.append((str(path), str(exc) if isinstance(exc, Unreadable) else f"cannot open ({exc.strerror})"))
            continue
        except Exception as exc:  # pydicom raises many types on damaged files: skip and say why
            skipped.append((str(path), f"not readable as DICOM ({type(exc).__name__})"))
            continue
        if fields is None:
            skipped.append((str(path), "DICOMDIR (the images it indexes are scanned directly)"))
            continue
        if not fields["series_uid"] or not fields["study_uid"]:
            skipped.append((str(path), "no StudyInstanceUID/SeriesInstanceUID"))
            continue
        info = by_series.get(fields["series_uid"])
        if info is None:
            info = by_series[fields["series_uid"]] = SeriesInfo(
                study_uid=fields["study_uid"], series_uid=fields["series_uid"], modality=fields["modality"],
                description=fields["description"], series_number=fields["series_number"])
        info.files.append(path)
        info.headers.append(ds)
    if not by_series:
        raise InputError("NO_DICOM", f"No DICOM images found under {root} ({len(paths)} files, none readable "
                         "as DICOM images); check that the study was exported as DICOM Part 10 files.",
                         path=str(root))
    log.info("scanned %d files: %d series, %d skipped", len(paths), len(by_series), len(skipped))
    return ScanResult(sorted(by_series.values(), key=lambda s: (s.series_number or 0, s.series_uid)),
                      len(paths), skipped)


def files_under(root: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """Every file under ``root`` whose name does not start with a dot, sorted: what ``os.walk`` lists
    (symlinked folders are not entered, so there is no cycle), walked with an explicit stack, because
    ``os.walk`` recurses once per level and Python 3.11 ends a study ~1,000 folders deep with
    RecursionError. Depth has no bound of its own: each pending folder costs one path string, and the
    path limit (PATH_MAX, 4096 bytes) ends any descent, where the folder cannot be listed. A folder
    that cannot be listed (that, or permissions) is added to ``skipped`` with the reason; ``os.walk``
    passed over it in silence."""
    found: list[Path] = []
    unlisted: list[tuple[str, str]] = []
    stack = [os.fspath(root)]
    while stack:
        top = stack.pop()
        files, folders = [], []
        try:
            with os.scandir(top) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    if not is_dir:
                        files.append(entry.path)
                    elif not os.path.islink(entry.path):
                        folders.append(entry.path)
        except OSError as exc:
            unlisted.append((top, f"folder cannot be listed ({exc.strerror or type(exc).__name__})"))
            continue
        found.extend(Path(f) for f in files if not os.path.basename(f).startswith("."))
        stack.extend(folders)
    skipped.extend(sorted(unlisted))
    return sorted(found)


def safe_values(ds: Dataset, attr: str) -> list:
    """An attribute's values as a list; [] when absent or undecodable (damaged headers must not crash)."""
    try:
        value = getattr(ds, attr, None)
    except Exception:
        return []
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]


def _header_fields(ds: Dataset, path: Path) -> dict | None:
    """The grouping fields of a header, parsed now so that a damaged header fails here (None: DICOMDIR)."""
    sop_class = str(getattr(ds, "SOPClassUID", "") or "")
    media_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if DICOMDIR_SOP_CLASS in (sop_class, media_class) or path.name.upper() == "DICOMDIR":
        return None
    number = getattr(ds, "SeriesNumber", None)
    return {"series_uid": str(getattr(ds, "SeriesInstanceUID", "") or ""),
            "study_uid": str(getattr(ds, "StudyInstanceUID", "") or ""),
            "modality": str(getattr(ds, "Modality", "") or ""),
            "description": str(getattr(ds, "SeriesDescription", "") or ""),
            "series_number": int(number) if number not in (None, "") else None}


def _floats(ds: Dataset, attr: str, n: int, path) -> np.ndarray:
    """``n`` finite numbers from a multi-valued attribute, or a clear error naming the file."""
    try:
        value = getattr(ds, attr)
        out = np.array([float(v) for v in value], float)
    except Exception as exc:
        raise InputError("BAD_GEOMETRY", f"{path}: {attr} is missing or not numeric; the image cannot be placed "
                         "in space.", path=str(path)) from exc
    if out.shape != (n,) or not np.isfinite(out).all():
        raise InputError("BAD_GEOMETRY", f"{path}: {attr} should hold {n} finite numbers, it holds "
                         f"{list(out)}.", path=str(path))
    return out


def orientation(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and slice normal of an image (unit vectors, LPS)."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def plane_of(ds: Dataset) -> str:
    """'sagittal', 'coronal', 'axial' or 'oblique' from ImageOrientationPatient (of the first frame of a
    multi-frame image)."""
    try:
        if "ImageOrientationPatient" not in ds and "PerFrameFunctionalGroupsSequence" in ds:
            ds = _frame_refs(ds, Path("?"), int(getattr(ds, "NumberOfFrames", 1) or 1))[0].geometry
        _, _, n = orientation(ds)
    except (AttributeError, TypeError, ValueError, IndexError, InputError):
        return "unknown"
    axis = int(np.argmax(np.abs(n)))
    if abs(n[axis]) < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


@dataclass
class SliceRef:
    """One 2D image of a series: a single-frame file, or one frame of a multi-frame (Enhanced) file.
    ``geometry`` holds ImageOrientationPatient, ImagePositionPatient, PixelSpacing, Rows, Columns
    (and rescale values) as flat attributes, whichever the source."""

    path: Path
    frame: int | None
    geometry: Dataset

    def __str__(self) -> str:
        return f"{self.path} (frame {self.frame + 1})" if self.frame is not None else str(self.path)


FRAME_GROUPS = (("PlaneOrientationSequence", "ImageOrientationPatient"),
                ("PlanePositionSequence", "ImagePositionPatient"),
                ("PixelMeasuresSequence", "PixelSpacing"),
                ("PixelValueTransformationSequence", "RescaleSlope"),
                ("PixelValueTransformationSequence", "RescaleIntercept"))


def _frame_refs(ds: Dataset, path: Path, n_frames: int) -> list[SliceRef]:
    try:
        shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if len(per_frame) != n_frames:
            raise ValueError(f"{len(per_frame)} per-frame groups for {n_frames} frames")
        refs = []
        for i in range(n_frames):
            geo = Dataset()
            geo.Rows, geo.Columns = ds.Rows, ds.Columns
            for seq, attr in FRAME_GROUPS:
                for group in (per_frame[i], shared):
                    if seq in group and len(group[seq].value) and attr in group[seq].value[0]:
                        setattr(geo, attr, group[seq].value[0][attr].value)
                        break
            refs.append(SliceRef(path, i, geo))
        return refs
    except Exception as exc:
        raise InputError("BAD_GEOMETRY", f"{path}: the per-frame functional groups of this multi-frame image "
                         f"cannot be read ({type(exc).__name__}: {exc}).", path=str(path)) from exc


def slice_refs(series: SeriesInfo) -> list[SliceRef]:
    refs: list[SliceRef] = []
    for ds, path in zip(series.headers, series.files):
        try:
            n = int(getattr(ds, "NumberOfFrames", 1) or 1)
        except (TypeError, ValueError):
            n = 1
        if n > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            refs.extend(_frame_refs(ds, path, n))
        else:
            refs.append(SliceRef(path, None, ds))
    return refs


def _slice_stack(series: SeriesInfo, refs: list[SliceRef]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Order of the images along the slice normal, their positions, and the normal."""
    iops, ipps, spacings, sizes = [], [], [], []
    for ref in refs:
        ds, path = ref.geometry, ref
        for attr in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
            if getattr(ds, attr, None) in (None, ""):
                raise InputError("MISSING_GEOMETRY", f"Series {series.series_number} ({series.description!r}) has "
                                 f"no {attr} in {path}; the images cannot be placed in space. Export the original "
                                 "scanner series.", path=str(path), series_uid=series.series_uid)
        iop = _floats(ds, "ImageOrientationPatient", 6, path)
        if abs(np.linalg.norm(iop[:3]) - 1) > 0.01 or abs(np.linalg.norm(iop[3:]) - 1) > 0.01 or \
                abs(float(np.dot(iop[:3], iop[3:]))) > 0.01:
            raise InputError("BAD_GEOMETRY", f"{path}: ImageOrientationPatient {list(iop)} is not two orthogonal "
                             "unit vectors.", path=str(path), series_uid=series.series_uid)
        iops.append(tuple(np.round(iop, 3)))
        ipps.append(_floats(ds, "ImagePositionPatient", 3, path))
        spacing = _floats(ds, "PixelSpacing", 2, path)
        if (spacing <= 0).any():
            raise InputError("BAD_GEOMETRY", f"{path}: PixelSpacing {list(spacing)} must be positive.",
                             path=str(path), series_uid=series.series_uid)
        spacings.append(tuple(np.round(spacing, 4)))
        try:
            sizes.append((int(ds.Rows), int(ds.Columns)))
        except (TypeError, ValueError) as exc:
            raise InputError("BAD_GEOMETRY", f"{path}: Rows/Columns are not integers.", path=str(path),
                             series_uid=series.series_uid) from exc
    iops, sizes, spacings = set(iops), set(sizes), set(spacings)
    if len(iops) > 1 or len(sizes) > 1 or len(spacings) > 1:
        what = "orientations" if len(iops) > 1 else "image sizes" if len(sizes) > 1 else "pixel spacings"
        raise InputError("MIXED_GEOMETRY", f"Series {series.series_number} ({series.description!r}) mixes "
                         f"{what} across its {len(refs)} images; it is not one volume. Split it or send the "
                         "reconstructed series.", series_uid=series.series_uid)
    _, _, normal = orientation(refs[0].geometry)
    pos = np.array(ipps)
    d = pos @ normal
    order = list(np.argsort(d, kind="stable"))
    return order, pos[order], normal


def check_stack(series: SeriesInfo, refs: list[SliceRef]) -> tuple[list[int], np.ndarray, list[str]]:
    """Validate the slice stack; return sorted order, slice step vector and warnings."""
    if len(refs) < 2:
        raise InputError("SINGLE_SLICE", f"Series {series.series_number} ({series.description!r}) has a single "
                         "image; a 3D series of at least 2 slices is needed.", series_uid=series.series_uid)
    order, pos, normal = _slice_stack(series, refs)
    d = pos @ normal
    steps = np.diff(d)
    dup = np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM)
    if dup.size:
        f = refs[order[dup[0] + 1]]
        raise InputError("DUPLICATE_SLICES", f"Series {series.series_number} ({series.description!r}) has "
                         f"{dup.size + 1} images at the same position (e.g. {f}); it may hold several echoes "
                         "or repeats. Send a single-echo series.", path=str(f), series_uid=series.series_uid)
    med = float(np.median(steps))
    warnings = []
    bad = np.flatnonzero(np.abs(steps - med) > SPACING_TOLERANCE * med)
    if bad.size:
        ratio = steps[bad] / med
        if np.all(np.abs(ratio - np.round(ratio)) < 0.1) and np.all(ratio > 1.5):
            missing = int(np.sum(np.round(ratio) - 1))
            raise InputError("MISSING_SLICES", f"Series {series.series_number} ({series.description!r}) is missing "
                             f"{missing} slice(s) (gap after position {d[bad[0]]:.1f} mm along the slice normal); "
                             "resend the complete series.", series_uid=series.series_uid)
        raise InputError("NONUNIFORM_SPACING", f"Series {series.series_number} ({series.description!r}) has "
                         f"non-uniform slice spacing ({steps.min():.2f}-{steps.max():.2f} mm); it cannot be "
                         "treated as one volume.", series_uid=series.series_uid)
    step_vec = (pos[-1] - pos[0]) / (len(pos) - 1)
    if abs(float(np.dot(step_vec / np.linalg.norm(step_vec), normal))) < 0.999:
        warnings.append("slices are sheared (gantry tilt); geometry follows ImagePositionPatient")
    return order, step_vec, warnings


def _read_pixels(path: Path, series: SeriesInfo, rows: int, cols: int) -> tuple[Dataset, np.ndarray]:
    """A file's dataset (pixel data removed) and its decoded frames, or a specific error. What the
    decoder will allocate is checked first (see :func:`_check_decode_size`)."""
    try:
        ds = read_dataset(path, headers_only=False)
    except Exception as exc:
        raise InputError("CORRUPT_FILE", f"Cannot read {path} ({type(exc).__name__}); the file is damaged.",
                         path=str(path), series_uid=series.series_uid) from exc
    if "PixelData" not in ds:
        raise InputError("NO_PIXEL_DATA", f"{path} has no pixel data (a header-only or presentation object in "
                         "an image series); resend the complete series.", path=str(path),
                         series_uid=series.series_uid)
    _check_decode_size(ds, path, series, rows, cols)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt or truncated files
        raise InputError("CORRUPT_PIXEL_DATA", f"Cannot decode the pixel data of {path} "
                         f"({type(exc).__name__}: {exc}); the file is truncated, corrupt or uses an "
                         "unsupported transfer syntax.", path=str(path), series_uid=series.series_uid) from exc
    del ds.PixelData                      # keep the header only; the volume holds the pixels
    return ds, pixels


def _check_decode_size(ds: Dataset, path: Path, series: SeriesInfo, rows: int, cols: int) -> None:
    """Refuse pixel data whose decoding would allocate more than the series' checked grid: the
    header must still say Rows x Columns, one sample per pixel, at most 64 bits, and each compressed
    frame's own codestream must declare the same size (decoders allocate from it)."""
    def corrupt(what: str) -> InputError:
        return InputError("CORRUPT_PIXEL_DATA", f"{path}: {what}; the file is damaged or not a monochrome MR image.",
                          path=str(path), series_uid=series.series_uid)
    try:
        shape = (int(ds.Rows), int(ds.Columns))
        spp, bits = int(getattr(ds, "SamplesPerPixel", 1) or 1), int(ds.BitsAllocated)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise corrupt("Rows, Columns, BitsAllocated or NumberOfFrames is missing or not a number") from exc
    if shape != (rows, cols) or spp != 1 or bits not in (1, 8, 16, 32, 64) or frames < 1:
        raise corrupt(f"the pixel header ({shape[0]}x{shape[1]}, {spp} sample(s), {bits} bits) is not the "
                      f"series' {rows}x{cols} monochrome grid")
    try:                 # native pixel data is bounded by the file itself; compressed frames are not
        check_frames(ds, rows, cols, frames)
    except (BadCodestream, ValueError) as exc:
        raise corrupt(f"compressed pixel data: {exc}") from exc


def _rescale(ref: SliceRef, series: SeriesInfo) -> tuple[float, float]:
    try:
        slope = float(getattr(ref.geometry, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ref.geometry, "RescaleIntercept", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise InputError("BAD_RESCALE", f"{ref}: RescaleSlope/RescaleIntercept are not numbers.",
                         path=str(ref.path), series_uid=series.series_uid) from exc
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise InputError("BAD_RESCALE", f"{ref}: RescaleSlope/RescaleIntercept are not finite.",
                         path=str(ref.path), series_uid=series.series_uid)
    return slope, intercept


SUBJECT_ATTRIBUTES = (("MIXED_PATIENTS", "patients", ("PatientID", "PatientName", "PatientBirthDate")),
                      ("MIXED_STUDIES", "studies", ("StudyInstanceUID",)),
                      ("MIXED_FRAME_OF_REFERENCE", "frames of reference", ("FrameOfReferenceUID",)))


def check_one_subject(series: SeriesInfo) -> None:
    """Refuse a series whose instances belong to several patients, studies or frames of reference
    (a reused or colliding SeriesInstanceUID): one volume of two patients must never be segmented.
    The message names the kind of mix and a file, never the patient identifiers."""
    for code, what, attrs in SUBJECT_ATTRIBUTES:
        seen: dict[tuple, Path] = {}
        for ds, path in zip(series.headers, series.files):
            seen.setdefault(tuple(str(getattr(ds, a, "") or "").strip() for a in attrs), path)
        if len(seen) > 1:
            example = list(seen.values())[1]
            raise InputError(code, f"Series {series.series_number} ({series.description!r}) mixes {len(seen)} "
                             f"{what} under one SeriesInstanceUID (e.g. {example.name} differs from "
                             f"{series.files[0].name}); it is not one volume. Check the export and resend each "
                             "series on its own.", path=str(example), series_uid=series.series_uid)


def resampled_shape(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> tuple[int, int, int]:
    """Shape of the volume on TotalSpineSeg's 1 mm grid (an upper bound: each extent rounded up)."""
    return tuple(max(1, int(np.ceil(n * s))) for n, s in zip(shape, spacing_mm))


def check_size(series: SeriesInfo, shape: tuple[int, int, int], spacing_mm: tuple[float, float, float],
               max_voxels: int) -> None:
    """Refuse a series too large on its own grid or on the 1 mm grid inference resamples it to (a few
    slices with 12 mm pixels are small as sent and huge at 1 mm), before anything is allocated."""
    iso = resampled_shape(shape, spacing_mm)
    for grid, dims in (("", shape), (" once resampled to 1 mm", iso)):
        if int(np.prod(dims, dtype=np.int64)) > max_voxels:
            raise InputError("SERIES_TOO_LARGE", f"Series {series.series_number} ({series.description!r}) has "
                             f"{'x'.join(map(str, dims))} voxels{grid}, above the configured limit of {max_voxels}; "
                             "raise SPINESEG_MAX_VOXELS (and the memory) or send a smaller series.",
                             series_uid=series.series_uid)


def preflight(series: SeriesInfo, max_voxels: int | None = None) -> tuple[list[SliceRef], list[int], np.ndarray,
                                                                         list[str]]:
    """Every check made before decoding (one subject, a sound slice stack, the size as sent and at
    1 mm), from the headers alone, so a series that cannot be processed is refused before the models
    load or any pixel is read. Returns the slice refs, their order, the slice step and warnings."""
    check_one_subject(series)
    refs = slice_refs(series)
    order, step_vec, warnings = check_stack(series, refs)
    if max_voxels is not None:
        first = refs[order[0]].geometry
        dr, dc = (float(v) for v in first.PixelSpacing)
        check_size(series, (len(order), int(first.Rows), int(first.Columns)),
                   (float(np.linalg.norm(step_vec)), dr, dc), max_voxels)
    return refs, order, step_vec, warnings


def load_volume(series: SeriesInfo, max_voxels: int | None = None) -> Volume:
    """Decode the pixels of ``series`` into a float32 volume with its LPS affine.

    Classic series (one file per slice) and multi-frame Enhanced MR instances both work.
    """
    refs, order, step_vec, warnings = preflight(series, max_voxels)
    first = refs[order[0]].geometry
    rows, cols = int(first.Rows), int(first.Columns)
    n = len(order)
    array = np.empty((n, rows, cols), np.float32)
    decoded: dict[Path, tuple[Dataset, np.ndarray]] = {}
    datasets: list[Dataset] = []
    for k, idx in enumerate(order):
        ref = refs[idx]
        if ref.path not in decoded:
            decoded[ref.path] = _read_pixels(ref.path, series, rows, cols)
            if ref.frame is None or not datasets:
                datasets.append(decoded[ref.path][0])
        pixels = decoded[ref.path][1]
        if ref.frame is not None:
            if pixels.ndim != 3 or ref.frame >= pixels.shape[0]:
                raise InputError("CORRUPT_PIXEL_DATA", f"{ref.path} holds fewer frames than NumberOfFrames says.",
                                 path=str(ref.path), series_uid=series.series_uid)
            pixels = pixels[ref.frame]
        if pixels.shape != (rows, cols):
            raise InputError("CORRUPT_PIXEL_DATA", f"{ref} holds pixels of shape {pixels.shape}, expected "
                             f"{(rows, cols)}.", path=str(ref.path), series_uid=series.series_uid)
        slope, intercept = _rescale(ref, series)
        with np.errstate(over="ignore", invalid="ignore"):
            array[k] = pixels.astype(np.float32) * slope + intercept
        if not np.isfinite(array[k]).all():
            raise InputError("BAD_RESCALE", f"{ref}: RescaleSlope/RescaleIntercept {slope}/{intercept} give values "
                             "outside the floating-point range.", path=str(ref.path), series_uid=series.series_uid)
        if ref.frame is None:
            decoded.pop(ref.path)         # single-frame files are used once: free their pixels now
    if len({r.path for r in refs if r.frame is not None}) > 1:
        raise InputError("MIXED_GEOMETRY", f"Series {series.series_number} ({series.description!r}) spreads its "
                         "frames over several multi-frame instances; send one instance per volume.",
                         series_uid=series.series_uid)
    frames = [refs[i].frame for i in order] if refs[order[0]].frame is not None else None
    row, col, _ = orientation(first)
    dr, dc = (float(v) for v in first.PixelSpacing)   # PixelSpacing = (row spacing, column spacing)
    affine = np.eye(4)
    affine[:3, 0] = step_vec
    affine[:3, 1] = col * dr
    affine[:3, 2] = row * dc
    affine[:3, 3] = [float(v) for v in first.ImagePositionPatient]
    return Volume(array, affine, datasets, series, warnings, source_frames=frames)
