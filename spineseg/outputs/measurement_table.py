"""The per-level measurements as a readable table picture, for the PACS viewers that show no SR.

Most viewers list a measurement SR (TID 1500) without showing its values, but every one shows an image:
the table is written as the second image of the review Secondary Capture series (``sc_writer``).

One row per structure that ``measurements.measure_levels`` found, head to foot, with its level name and
the structure's overlay colour (as in the review picture); columns volume (mm3), height anterior / centre
/ posterior (mm: the disc's height for a disc, the vertebral body's for a vertebra), spinal canal
cross-sectional area (mm2) and antero-posterior diameter (mm) and cord area (mm2) at each disc level,
and a note. Each value is printed as the SR holds it: rounded to 2 decimals (``round(value, 2)``, as
``sr_writer`` and the measurements JSON round), in the SR's units, so the picture, the SR and the JSON
read the same numbers. "-" is a value not measured; a structure cut by the field of view says so.

Below the table come the numbering confidence and the app line (the same text as the review picture's
footer); with the bundled phantom weights a red banner heads the picture. Text is at least 18 px
(DejaVu Sans Bold). A whole spine (about 50 rows) stays one image, taller: one page keeps the column
headings above every row when the viewer scrolls or zooms, where a second page would lose them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spineseg.outputs.codes_table import STRUCTURES
from spineseg.outputs.measurements import LevelMeasurements
from spineseg.outputs.review_image import PHANTOM_BANNER, font_path, wrap_text

TITLE = "Spine measurements per level (values as in the measurement SR)"
NOT_MEASURED = "-"
CUT_NOTE = "cut by field of view"
# (LevelMeasurements field, heading, unit): the value columns, in order
VALUE_COLUMNS: list[tuple[str, str, str]] = [
    ("volume_mm3", "Volume", "mm³"),
    ("height_anterior_mm", "Height ant.", "mm"),
    ("height_centre_mm", "Height centre", "mm"),
    ("height_posterior_mm", "Height post.", "mm"),
    ("canal_area_mm2", "Canal area", "mm²"),
    ("canal_ap_diameter_mm", "Canal AP diam.", "mm"),
    ("cord_area_mm2", "Cord area", "mm²"),
]
HEADINGS: list[tuple[str, str]] = [("Level", ""), *((h, u) for _, h, u in VALUE_COLUMNS), ("Note", "")]
LEGEND = ("Height: disc height for a disc, vertebral body height for a vertebra (none for C1, C2). "
          "Canal and cord: cross-section at the disc level. - : not measured. Values rounded to 2 decimals, "
          "as in the SR and the measurements JSON (docs/outputs.md, Measurements).")
FONT_PX = 20
TITLE_PX = 26
PAD_X = 14
BACKGROUND = (0, 0, 0)
STRIPE = (32, 32, 40)
TEXT = (235, 235, 235)
MUTED = (170, 170, 170)


@dataclass
class RenderedTable:
    """The table picture and the text of every cell, as drawn (for checks without reading the pixels)."""

    rgb: np.ndarray                                      # (rows, columns, 3) uint8
    headings: list[str]                                  # one per column, "Volume (mm3)" etc.
    rows: list[list[str]]                                # per structure: level, the values, the note
    boxes: dict[tuple[int, int], tuple[int, int, int, int]]   # (row, column) -> (x0, y0, x1, y1) of its cell


def value_text(value: float | None) -> str:
    """A value as the SR holds it (``round(value, 2)``), printed with 2 decimals; "-" when not measured."""
    return NOT_MEASURED if value is None else f"{round(float(value), 2):.2f}"


def table_rows(levels: list[LevelMeasurements]) -> list[list[str]]:
    """One row of cell strings per structure: level name, each value column, note."""
    return [[m.level, *(value_text(getattr(m, name)) for name, _, _ in VALUE_COLUMNS),
             CUT_NOTE if m.cut_by_field_of_view else ""] for m in levels]


def render_measurement_table(levels: list[LevelMeasurements], *, phantom: bool,
                             footer: list[str]) -> RenderedTable:
    """The table of ``levels`` as an RGB picture, with the phantom banner when ``phantom`` and ``footer``
    (the review picture's: numbering confidence, what the view cannot verify, app and derived-image line)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path()), FONT_PX)
    small = ImageFont.truetype(str(font_path()), FONT_PX - 2)
    title_font = ImageFont.truetype(str(font_path()), TITLE_PX)
    rows = table_rows(levels)
    swatch = FONT_PX                                      # colour square before the level name
    widths = [int(max([font.getlength(h), font.getlength(u)] + [font.getlength(r[i]) for r in rows])) + 2 * PAD_X
              for i, (h, u) in enumerate(HEADINGS)]
    widths[0] += swatch + 8
    width = max(sum(widths) + 2 * PAD_X, 900)
    text_width = width - 2 * PAD_X
    footer_lines = [(ln, colour) for lines, colour in ((footer, TEXT), ([LEGEND], MUTED)) for line in lines if line
                    for ln in wrap_text(line, small, text_width)]
    line_h, row_h = int(small.size * 1.4), int(FONT_PX * 1.6)
    banner_h = int(TITLE_PX * 1.9) if phantom else 0
    title_y = banner_h + 12
    head_y = title_y + int(TITLE_PX * 1.8)
    body_y = head_y + 2 * row_h
    height = body_y + len(rows) * row_h + 12 + len(footer_lines) * line_h + 12
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if phantom:
        draw.rectangle([0, 0, width, banner_h], fill=(200, 0, 0))
        draw.text((width // 2, banner_h // 2), PHANTOM_BANNER, font=title_font, fill=(255, 255, 255), anchor="mm")
    draw.text((PAD_X, title_y), TITLE, font=title_font, fill=TEXT)
    lefts = [PAD_X + sum(widths[:i]) for i in range(len(widths))]
    for i, (heading, unit) in enumerate(HEADINGS):
        x = lefts[i] + widths[i] - PAD_X if 0 < i < len(HEADINGS) - 1 else lefts[i] + PAD_X
        anchor = "ra" if 0 < i < len(HEADINGS) - 1 else "la"
        draw.text((x, head_y), heading, font=font, fill=TEXT, anchor=anchor)
        draw.text((x, head_y + row_h), unit, font=font, fill=MUTED, anchor=anchor)
    draw.line([(PAD_X, body_y - 4), (width - PAD_X, body_y - 4)], fill=MUTED, width=2)
    boxes = {}
    for r, (m, cells) in enumerate(zip(levels, rows)):
        top = body_y + r * row_h
        if r % 2:
            draw.rectangle([PAD_X, top, width - PAD_X, top + row_h - 1], fill=STRIPE)
        middle = top + row_h // 2
        colour = tuple(int(c) for c in STRUCTURES[m.label]["rgb"])
        draw.rectangle([lefts[0] + PAD_X, middle - swatch // 2, lefts[0] + PAD_X + swatch, middle + swatch // 2],
                       fill=colour)
        for c, text in enumerate(cells):
            boxes[(r, c)] = (lefts[c], top, lefts[c] + widths[c], top + row_h)
            if c == 0:
                x, anchor = lefts[0] + PAD_X + swatch + 8, "lm"
            elif c == len(cells) - 1:
                x, anchor = lefts[c] + PAD_X, "lm"
            else:
                x, anchor = lefts[c] + widths[c] - PAD_X, "rm"
            draw.text((x, middle), text, font=font, fill=MUTED if text == NOT_MEASURED else TEXT, anchor=anchor)
    y = body_y + len(rows) * row_h + 12
    for line, colour in footer_lines:
        draw.text((PAD_X, y), line, font=small, fill=colour)
        y += line_h
    headings = [f"{h} ({u})" if u else h for h, u in HEADINGS]
    return RenderedTable(np.asarray(canvas), headings, rows, boxes)
