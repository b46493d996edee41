"""Where a point in patient space falls on the source images: which image (and frame), and its 2D image
coordinates as a DICOM SR SCOORD holds them.

PS3.3 C.18.6.1.2 (Graphic Data of an SCOORD): column and row, where (0.0, 0.0) is the top left-hand corner of the
top left-hand pixel, so the centre of the first pixel is (0.5, 0.5). A point is placed on the image whose
plane is nearest to it, by orthogonal projection onto that plane. Slice positions and directions come from
the loaded volume's affine (slice k lies at affine @ (k, 0, 0); array index (slice, row, column)), never from
the headers, so single-frame and multi-frame (Enhanced, Legacy Converted) sources are placed alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class ImagePlacement:
    """Points drawn on one source image: the image, its frame (1-based; None when single-frame), the points'
    (column, row) SCOORD coordinates and how far (mm) the farthest point lay from the image's plane."""

    dataset: Dataset
    frame: int | None
    coordinates: np.ndarray          # (N, 2) float: column, row
    off_plane_mm: float


def _frame(volume, k: int) -> tuple[Dataset, int | None]:
    if volume.source_frames is None:
        return volume.datasets[k], None
    return volume.datasets[0], int(volume.source_frames[k]) + 1


def place_on_nearest_image(volume, points_lps) -> ImagePlacement:
    """``points_lps`` (N, 3) on the source image whose plane is nearest their mean."""
    affine = np.asarray(volume.affine, float)
    points = np.atleast_2d(np.asarray(points_lps, float))
    col_step, row_step = affine[:3, 1], affine[:3, 2]         # +1 row index, +1 column index
    row_dir, col_dir = row_step / np.linalg.norm(row_step), col_step / np.linalg.norm(col_step)
    normal = np.cross(row_dir, col_dir)
    positions = affine[:3, 3] + np.arange(volume.array.shape[0])[:, None] * affine[:3, 0]
    k = int(np.argmin(np.abs((points.mean(axis=0) - positions) @ normal)))
    offsets = points - positions[k]
    columns = offsets @ row_dir / np.linalg.norm(row_step) + 0.5
    rows = offsets @ col_dir / np.linalg.norm(col_step) + 0.5
    dataset, frame = _frame(volume, k)
    return ImagePlacement(dataset, frame, np.stack([columns, rows], axis=1),
                          float(np.abs(offsets @ normal).max()))


def drawn_length_mm(volume, placement: ImagePlacement) -> float:
    """The length of a two-point placement as a viewer measures it on the image (pixel spacing applied)."""
    affine = np.asarray(volume.affine, float)
    spacing = np.array([np.linalg.norm(affine[:3, 2]), np.linalg.norm(affine[:3, 1])])   # column, row
    return float(np.linalg.norm((placement.coordinates[1] - placement.coordinates[0]) * spacing))
