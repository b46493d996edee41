"""Partner series that can name the levels of a series without a landmark (``totalspineseg --loc``).

A thoracic-only series, a mid-lumbar crop or the middle station of a whole-spine exam shows none of
the landmark discs TotalSpineSeg numbers from. The same study usually holds one that does: a
whole-spine sagittal localizer or another station. A partner must be an MR series of the same study
and Frame of Reference (so patient coordinates mean the same thing in both) whose volume really
overlaps the target's in patient space; this module finds them from the headers alone, best first,
and says why each other series was refused. The pipeline then segments the partner and hands its
labels to totalspineseg's labelling as the reference command's ``--loc`` does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spineseg.errors import InputError
from spineseg.input.dicom_input import SeriesInfo, slice_refs

MIN_OVERLAP_MM = 20.0      # head-foot overlap a partner needs (about a vertebra and a disc)


@dataclass
class Extent:
    """A series' bounding box in patient space (LPS, mm), from its image corners."""

    lo: np.ndarray
    hi: np.ndarray

    def overlap(self, other: "Extent") -> np.ndarray:
        return np.minimum(self.hi, other.hi) - np.maximum(self.lo, other.lo)


def series_extent(series: SeriesInfo) -> Extent | None:
    """Bounding box of every image's four corners; None when the geometry is missing. A multi-frame (Enhanced)
    image is placed frame by frame from its functional groups, as the loader places it."""
    corners = []
    try:
        refs = slice_refs(series)
    except InputError:
        return None
    for ref in refs:
        ds = ref.geometry
        try:
            pos = np.asarray(ds.ImagePositionPatient, float)
            iop = np.asarray(ds.ImageOrientationPatient, float)
            dr, dc = (float(v) for v in ds.PixelSpacing)
            rows, cols = int(ds.Rows), int(ds.Columns)
        except (AttributeError, TypeError, ValueError):
            return None
        along_row, along_col = iop[:3] * dc * (cols - 1), iop[3:] * dr * (rows - 1)
        corners += [pos, pos + along_row, pos + along_col, pos + along_row + along_col]
    if not corners:
        return None
    pts = np.asarray(corners)
    return Extent(pts.min(axis=0), pts.max(axis=0))


def _frame_of_reference(series: SeriesInfo) -> str | None:
    return str(getattr(series.first, "FrameOfReferenceUID", "") or "") or None


def same_frame(a: SeriesInfo, b: SeriesInfo) -> bool:
    """Same study and the same (present) Frame of Reference: their patient coordinates can be compared."""
    fa = _frame_of_reference(a)
    return a.study_uid == b.study_uid and fa is not None and fa == _frame_of_reference(b)


def partner_candidates(target: SeriesInfo, others: list[SeriesInfo]) -> tuple[list[SeriesInfo], list[str]]:
    """Series that may anchor ``target``'s numbering, largest head-foot coverage first, and the reason
    each other series was refused."""
    refused, fits = [], []
    target_for, target_box = _frame_of_reference(target), series_extent(target)
    for s in others:
        if s.series_uid == target.series_uid:
            continue
        name = f"series {s.series_number}"
        if s.modality != "MR":
            refused.append(f"{name}: not MR")
        elif s.study_uid != target.study_uid:
            refused.append(f"{name}: another study")
        elif target_for is None or _frame_of_reference(s) != target_for:
            refused.append(f"{name}: another Frame of Reference, so its positions cannot be compared")
        else:
            box = series_extent(s)
            if box is None or target_box is None:
                refused.append(f"{name}: image geometry missing")
                continue
            overlap = box.overlap(target_box)
            if overlap[2] < MIN_OVERLAP_MM or overlap[0] <= 0 or overlap[1] <= 0:
                refused.append(f"{name}: does not overlap series {target.series_number} in patient space "
                               f"(head-foot {box.lo[2]:.0f}..{box.hi[2]:.0f} mm vs "
                               f"{target_box.lo[2]:.0f}..{target_box.hi[2]:.0f} mm)")
            elif box.lo[2] >= target_box.lo[2] - 1 and box.hi[2] <= target_box.hi[2] + 1:
                refused.append(f"{name}: covers no more of the spine than series {target.series_number}")
            else:
                fits.append((float(box.hi[2] - box.lo[2]), s))
    fits.sort(key=lambda item: -item[0])
    return [s for _, s in fits], refused
