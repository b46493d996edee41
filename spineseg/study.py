"""What one run has segmented of a study, by series: plain data the study-level numbering works on.

A series is segmented at most once per run, whether as an output or as another series' partner (a localizer or
another station naming its levels, or checking its count): the memo keeps its geometry and result, or the coded
error that ended its segmentation (the same weights would end it the same way, so it is not tried again), and
whether its own count has been checked against a partner (``SPINESEG_PARTNER=always``), so that a series
segmented first as a partner still gets that check when its turn as an output comes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spineseg.errors import InputError
from spineseg.inference.two_step import SegmentationResult


@dataclass
class SegmentedSeries:
    """One series' segmentation in this run: its voxel -> LPS affine and result, or the error that ended it."""

    affine: np.ndarray | None
    result: SegmentationResult | None = None
    error: InputError | None = None
    count_checked: bool = False        # its count was checked against a partner (SPINESEG_PARTNER=always)

    @property
    def failed(self) -> bool:
        return self.error is not None


class StudyMemo:
    """Series instance UID -> :class:`SegmentedSeries`, for one run."""

    def __init__(self) -> None:
        self._by_uid: dict[str, SegmentedSeries] = {}

    def get(self, series_uid: str) -> SegmentedSeries | None:
        return self._by_uid.get(series_uid)

    def __contains__(self, series_uid: str) -> bool:
        return series_uid in self._by_uid

    def segmented(self, series_uid: str, affine: np.ndarray, result: SegmentationResult) -> SegmentedSeries:
        """Record a result; it replaces only a failure of the same series (the result a partner's help gave it)."""
        entry = SegmentedSeries(np.asarray(affine, float), result)
        self._by_uid[series_uid] = entry
        return entry

    def failed(self, series_uid: str, error: InputError) -> SegmentedSeries:
        entry = SegmentedSeries(None, error=error)
        self._by_uid[series_uid] = entry
        return entry
