"""Per-level measurements from a final TotalSpineSeg label map, in patient space (millimetres).

Every measurement is taken on the label map as it is written (the source grid), through the
voxel -> LPS affine, so anisotropic and oblique series measure in true millimetres. Labels are
read by nearest voxel at points sampled every ``STEP_MM`` along lines or over planes.

Definitions (docs/outputs.md, "Measurements"):

* **volume** of each vertebra (whole bone as segmented), disc and the sacrum: voxel count x voxel
  volume.
* **local spine axis** at a disc: the normal of the disc (the principal axis of least extent of its
  voxels), pointing to the head; at a vertebra: the mean of the axes of the discs above and below.
  **Anterior** is the direction, perpendicular to the axis, from the spinal canal to the disc or
  vertebral body.
* **disc height** (anterior / centre / posterior): the length of the disc along lines parallel to
  the axis, through the disc centroid (centre) and through the points 15 % of the disc's
  antero-posterior depth inside its anterior and posterior margins.
* **vertebral body height** (anterior / middle / posterior): the same on the vertebral body, which
  is the part of the vertebra anterior to the spinal canal (posterior elements excluded); not for
  C1 (no body) and C2 (the dens).
* **spinal canal cross-sectional area** and **antero-posterior (sagittal) diameter** at each disc
  level: on the plane perpendicular to the axis through the canal at the disc's centre, the area
  of canal (canal + cord labels) and its length along the anterior direction through the section's
  centroid; **cord cross-sectional area** on the same plane, where the cord is segmented.

A structure whose voxels touch a face of the volume is cut by the field of view: its volume is
flagged and left out, and a height or section that reaches the edge of the volume is not reported.
A disc whose voxels lie in a single slice shows no orientation (its spread across the slices is
nil whatever the disc's true tilt, so the least-extent axis would be the slice normal): it gets no
axis, hence no heights or canal section of its own, rather than values that measure the slice.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from spineseg.labels import ANATOMICAL_SEQUENCE, CANAL, CORD, DISCS, NAMES, SACRUM, VERTEBRAE, level_name

STEP_MM = 0.2            # sampling step along lines and planes (well under any MR voxel)
MARGIN_FRACTION = 0.15   # anterior/posterior heights: this far inside the margins
NO_BODY = (11, 12)        # C1 has no body, C2's includes the dens


@dataclass
class LevelMeasurements:
    """Measurements of one structure; None where a value could not be taken (see ``notes``)."""

    label: int
    level: str
    volume_mm3: float | None = None
    cut_by_field_of_view: bool = False
    height_anterior_mm: float | None = None
    height_centre_mm: float | None = None
    height_posterior_mm: float | None = None
    canal_area_mm2: float | None = None          # discs: canal section at this disc level
    canal_ap_diameter_mm: float | None = None
    cord_area_mm2: float | None = None
    notes: list[str] = field(default_factory=list)
    # where each value was taken, in patient space (LPS, mm), keyed by the value's field name: a length's two
    # end points; a volume's centroid; an area's section centre (what the SR draws on the images)
    points_mm: dict[str, list[list[float]]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        out["points_mm"] = {k: [[round(float(c), 2) for c in p] for p in pts] for k, pts in self.points_mm.items()}
        return out

    def place(self, name: str, *points) -> None:
        self.points_mm[name] = [[float(c) for c in p] for p in points]


class _Grid:
    """World <-> voxel mapping of a label map and nearest-voxel lookups at world points."""

    def __init__(self, labels: np.ndarray, affine_lps: np.ndarray):
        self.labels = labels
        self.affine = np.asarray(affine_lps, float)
        self.inverse = np.linalg.inv(self.affine)
        self.shape = np.array(labels.shape)

    def world(self, index: np.ndarray) -> np.ndarray:
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lookup(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels at world points (N, 3) and whether each point lies inside the volume."""
        idx = np.rint(points @ self.inverse[:3, :3].T + self.inverse[:3, 3]).astype(int)
        inside = np.all((idx >= 0) & (idx < self.shape), axis=1)
        out = np.zeros(len(points), self.labels.dtype)
        out[inside] = self.labels[tuple(idx[inside].T)]
        return out, inside


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _run(hit: np.ndarray, start: int) -> tuple[int, int]:
    """First and last index of the run of True in ``hit`` that contains ``start``."""
    lo = hi = start
    while lo > 0 and hit[lo - 1]:
        lo -= 1
    while hi < len(hit) - 1 and hit[hi + 1]:
        hi += 1
    return lo, hi


def _sample_line(grid: _Grid, centre: np.ndarray, direction: np.ndarray, members, reach: float):
    """Offsets t (mm), membership and inside-volume flags of points centre + t * direction."""
    t = np.arange(-reach, reach + STEP_MM / 2, STEP_MM)
    values, inside = grid.lookup(centre + t[:, None] * direction)
    return t, np.isin(values, members), inside


def _run_segment(grid: _Grid, centre: np.ndarray, direction: np.ndarray, members, reach: float = 60.0):
    """Length (mm) and end points (LPS) of the run of ``members`` labels along ``direction`` through ``centre``
    (or within 1 mm of it): each sample stands for STEP_MM of line, so the ends lie half a step beyond the
    first and last sample and their distance is the length. None if the line misses the structure or the
    run reaches the edge of the volume."""
    t, hit, inside = _sample_line(grid, centre, direction, members, reach)
    near = np.flatnonzero(hit)
    mid = len(t) // 2
    if near.size == 0 or np.abs(near - mid).min() * STEP_MM > 1.0:
        return None
    lo, hi = _run(hit, int(near[np.argmin(np.abs(near - mid))]))
    if lo == 0 or hi == len(t) - 1 or not inside[lo - 1] or not inside[hi + 1]:
        return None
    ends = [centre + (t[lo] - STEP_MM / 2) * direction, centre + (t[hi] + STEP_MM / 2) * direction]
    return float((hi - lo + 1) * STEP_MM), ends


def _extent(grid: _Grid, centre: np.ndarray, direction: np.ndarray, members, reach: float = 80.0):
    """(back, front) offsets (mm) of the run of ``members`` along ``direction`` nearest ``centre``."""
    t, hit, _ = _sample_line(grid, centre, direction, members, reach)
    near = np.flatnonzero(hit)
    if near.size == 0:
        return None
    lo, hi = _run(hit, int(near[np.argmin(np.abs(near - len(t) // 2))]))
    return float(t[lo]), float(t[hi])


def _section(grid: _Grid, centre: np.ndarray, normal: np.ndarray, anterior: np.ndarray, radius: float = 30.0):
    """Points of the plane through ``centre`` perpendicular to ``normal`` (a square of side 2*radius
    sampled every STEP_MM), their labels and whether each lies inside the volume."""
    side = np.cross(normal, anterior)
    s = np.arange(-radius, radius + STEP_MM / 2, STEP_MM)
    a, b = np.meshgrid(s, s, indexing="ij")
    pts = centre + a.reshape(-1, 1) * anterior + b.reshape(-1, 1) * side
    values, inside = grid.lookup(pts)
    return pts, values, inside


def measure_levels(labels: np.ndarray, affine_lps: np.ndarray) -> list[LevelMeasurements]:
    """Measurements of every vertebra, disc and the sacrum present in ``labels`` (see module doc)."""
    grid = _Grid(labels, affine_lps)
    spacing = np.linalg.norm(grid.affine[:3, :3], axis=0)
    voxel_mm3 = float(np.prod(spacing))
    boxes = ndimage.find_objects(labels)
    present = [v for v in ANATOMICAL_SEQUENCE if v <= len(boxes) and boxes[v - 1] is not None]
    canal_values = (CORD, CANAL)

    def voxels(value):
        box = boxes[value - 1]
        idx = np.argwhere(labels[box] == value) + [s.start for s in box]
        return idx

    def touches_edge(value):
        box = boxes[value - 1]
        return any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape))

    # the head direction in patient space (LPS: +z), used to orient axes consistently
    head = np.array([0.0, 0.0, 1.0])
    canal_idx = np.argwhere(np.isin(labels, canal_values))
    canal_pts = grid.world(canal_idx) if len(canal_idx) else np.zeros((0, 3))

    def canal_centre_near(point, axis, half_width=3.0):
        if not len(canal_pts):
            return None
        near = np.abs((canal_pts - point) @ axis) < half_width
        return canal_pts[near].mean(axis=0) if near.any() else None

    def one_slice(value):
        return labels.shape[0] > 1 and boxes[value - 1][0].stop - boxes[value - 1][0].start == 1

    centroids, axes, anteriors = {}, {}, {}
    for v in present:
        pts = grid.world(voxels(v))
        centroids[v] = pts.mean(axis=0)
        if v in DISCS and len(pts) >= 10 and not one_slice(v):
            cov = np.cov((pts - centroids[v]).T)
            normal = np.linalg.eigh(cov)[1][:, 0]
            axes[v] = normal if normal @ head >= 0 else -normal
    for v in present:
        if v in VERTEBRAE:
            i = ANATOMICAL_SEQUENCE.index(v)
            near = [axes[d] for d in (ANATOMICAL_SEQUENCE[i - 1], ANATOMICAL_SEQUENCE[i + 1]) if d in axes]
            if near:
                axes[v] = _unit(np.sum(near, axis=0))
    for v, axis in axes.items():
        canal_c = canal_centre_near(centroids[v], axis)
        if canal_c is None:
            continue
        ap = centroids[v] - canal_c
        ap -= (ap @ axis) * axis
        if np.linalg.norm(ap) > 1e-6:
            anteriors[v] = _unit(ap)

    results = []
    for v in present:
        m = LevelMeasurements(v, level_name(v))
        m.cut_by_field_of_view = touches_edge(v)
        n_vox = int((labels[boxes[v - 1]] == v).sum())
        if m.cut_by_field_of_view:
            m.notes.append("cut by the field of view: volume not measured")
        else:
            m.volume_mm3 = n_vox * voxel_mm3
            m.place("volume_mm3", centroids[v])
        if v in DISCS and one_slice(v):
            m.notes.append("lies in a single slice: orientation, heights and canal section not measured")
        if v in axes and v in anteriors and v != SACRUM:
            _heights(grid, m, v, centroids[v], axes[v], anteriors[v], canal_pts, voxels)
        if v in DISCS and v in axes and v in anteriors:
            _canal_section(grid, m, centroids[v], axes[v], anteriors[v], canal_pts)
        results.append(m)
    return results


def _heights(grid, m, v, centroid, axis, anterior, canal_pts, points_of):
    if v in NO_BODY:
        return
    members = [v]
    centre = centroid
    if v in VERTEBRAE:
        # the body: vertebra voxels anterior to the canal's anterior wall at this level
        near = np.abs((canal_pts - centroid) @ axis) < 3.0
        if not near.any():
            m.notes.append("no spinal canal at this level: body heights not measured")
            return
        canal_c = canal_pts[near].mean(axis=0)
        wall = float(((canal_pts[near] - canal_c) @ anterior).max())
        box_pts = grid.world(points_of(v))
        body = box_pts[(box_pts - canal_c) @ anterior > wall + 1.0]
        if len(body) < 10:
            return
        centre = body.mean(axis=0)
    extent = _extent(grid, centre, anterior, members)
    if extent is None:
        return
    back, front = extent
    depth = front - back
    points = {"anterior": front - MARGIN_FRACTION * depth, "centre": 0.0 if v in DISCS else (back + front) / 2,
              "posterior": back + MARGIN_FRACTION * depth}
    for where, offset in points.items():
        run = _run_segment(grid, centre + offset * anterior, axis, members)
        if run is None:
            m.notes.append(f"{where} height not measured (reaches the edge of the volume or misses the structure)")
            continue
        setattr(m, f"height_{where}_mm", run[0])
        m.place(f"height_{where}_mm", *run[1])


def _canal_section(grid, m, centroid, axis, anterior, canal_pts):
    near = np.abs((canal_pts - centroid) @ axis) < 1.5
    if not near.any():
        m.notes.append("no spinal canal at this disc level")
        return
    centre = canal_pts[near].mean(axis=0)
    centre = centre - ((centre - centroid) @ axis) * axis          # onto the disc's mid-plane
    pts, values, inside = _section(grid, centre, axis, anterior)
    canal = np.isin(values, (CORD, CANAL))
    if not canal.any():
        return
    # the canal's own section: the connected piece nearest the centre (not another loop of canal)
    side = int(round(np.sqrt(len(values))))
    mask = canal.reshape(side, side)
    lab, _ = ndimage.label(mask)
    centre_piece = lab[side // 2, side // 2] or np.bincount(lab[lab > 0]).argmax()
    piece = (lab == centre_piece).reshape(-1)
    if not inside[piece].all() or _touches_square(lab == centre_piece):
        m.notes.append("canal section reaches the edge of the volume: not measured")
        return
    area = STEP_MM ** 2
    m.canal_area_mm2 = float(piece.sum() * area)
    section_centre = pts[piece].mean(axis=0)
    m.place("canal_area_mm2", section_centre)
    cord = piece & (values == CORD)
    if cord.any():
        m.cord_area_mm2 = float(cord.sum() * area)
        m.place("cord_area_mm2", pts[cord].mean(axis=0))
    run = _run_segment(grid, section_centre, anterior, [CORD, CANAL])
    if run is not None:
        m.canal_ap_diameter_mm = run[0]
        m.place("canal_ap_diameter_mm", *run[1])


def _touches_square(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def measurements_table(levels: list[LevelMeasurements]) -> list[dict]:
    """Plain JSON rows (report.json and ``*_measurements.json``)."""
    return [{"name": NAMES[m.label], **m.as_dict()} for m in levels]
