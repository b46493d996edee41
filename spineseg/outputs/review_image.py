"""A review picture for every PACS viewer: the mid-sagittal plane with the colour overlay and a level
tag beside each vertebra and disc, as RGB pixels (PNG and DICOM Secondary Capture, ``sc_writer``).

The plane is resampled in patient space through the spinal canal's median left-right position,
whatever the series' orientation, with the head up and anterior to the left (the radiological
sagittal convention), at no coarser than 0.6 mm per pixel so that the tags stay readable on a PACS
monitor. Text is drawn with a real font (DejaVu Sans: Debian's fonts-dejavu-core, else the copy
that matplotlib, a dependency of nnU-Net, ships). With the bundled phantom weights a red banner
says so; the picture is derived data with burned-in annotation and says that too.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from spineseg.outputs.codes_table import STRUCTURES
from spineseg.labels import level_name

PHANTOM_BANNER = "PHANTOM MODEL - NOT FOR CLINICAL USE"
FONT_NAMES = ("DejaVuSans-Bold.ttf",)
_FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu")]
SIDE_MARGIN_PX = 150       # room for the level tags left and right of the spine
MIN_HEIGHT_PX = 900
ALPHA = 0.42


def font_path() -> Path:
    """DejaVu Sans Bold: the system copy, else matplotlib's (always installed with nnunetv2)."""
    dirs = list(_FONT_DIRS)
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.submodule_search_locations:
        dirs.append(Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf")
    for d in dirs:
        for name in FONT_NAMES:
            if (d / name).is_file():
                return d / name
    raise FileNotFoundError("DejaVu Sans Bold not found (install fonts-dejavu-core or matplotlib)")


@dataclass
class ReviewPlane:
    """The resampled plane: grey image, labels, and the plane's geometry in patient space (LPS)."""

    grey: np.ndarray          # (rows, columns) float, source intensities
    labels: np.ndarray        # (rows, columns) uint8
    origin: np.ndarray        # LPS of pixel (0, 0)
    row_dir: np.ndarray       # LPS direction of increasing column index (to posterior)
    col_dir: np.ndarray       # LPS direction of increasing row index (to the feet)
    spacing: float            # mm per pixel, both directions
    x_mm: float               # LPS x (left-right) of the plane


def sagittal_plane(array: np.ndarray, labels: np.ndarray, affine_lps: np.ndarray) -> ReviewPlane:
    """Resample the mid-sagittal plane through the canal (or the labelled anatomy's centre)."""
    affine = np.asarray(affine_lps, float)
    inv = np.linalg.inv(affine)
    idx = np.argwhere(np.isin(labels, (1, 2)))
    if not len(idx):
        idx = np.argwhere(labels > 0)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    x_mm = float(np.median(world[:, 0]))
    anatomy = np.argwhere(labels > 0) @ affine[:3, :3].T + affine[:3, 3]
    lo, hi = anatomy.min(axis=0) - 15.0, anatomy.max(axis=0) + 15.0
    spacing_in = np.linalg.norm(affine[:3, :3], axis=0)
    spacing = float(min(0.6, max(0.3, spacing_in.min()), (hi[2] - lo[2]) / MIN_HEIGHT_PX))
    spacing = max(spacing, 0.25)
    n_cols = int(np.ceil((hi[1] - lo[1]) / spacing))
    n_rows = int(np.ceil((hi[2] - lo[2]) / spacing))
    origin = np.array([x_mm, lo[1], hi[2]])                  # anterior-superior corner (LPS y grows posterior)
    row_dir, col_dir = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    r, c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    pts = origin + r[..., None] * spacing * col_dir + c[..., None] * spacing * row_dir
    vox = pts.reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]
    grey = ndimage.map_coordinates(np.asarray(array, np.float32), vox.T, order=1, mode="constant", cval=0.0)
    lab = ndimage.map_coordinates(labels, vox.T, order=0, mode="constant", cval=0)
    return ReviewPlane(grey.reshape(n_rows, n_cols), lab.reshape(n_rows, n_cols).astype(np.uint8), origin,
                       row_dir, col_dir, spacing, x_mm)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(grey, [1.0, 99.5])
    scaled = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    return np.repeat(scaled.astype(np.uint8)[..., None], 3, axis=2)


def _overlay(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.float32)
    lut = np.zeros((256, 3), np.float32)
    for value, entry in STRUCTURES.items():
        lut[value] = entry["rgb"]
    mask = labels > 0
    out[mask] = (1 - ALPHA) * out[mask] + ALPHA * lut[labels[mask]]
    # a solid outline at each structure's border keeps neighbouring levels apart
    edge = mask & ((labels != np.roll(labels, 1, 0)) | (labels != np.roll(labels, 1, 1)))
    out[edge] = lut[labels[edge]]
    return out.astype(np.uint8)


def render_review(array: np.ndarray, labels: np.ndarray, affine_lps: np.ndarray, *, phantom: bool,
                  footer: list[str]) -> tuple[np.ndarray, ReviewPlane]:
    """RGB review picture (rows, columns, 3) and the plane it shows."""
    from PIL import Image, ImageDraw, ImageFont

    plane = sagittal_plane(array, labels, affine_lps)
    picture = _overlay(_grey_to_rgb(plane.grey), plane.labels)
    h, w = picture.shape[:2]
    tag_px = int(np.clip(h / 45, 18, 30))
    font = ImageFont.truetype(str(font_path()), tag_px)
    small = ImageFont.truetype(str(font_path()), max(16, int(tag_px * 0.8)))
    banner_h = int(tag_px * 1.9) if phantom else 0
    footer = [ln for line in footer if line for ln in wrap_text(line, small, w + 2 * SIDE_MARGIN_PX - 16)]
    footer_h = int(len(footer) * small.size * 1.35) + 10
    canvas = Image.new("RGB", (w + 2 * SIDE_MARGIN_PX, h + banner_h + footer_h), (0, 0, 0))
    canvas.paste(Image.fromarray(picture), (SIDE_MARGIN_PX, banner_h))
    draw = ImageDraw.Draw(canvas)
    if phantom:
        draw.rectangle([0, 0, canvas.width, banner_h], fill=(200, 0, 0))
        draw.text((canvas.width // 2, banner_h // 2), PHANTOM_BANNER, font=font, fill=(255, 255, 255), anchor="mm")
    _draw_tags(draw, plane.labels, font, banner_h)
    y = banner_h + h + 5
    for line in footer:
        draw.text((8, y), line, font=small, fill=(230, 230, 230))
        y += int(small.size * 1.35)
    return np.asarray(canvas), plane


def wrap_text(text: str, font, width: float) -> list[str]:
    """Split ``text`` at spaces into lines no wider than ``width`` pixels in ``font``."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + ([line] if line else [])


def _draw_tags(draw, labels: np.ndarray, font, top: int) -> None:
    """Vertebra (and sacrum) tags in front of the spine on the left, disc tags behind it on the right,
    each at its structure's centre row, pushed apart so that no two tags overlap."""
    boxes = ndimage.find_objects(labels)
    anatomy_cols = np.flatnonzero(labels.any(axis=0))
    if not anatomy_cols.size:
        return
    sides = {"left": [], "right": []}
    for value in range(1, len(boxes) + 1):
        if boxes[value - 1] is None or value in (1, 2):
            continue
        rows, _ = np.nonzero(labels == value)
        side = "right" if 63 <= value <= 100 else "left"
        sides[side].append((float(rows.mean()), value))
    line_h = font.size + 2
    for side, tags in sides.items():
        tags.sort()
        last = -1e9
        for row, value in tags:
            y = max(row, last + line_h)
            last = y
            text = level_name(value) if value != 50 else "S"
            colour = tuple(int(c) for c in STRUCTURES[value]["rgb"])
            if side == "left":
                x, anchor = SIDE_MARGIN_PX - 8, "rm"
            else:
                x, anchor = SIDE_MARGIN_PX + labels.shape[1] + 8, "lm"
            draw.text((x, top + y), text, font=font, fill=colour, anchor=anchor, stroke_width=2, stroke_fill=(0, 0, 0))
            # a leader line from the tag to the structure
            cols = np.flatnonzero(labels[int(row)] == value)
            if cols.size:
                target = SIDE_MARGIN_PX + (cols.min() if side == "left" else cols.max())
                draw.line([(x + (4 if side == "left" else -4), top + y), (target, top + row)], fill=colour, width=2)


def encode_png(rgb: np.ndarray) -> bytes:
    """The picture as PNG bytes (zlib at its smallest: PIL's ``optimize``; the encoder leaves the GIL)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_png(rgb: np.ndarray, path: Path) -> Path:
    """The picture as PNG, written atomically."""
    from spineseg.outputs.atomic import write_bytes_atomic
    return write_bytes_atomic(path, encode_png(rgb))
