"""Synthetic spine MRI phantoms with ground truth in the final TotalSpineSeg label scheme.

A phantom is an analytic description of a spine (levels, sizes, curvature, contrast) drawn from a
seed.  It is rendered on any voxel grid given as a voxel->LPS affine, so the same anatomy can be
sampled as a 1 mm training volume or as a clinical sagittal DICOM series (thick slices, fine
in-plane pixels, any orientation) whose ground truth lies in exactly the same world space.

Usable as functions (``make_phantom``, ``render``, ``write_dicom_series``; a whole series: ``render_case`` /
``render_series`` in memory, ``write_case`` / ``write_series`` as files) and as a command::

    python tools/phantom.py --seed 7 --fov lumbar --out study/ [--slice-thickness 3.5 --pixel 0.6]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# Final TotalSpineSeg label scheme
# ---------------------------------------------------------------------------------------------
CORD, CANAL, SACRUM = 1, 2, 50
VERTEBRA_LABELS = {
    **{f"C{i}": 10 + i for i in range(1, 8)},
    **{f"T{i}": 20 + i for i in range(1, 13)},
    **{f"L{i}": 40 + i for i in range(1, 7)},       # L6 exists with six lumbar vertebrae
}
VERTEBRA_NAMES = [n for n in VERTEBRA_LABELS if n != "L6"]  # the usual C1 .. L5, superior to inferior

# Variants of the number of mobile vertebrae (4-8 % of people have lumbosacral transitional anatomy):
# (thoracic vertebrae, lumbar vertebrae, extra sacrum length as a fraction of a lumbar level).
# A lumbarised S1 is a sixth lumbar-type vertebra taken from the top of the sacrum; a sacralised L5
# is fused to the sacrum, leaving four mobile lumbar vertebrae above a longer sacrum.
VARIANTS = {
    "normal": (12, 5, 0.0),
    "6-lumbar": (12, 6, 0.0),
    "4-lumbar": (12, 4, 0.0),
    "11-thoracic": (11, 5, 0.0),
    "lumbarised-S1": (12, 6, -1.0),
    "sacralised-L5": (12, 4, 1.0),
}


def spine_names(thoracic: int = 12, lumbar: int = 5) -> list[str]:
    """Vertebra names superior to inferior for a spine with this many thoracic and lumbar vertebrae."""
    return ([f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, thoracic + 1)]
            + [f"L{i}" for i in range(1, lumbar + 1)])


def disc_labels_below(names: list[str]) -> dict[str, int]:
    """Final label of the disc under each vertebra, as TotalSpineSeg names discs counting from C2-C3.

    Discs take the label of the vertebra above them; the disc under the last thoracic vertebra is the
    thoracolumbar junction (91, T12-L1) and the one under the last lumbar vertebra the lumbosacral
    junction (100, L5-S1), whatever the count, because those are the landmarks the networks see.
    """
    thoracic = [n for n in names if n[0] == "T"]
    lumbar = [n for n in names if n[0] == "L"]
    table = {}
    for name in names[1:]:
        region, n = name[0], int(name[1:])
        table[name] = {"C": 61, "T": 71, "L": 91}[region] + n
    table["C7"], table[thoracic[-1]], table[lumbar[-1]] = 71, 91, 100
    return table


DISC_BELOW = disc_labels_below(VERTEBRA_NAMES)  # vertebra name -> label of the disc under it (usual spine)
DISC_LABELS = sorted(set(DISC_BELOW.values()) | set(disc_labels_below(spine_names(12, 6)).values()))
ALL_LABELS = [CORD, CANAL] + list(VERTEBRA_LABELS.values()) + [SACRUM] + DISC_LABELS
FOV_KINDS = ("cervical", "lumbar", "whole", "cervicothoracic", "thoracolumbar")   # drawn when fov is None
# fields of view only on request: a thoracic series holds no landmark disc (C2-C3 .. L5-S1), so it can only be
# numbered with the help of another series of the study (a localizer or another station)
EXTRA_FOVS = ("thoracic",)

# T2-like tissue intensities (arbitrary units, jittered per case)
T2_TISSUES = {
    "background": 0.30, "fat": 0.75, "brain": 0.55, "csf": 1.00, "cord": 0.42, "marrow": 0.48,
    "cortex": 0.12, "nucleus": 0.92, "annulus": 0.38, "posterior": 0.36, "rib": 0.33, "ligament": 0.10,
}


@dataclass
class Level:
    name: str
    label: int
    z_top: float       # superior end of the bone (mm, LPS z, superior positive)
    z_bottom: float
    a: float           # body semi-axis, antero-posterior (mm)
    b: float           # body semi-axis, left-right (mm)
    canal_a: float
    canal_b: float
    disc_bottom: float | None = None   # inferior end of the disc under the body (None for sacrum)
    disc_label: int | None = None      # final label of that disc


@dataclass
class Phantom:
    """Analytic spine drawn from a seed; all lengths in mm, LPS world coordinates."""

    seed: int
    levels: list[Level]
    sacrum_top: float
    sacrum_bottom: float
    conus_z: float
    curve: tuple[float, ...]           # lordosis/kyphosis amplitudes and positions
    tissues: dict[str, float]
    fov: str
    fov_z: tuple[float, float]         # (superior, inferior) world z of the field of view
    noise: float
    bias: tuple[float, ...]
    scale: float
    extras: dict = field(default_factory=dict)
    variant: str = "normal"

    def level(self, name: str) -> Level:
        return next(lv for lv in self.levels if lv.name == name)

    def tangent(self, z: float) -> np.ndarray:
        """Unit vector of the canal centreline at height z, pointing to the head (LPS)."""
        dz = 0.01
        (x1, y1), (x0, y0) = (np.asarray(c, float) for c in (self.centre(np.array(z + dz)),
                                                                self.centre(np.array(z - dz))))
        t = np.array([float(x1 - x0) / (2 * dz), float(y1 - y0) / (2 * dz), 1.0])
        return t / np.linalg.norm(t)

    def canal_semi_axes(self, z):
        """Antero-posterior and left-right semi-axes of the canal's horizontal section at height(s) z,
        interpolated between the levels' mid-heights (above the sacrum, where it narrows)."""
        mids = [-(lv.z_top + lv.z_bottom) / 2 for lv in self.levels]
        return (np.interp(-z, mids, [lv.canal_a for lv in self.levels]),
                np.interp(-z, mids, [lv.canal_b for lv in self.levels]))

    def true_measurements(self) -> dict[int, dict[str, float]]:
        """What spineseg.outputs.measurements should find, from the analytic anatomy (label -> values).

        Bodies and discs are bounded by horizontal planes, so along the local axis (the centreline
        tangent t) their height is the vertical height divided by t_z; the canal is a sheared stack
        of horizontal ellipses, so its section perpendicular to t has area pi*a*b*t_z and
        antero-posterior diameter about 2*a*t_z. The cord's area is given where it is not tapering.
        """
        truth: dict[int, dict[str, float]] = {}
        for lv in self.levels:
            if lv.name not in ("C1", "C2"):
                tz = self.tangent((lv.z_top + lv.z_bottom) / 2)[2]
                truth[lv.label] = {"body_height_mm": (lv.z_top - lv.z_bottom) / tz}
            if lv.disc_bottom is None:
                continue
            zc = (lv.z_bottom + lv.disc_bottom) / 2
            tz = self.tangent(zc)[2]
            a, b = (float(v) for v in self.canal_semi_axes(zc))
            entry = {"disc_height_mm": (lv.z_bottom - lv.disc_bottom) / tz,
                     "canal_area_mm2": float(np.pi * a * b * tz), "canal_ap_diameter_mm": 2 * a * tz}
            if zc > self.conus_z + 25:
                by = {v.name: v for v in self.levels}
                cord_a = (4.5 if zc > by["C3"].z_top else 3.8) * self.scale
                cord_b = (6.5 if by["T1"].z_top < zc < by["C4"].z_top else 4.8) * self.scale
                entry["cord_area_mm2"] = float(np.pi * cord_a * cord_b * tz)
            truth[lv.disc_label] = entry
        return truth

    # -- centreline -----------------------------------------------------------------------
    def centre(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canal centre (x, y) at height z: sagittal curvature plus a little scoliosis."""
        ac, zc, at, zt, al, zl, sx, zs = self.curve
        g = lambda mu, w: np.exp(-0.5 * ((z - mu) / w) ** 2)  # noqa: E731
        y = -ac * g(zc, 60.0) + at * g(zt, 120.0) - al * g(zl, 70.0)
        x = sx * g(zs, 150.0)
        return x, y


def make_phantom(seed: int, fov: str | None = None, variant: str = "normal") -> Phantom:
    """Draw a phantom spine from ``seed``; ``fov`` picks the covered region (random if None),
    ``variant`` the number of thoracic and lumbar vertebrae (``VARIANTS``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    n_thoracic, n_lumbar, sacrum_extra = VARIANTS[variant]
    names = spine_names(n_thoracic, n_lumbar)
    disc_below = disc_labels_below(names)
    rng = np.random.default_rng(seed)
    s = float(rng.uniform(0.88, 1.12))
    if fov is None:
        fov = str(rng.choice(FOV_KINDS, p=[0.27, 0.33, 0.12, 0.14, 0.14]))
    levels: list[Level] = []
    z = 0.0
    for name in names:
        region, n = name[0], int(name[1:])
        if region == "C":
            h = {1: 9.0, 2: 22.0}.get(n, 13.0) * s
            a, b = (7.0 + 0.3 * n) * s, (10.0 + 0.4 * n) * s
            ca, cb = 7.5 * s, 11.0 * s
            disc = 5.0 * s
        elif region == "T":
            h = (16.0 + 0.65 * n) * s
            a, b = (9.0 + 0.45 * n) * s, (12.0 + 0.45 * n) * s
            ca, cb = 7.0 * s, 8.5 * s
            disc = (4.5 + 0.15 * n) * s
        else:
            h = (25.0 + 0.5 * n) * s
            a, b = (15.0 + 0.3 * n) * s, (20.0 + 0.7 * n) * s
            ca, cb = 8.5 * s, (10.0 + 0.4 * n) * s
            disc = (9.0 + 0.4 * n) * s
        h *= rng.uniform(0.95, 1.05)
        lvl = Level(name, VERTEBRA_LABELS[name], z, z - h, a, b, ca, cb)
        z -= h
        if name != "C1":
            lvl.disc_bottom = z - disc
            lvl.disc_label = disc_below[name]
            z -= disc
        levels.append(lvl)
    by_name = {lv.name: lv for lv in levels}
    # a sacralised L5 lengthens the sacrum by about a lumbar level, a lumbarised S1 shortens it
    sacrum_top, sacrum_bottom = z, z - (95.0 + 27.0 * sacrum_extra) * s
    last_t, l2 = by_name[f"T{n_thoracic}"], by_name["L2"]
    conus_z = float(rng.uniform(l2.z_top, last_t.z_bottom))
    c5, t7, l3 = (by_name[n] for n in ("C5", "T7", "L3"))
    curve = (
        rng.uniform(0, 10), (c5.z_top + c5.z_bottom) / 2,
        rng.uniform(0, 12), (t7.z_top + t7.z_bottom) / 2,
        rng.uniform(0, 12), (l3.z_top + l3.z_bottom) / 2,
        rng.uniform(-6, 6), rng.uniform(sacrum_top, 0),
    )
    tissues = {k: v * rng.uniform(0.85, 1.15) for k, v in T2_TISSUES.items()}
    # field of view along z: whole regions, with random margins so level positions vary
    def top_of(name):
        return by_name[name].z_top

    def mid_of(name):
        lv = by_name[name]
        return (lv.z_top + lv.z_bottom) / 2
    lowest_thoracic = [f"T{i}" for i in range(n_thoracic - 2, n_thoracic + 1)]
    m = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    if fov == "cervical":
        fov_z = (m(15, 35), mid_of(str(rng.choice(["T1", "T2", "T3"]))))
    elif fov == "lumbar":
        fov_z = (mid_of(str(rng.choice(lowest_thoracic))), sacrum_bottom + m(0, 40))
    elif fov == "whole":
        fov_z = (m(10, 30), sacrum_bottom + m(0, 30))
    elif fov == "cervicothoracic":
        fov_z = (m(10, 30), mid_of(str(rng.choice(["T7", "T8", "T9"]))))
    elif fov == "thoracolumbar":
        fov_z = (mid_of(str(rng.choice(["T4", "T5", "T6"]))), sacrum_bottom + m(0, 40))
    elif fov == "thoracic":
        fov_z = (mid_of(str(rng.choice(["T2", "T3"]))), mid_of(str(rng.choice(["T10", "T11"][:n_thoracic - 9]))))
    else:
        raise ValueError(f"unknown field of view {fov!r}; choose one of {FOV_KINDS + EXTRA_FOVS}")
    bias = tuple(rng.uniform(-0.25, 0.25, size=3)) + (float(rng.uniform(80, 200)),)
    return Phantom(
        seed=seed, levels=levels, sacrum_top=sacrum_top, sacrum_bottom=sacrum_bottom,
        conus_z=conus_z, curve=curve, tissues=tissues, fov=fov, fov_z=fov_z,
        noise=float(rng.uniform(0.02, 0.06)), bias=bias, scale=s,
        extras={"intensity_scale": float(rng.uniform(300, 2500)), "top_c1": top_of("C1")},
        variant=variant,
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _ellipse(u, v, a, b):
    return (u / a) ** 2 + (v / b) ** 2


def _classify(ph: Phantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label and tissue intensity (before noise and bias) at LPS points (flat arrays)."""
    T = ph.tissues
    cx, cy = ph.centre(z)
    u, v = y - cy, x - cx                  # u: posterior positive; v: left positive
    lab = np.zeros(z.shape, np.uint8)
    val = np.full(z.shape, T["background"], np.float32)
    val[u > 48 * ph.scale] = T["fat"]       # subcutaneous fat behind the paraspinal muscles
    val[u < -70 * ph.scale] = T["fat"]      # fat/organs in front of the spine
    top = ph.extras["top_c1"]
    brain = z > top + 4
    val[brain] = T["brain"]
    zmin, zmax = float(z.min()), float(z.max())

    def paint(mask, label, value):
        lab[mask] = label
        val[mask] = value

    # canal (CSF) from the foramen magnum to the sacral canal, then the cord inside it
    lv_by = {lv.name: lv for lv in ph.levels}
    canal_a, canal_b = ph.canal_semi_axes(z)
    sac_len = ph.sacrum_top - ph.sacrum_bottom
    t_sac = np.clip((ph.sacrum_top - z) / (0.55 * sac_len), 0, 1)
    canal_a = np.where(z < ph.sacrum_top, canal_a * (1 - 0.55 * t_sac), canal_a)
    canal_b = np.where(z < ph.sacrum_top, canal_b * (1 - 0.35 * t_sac), canal_b)
    sac_shift = np.where(z < ph.sacrum_top, 0.35 * (ph.sacrum_top - z), 0.0)   # sacral tilt
    uc = u - sac_shift
    in_canal = (_ellipse(uc, v, canal_a, canal_b) <= 1) & (z <= top + 4) & (z >= ph.sacrum_top - 0.55 * sac_len)
    paint(in_canal, CANAL, T["csf"])
    cord_taper = np.clip((z - ph.conus_z) / 25.0, 0, 1) ** 0.5
    cord_a = np.where(z > lv_by["C3"].z_top, 4.5, 3.8) * ph.scale * cord_taper
    cord_b = np.where((z < lv_by["C4"].z_top) & (z > lv_by["T1"].z_top), 6.5, 4.8) * ph.scale * cord_taper
    in_cord = in_canal & (_ellipse(u - 0.8, v, np.maximum(cord_a, 1e-3), np.maximum(cord_b, 1e-3)) <= 1)
    paint(in_cord, CORD, T["cord"])

    # vertebrae, discs and their surroundings
    for i, lv in enumerate(ph.levels):
        lo = (lv.disc_bottom if lv.disc_bottom is not None else lv.z_bottom) - 40
        if lo > zmax or lv.z_top + (20 if lv.name == "C2" else 40) < zmin:
            continue
        zc = (lv.z_top + lv.z_bottom) / 2
        h = lv.z_top - lv.z_bottom
        ub = -(lv.canal_a + 1.5 + lv.a)                     # body centre, anterior to the canal
        in_z = (z <= lv.z_top) & (z >= lv.z_bottom)
        if lv.name == "C1":
            ring = in_z & (_ellipse(u, v, lv.canal_a + 3.5, lv.canal_b + 3.5) <= 1) & ~in_canal
            arch = in_z & (_ellipse(u - (-lv.canal_a - 9), v, 3.5, 8) <= 1)
            lat = in_z & (np.abs(v) < lv.canal_b + 18) & (np.abs(u + 3) < 5) & ~in_canal
            body_mask = ring | arch | lat
            paint(body_mask, lv.label, T["posterior"])
            continue
        e = _ellipse(u - ub, v, lv.a, lv.b)
        body = in_z & (e <= 1)
        rim = body & (e > (1 - 1.6 / min(lv.a, lv.b)) ** 2)
        rim |= body & ((z - lv.z_bottom < 1.2) | (lv.z_top - z < 1.2))
        paint(body, lv.label, T["marrow"])
        val[rim] = T["cortex"]
        if lv.name == "C2":   # the dens rises into the C1 ring
            c1 = ph.levels[0]
            dens = (z > lv.z_top) & (z <= c1.z_top - 1) & (_ellipse(u - (-lv.canal_a - 6), v, 4.5, 5) <= 1)
            paint(dens, lv.label, T["marrow"])
        # posterior arch (pedicles and laminae) around the canal, spinous and transverse processes
        t = (3.5 if lv.name[0] == "C" else 5.0) * ph.scale
        zr = in_z & (z <= lv.z_top - 0.12 * h) & (z >= lv.z_bottom + 0.1 * h)
        ring = zr & (_ellipse(u, v, lv.canal_a + t, lv.canal_b + t) <= 1) & (u > ub) & ~in_canal
        sp_len = {"C": 18, "T": 28, "L": 26}[lv.name[0]] * ph.scale
        slope = {"C": 0.3, "T": 0.8, "L": 0.1}[lv.name[0]]
        du = u - (lv.canal_a + t - 1)
        zs = z + slope * np.clip(du, 0, None)
        spinous = (du > 0) & (du < sp_len) & (np.abs(v) < 3.5) & (np.abs(zs - zc + 0.1 * h) < 0.3 * h + 2)
        tp_len = {"C": 10, "T": 14, "L": 20}[lv.name[0]] * ph.scale
        transverse = in_z & (np.abs(np.abs(v) - (lv.canal_b + t + tp_len / 2)) < tp_len / 2 + 2) & \
            (np.abs(u - 2) < 4.5) & (np.abs(z - zc) < 0.2 * h + 2)
        post = ring | spinous | transverse
        paint(post & (lab == 0), lv.label, T["posterior"])
        if lv.name[0] == "T":   # ribs: unlabelled bone beside the thoracic vertebrae, the landmark cue
            reach = lv.canal_b + t + tp_len
            rib = (np.abs(v) > reach) & (np.abs(z - zc) < 4.5) & (np.abs(u - 2 + 0.35 * (np.abs(v) - reach)) < 4.5)
            val[rib & (lab == 0)] = T["rib"]
        if lv.disc_bottom is not None:   # disc under this body
            nxt = ph.levels[i + 1] if i + 1 < len(ph.levels) else None
            a2 = (lv.a + (nxt.a if nxt else lv.a)) / 2 * 1.04
            b2 = (lv.b + (nxt.b if nxt else lv.b)) / 2 * 1.04
            in_dz = (z < lv.z_bottom) & (z >= lv.disc_bottom)
            ed = _ellipse(u - ub, v, a2, b2)
            disc = in_dz & (ed <= 1)
            dz = (lv.z_bottom - lv.disc_bottom)
            nucleus = disc & (ed < 0.45) & (np.abs(z - (lv.z_bottom + lv.disc_bottom) / 2) < 0.38 * dz)
            paint(disc, lv.disc_label, T["annulus"])
            val[nucleus] = T["nucleus"]
            # anterior and posterior longitudinal ligaments: thin dark bands
            lig = in_dz & ~disc & (np.abs(np.sqrt(ed) - 1) < 0.06) & (np.abs(v) < b2 * 0.6)
            val[lig & (lab == 0)] = T["ligament"]

    # sacrum: a tilted, tapering wedge with wide alae, holding the sacral canal
    l5 = ph.levels[-1]
    if ph.sacrum_bottom - 10 < zmax and ph.sacrum_top + 10 > zmin:
        tt = np.clip((ph.sacrum_top - z) / sac_len, 0, 1)
        ub = -(l5.canal_a + 1.5 + l5.a) + 0.35 * (ph.sacrum_top - z) * 1.3
        a_s = l5.a * (1.0 - 0.55 * tt)
        b_s = l5.b * (1.45 - 0.95 * tt)
        in_sz = (z <= ph.sacrum_top) & (z >= ph.sacrum_bottom)
        e = _ellipse(u - ub, v, a_s, b_s)
        body = in_sz & (e <= 1)
        back = in_sz & (_ellipse(uc, v, canal_a + 5, canal_b + 6) <= 1) & ~in_canal & (uc > -canal_a - 3)
        sac = (body | back) & (lab == 0)
        paint(sac, SACRUM, T["marrow"])
        val[sac & (e > 0.8) & body] = T["cortex"]
    return lab, val


def render(ph: Phantom, affine: np.ndarray, shape: tuple[int, int, int],
           oversample: tuple[int, int, int] = (1, 1, 1), noise_seed: int | None = None,
           ) -> tuple[np.ndarray, np.ndarray]:
    """Render ``ph`` on a voxel grid.

    Parameters
    ----------
    affine:
        4x4 matrix mapping voxel indices (i, j, k) of the output arrays to LPS world mm.
    shape:
        Output array shape.
    oversample:
        Sub-samples per voxel along each axis; the image averages them (partial volume of thick
        slices), the labels are taken at the voxel centre.

    Returns
    -------
    (image, labels): float32 MR-like intensities (arbitrary units) and uint8 final labels.
    """
    affine = np.asarray(affine, float)
    image = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    offsets = [((np.arange(n) + 0.5) / n - 0.5) if n > 1 else np.zeros(1) for n in oversample]
    subsamples = [(oi, oj, ok) for oi in offsets[0] for oj in offsets[1] for ok in offsets[2]]
    centre_sampled = (0.0, 0.0, 0.0) in subsamples
    jj, kk = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")

    def classify_at(i, oi, oj, ok):
        idx = np.stack([np.full(jj.size, i + oi), jj.ravel() + oj, kk.ravel() + ok, np.ones(jj.size)])
        x, y, z, _ = affine @ idx
        return _classify(ph, x, y, z)
    for i in range(shape[0]):                 # slab by slab keeps memory small for big grids
        acc = np.zeros(shape[1:], np.float32)
        for sub in subsamples:
            lab, val = classify_at(i, *sub)
            acc += val.reshape(shape[1:])
            if sub == (0.0, 0.0, 0.0):
                labels[i] = lab.reshape(shape[1:])
        if not centre_sampled:                # even sub-sampling has no centre sample: labels at the centre
            labels[i] = classify_at(i, 0.0, 0.0, 0.0)[0].reshape(shape[1:])
        image[i] = acc / len(subsamples)
    # smooth field bias, noise and a global scale, all reproducible from the seed
    rng = np.random.default_rng(ph.seed * 7919 + 1 if noise_seed is None else noise_seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0).reshape(3, -1)
    world = (affine @ np.vstack([grid, np.ones(grid.shape[1])]))[:3]
    bx, by, bz, length = ph.bias
    bias = np.exp(bx * np.sin(world[0] / length) + by * np.sin(world[1] / length) + bz * np.sin(world[2] / length))
    image *= bias.reshape(shape).astype(np.float32)
    sigma = ph.noise
    real = image + rng.normal(0, sigma, shape).astype(np.float32)
    imag = rng.normal(0, sigma, shape).astype(np.float32)
    image = np.sqrt(real ** 2 + imag ** 2) * ph.extras["intensity_scale"]   # Rician magnitude
    return image.astype(np.float32), labels


def grid_affine(origin, row_dir, col_dir, slice_dir, spacing) -> np.ndarray:
    """Voxel->LPS affine for arrays indexed (slice, row, column), as a DICOM series is stacked.

    ``row_dir`` is the direction along a row (DICOM IOP first triplet, column index), ``col_dir`` along
    a column (second triplet, row index); ``spacing`` is (slice, row, column) spacing in mm.
    """
    A = np.eye(4)
    A[:3, 0] = np.asarray(slice_dir, float) * spacing[0]
    A[:3, 1] = np.asarray(col_dir, float) * spacing[1]
    A[:3, 2] = np.asarray(row_dir, float) * spacing[2]
    A[:3, 3] = origin
    return A


@dataclass
class SeriesGeometry:
    """A DICOM-style grid: arrays indexed (slice, row, column)."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing: tuple[float, float, float]   # slice, row, column (mm)


PLANES = {
    # (row_dir, col_dir) as DICOM ImageOrientationPatient; slice normal = row x col
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "axial": ((1, 0, 0), (0, 1, 0)),
}


def series_geometry(ph: Phantom, plane: str = "sagittal", slice_thickness: float = 1.0,
                    pixel: float = 1.0, lr_width: float = 72.0, ap_width: float = 112.0,
                    oblique_deg: float = 0.0, reverse_slices: bool = False,
                    matrix: int | None = None) -> SeriesGeometry:
    """Grid covering the phantom's field of view in the given plane; ``matrix`` fixes the in-plane
    size to ``matrix`` x ``matrix`` pixels around the same centre, as a scanner's acquisition matrix."""
    row, col = (np.asarray(d, float) for d in PLANES[plane])
    if oblique_deg:
        th = np.deg2rad(oblique_deg)   # rotate about the z axis (sagittal/coronal) or x axis (axial)
        if plane == "axial":
            R = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]])
        else:
            R = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
        row, col = R @ row, R @ col
    normal = np.cross(row, col)
    if reverse_slices:
        normal = -normal
    z_hi, z_lo = ph.fov_z
    centre = np.array([0.0, -18.0 * ph.scale, (z_hi + z_lo) / 2])
    extent = np.array([lr_width, ap_width, z_hi - z_lo])   # LPS extents of the box to cover

    def span(d):
        return float(np.abs(d) @ extent)
    sp = (slice_thickness, pixel, pixel)
    n_slices = max(1, int(round(span(normal) / sp[0])))
    n_rows = int(np.ceil(span(col) / sp[1])) if matrix is None else int(matrix)
    n_cols = int(np.ceil(span(row) / sp[2])) if matrix is None else int(matrix)
    origin = centre - normal * sp[0] * (n_slices - 1) / 2 - col * sp[1] * (n_rows - 1) / 2 \
        - row * sp[2] * (n_cols - 1) / 2
    A = grid_affine(origin, row, col, normal, sp)
    return SeriesGeometry(A, (n_slices, n_rows, n_cols), row, col, sp)


def canonical_grid(ph: Phantom, lr_width: float = 72.0, ap_width: float = 104.0,
                   spacing: float = 1.0) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A RAS-canonical grid (array axes x->Right, y->Anterior, z->Superior) over the field of view.

    This is the layout TotalSpineSeg gives its networks after reorientation, so training volumes
    rendered here need no further resampling.
    """
    z_hi, z_lo = ph.fov_z
    nx, ny, nz = (int(round(w / spacing)) for w in (lr_width, ap_width, z_hi - z_lo))
    A = np.diag([-spacing, -spacing, spacing, 1.0])    # RAS axes expressed in LPS
    A[:3, 3] = [lr_width / 2, -18.0 * ph.scale + ap_width / 2, z_lo]
    return A, (nx, ny, nz)


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


# ---------------------------------------------------------------------------------------------
# DICOM output
# ---------------------------------------------------------------------------------------------
def _uid(seed: int, *parts) -> str:
    """Deterministic UID under the 2.25 root (UUID-derived integers, PS3.5 B.2)."""
    h = hashlib.sha256(("spine-seg-phantom", seed, *parts).__repr__().encode()).hexdigest()
    return "2.25." + str(int(h[:32], 16))


def write_dicom_series(image: np.ndarray, geom: SeriesGeometry, out_dir: Path, seed: int, *,
                       series_number: int = 5, series_description: str = "T2 SAG",
                       study_uid: str | None = None, patient_id: str | None = None,
                       body_part: str = "SPINE", shuffle: bool = False, localizer: bool = False) -> list[Path]:
    """Write ``image`` (slice, row, column) as an MR Image Storage series, one file per slice."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or _uid(seed, "study")
    series_uid = _uid(seed, "series", series_number, series_description)
    for_uid = _uid(seed, "for")
    scaled = np.clip(np.round(image), 0, 32767).astype(np.int16)
    now = _dt.datetime(2026, 1, 1, 8, 0, 0) + _dt.timedelta(minutes=seed % 600)
    iop = [float(round(c, 6)) for c in (*geom.row_dir, *geom.col_dir)]
    order = np.random.default_rng(seed).permutation(geom.shape[0]) if shuffle else range(geom.shape[0])
    paths = []
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = _uid(seed, "sop", series_uid, int(k))
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"] if localizer else ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = f"PH{seed:06d}"
        ds.Modality = "MR"
        ds.Manufacturer = "spine-seg phantom"
        ds.InstitutionName = "Phantom Hospital"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MR SPINE"
        ds.SeriesDescription = series_description
        ds.ManufacturerModelName = "tools/phantom.py"
        ds.PatientName = f"Phantom^{seed}"
        ds.PatientID = patient_id or f"PHANTOM-{seed:05d}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.PatientAge = "056Y"
        ds.BodyPartExamined = body_part
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = f"{geom.spacing[0]:.4g}"
        ds.RepetitionTime = "3500"
        ds.EchoTime = "110"
        ds.EchoTrainLength = "17"
        ds.MagneticFieldStrength = "1.5"
        ds.SpacingBetweenSlices = f"{geom.spacing[0]:.4g}"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = int(k) + 1
        pos = geom.affine @ np.array([k, 0, 0, 1.0])
        ds.ImagePositionPatient = [float(round(c, 4)) for c in pos[:3]]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = geom.shape[1], geom.shape[2]
        ds.PixelSpacing = [f"{geom.spacing[1]:.4g}", f"{geom.spacing[2]:.4g}"]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = scaled[k].tobytes()
        name = f"IM{n + 1:04d}.dcm" if not shuffle else f"{_uid(seed, 'name', int(k))[-12:]}.dcm"
        path = out_dir / name
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def slice_oversample(slice_thickness: float) -> tuple[int, int, int]:
    """Render samples per voxel along (slice, row, column): about one per 0.8 mm across a slice, as a
    real slice integrates over its thickness; one in-plane."""
    return max(1, round(slice_thickness / 0.8)), 1, 1


def render_series(ph: Phantom, plane: str = "sagittal", slice_thickness: float = 1.0, pixel: float = 1.0, *,
                  geometry: SeriesGeometry | None = None, **geometry_kw) -> dict:
    """``ph`` rendered as one series, in memory, as every study, test and bench renders a phantom: the grid of
    :func:`series_geometry` (``geometry_kw``: its ``oblique_deg``, ``reverse_slices``, ``matrix``, ...) or a
    ``geometry`` of one's own, thick slices oversampled (:func:`slice_oversample`).

    Returns ``{"phantom", "geometry", "image", "labels"}``: the MR-like image and its true labels on one grid.
    """
    geom = geometry or series_geometry(ph, plane, slice_thickness, pixel, **geometry_kw)
    image, labels = render(ph, geom.affine, geom.shape, oversample=slice_oversample(geom.spacing[0]))
    return {"phantom": ph, "geometry": geom, "image": image, "labels": labels}


def render_case(seed: int, fov: str | None = None, variant: str = "normal", **series_kw) -> dict:
    """:func:`render_series` of ``make_phantom(seed, fov, variant)`` (``series_kw``: plane, slice_thickness, pixel,
    and the grid's options)."""
    return render_series(make_phantom(seed, fov, variant), **series_kw)


def write_series(case: dict, out_dir: Path, *, shuffle: bool = False, **series_kw) -> dict:
    """A rendered ``case`` (:func:`render_series`) as files: its DICOM series in ``out_dir/dicom``
    (``series_kw``: :func:`write_dicom_series`'s options) and its true labels in ``out_dir/ground_truth.nii.gz``.
    Returns ``case`` with ``dicom_files`` and ``ground_truth`` added."""
    import nibabel as nib

    out_dir = Path(out_dir)
    geom = case["geometry"]
    dicom = write_dicom_series(case["image"], geom, out_dir / "dicom", case["phantom"].seed, shuffle=shuffle,
                               **series_kw)
    nib.save(nib.Nifti1Image(case["labels"], lps_to_ras(geom.affine)), out_dir / "ground_truth.nii.gz")
    return {**case, "dicom_files": dicom, "ground_truth": out_dir / "ground_truth.nii.gz"}


def write_case(seed: int, out_dir: Path, fov: str | None = None, plane: str = "sagittal",
               slice_thickness: float = 1.0, pixel: float = 1.0, oblique_deg: float = 0.0,
               reverse_slices: bool = False, shuffle: bool = False, matrix: int | None = None,
               variant: str = "normal", **series_kw) -> dict:
    """Make a phantom and write its DICOM series (``out_dir/dicom``) and ground truth NIfTI
    (:func:`render_case`, then :func:`write_series`)."""
    case = render_case(seed, fov, variant, plane=plane, slice_thickness=slice_thickness, pixel=pixel,
                       oblique_deg=oblique_deg, reverse_slices=reverse_slices, matrix=matrix)
    return write_series(case, out_dir, shuffle=shuffle, **series_kw)


@dataclass
class SeriesSpec:
    """One series of a multi-series phantom study (same anatomy, study and Frame of Reference)."""

    name: str                   # folder name under the study folder
    fov: str
    slice_thickness: float
    pixel: float
    series_number: int
    description: str
    localizer: bool = False
    shift_mm: float = 0.0       # move the field of view head-ward (a series that overlaps nothing, for tests)


LOCALIZER_STUDY = (SeriesSpec("t2", "thoracic", 3.0, 1.0, 5, "T2 SAG"),
                   SeriesSpec("localizer", "whole", 5.0, 2.0, 1, "LOC SAG SPINE", localizer=True))
# a whole-spine exam in three stations; each overlaps the next by a vertebra or more (the thoracic station is
# moved 40 mm foot-ward and the lumbar one 40 mm head-ward so that they share the thoracolumbar junction)
STATIONS = (SeriesSpec("station1", "cervicothoracic", 3.0, 1.0, 11, "T2 SAG STATION 1"),
            SeriesSpec("station2", "thoracic", 3.0, 1.0, 12, "T2 SAG STATION 2", shift_mm=-40.0),
            SeriesSpec("station3", "lumbar", 3.0, 1.0, 13, "T2 SAG STATION 3", shift_mm=40.0))


def write_study(seed: int, out_dir: Path, specs=LOCALIZER_STUDY, variant: str = "normal") -> dict:
    """Several series of one phantom in one study and Frame of Reference, each with its ground truth, in
    ``out_dir/<spec.name>/dicom`` (default: a thoracic T2 and a low-resolution whole-spine localizer)."""
    out_dir = Path(out_dir)
    study_uid = _uid(seed, "study")
    series = {}
    for spec in specs:
        ph = make_phantom(seed, spec.fov, variant)
        if spec.shift_mm:
            ph.fov_z = (ph.fov_z[0] + spec.shift_mm, ph.fov_z[1] + spec.shift_mm)
        case = render_series(ph, "sagittal", spec.slice_thickness, spec.pixel)
        series[spec.name] = write_series(case, out_dir / spec.name, series_number=spec.series_number,
                                         series_description=spec.description, study_uid=study_uid,
                                         localizer=spec.localizer)
    return series


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fov", choices=FOV_KINDS + EXTRA_FOVS, default=None)
    p.add_argument("--plane", choices=list(PLANES), default="sagittal")
    p.add_argument("--slice-thickness", type=float, default=1.0)
    p.add_argument("--pixel", type=float, default=1.0)
    p.add_argument("--oblique-deg", type=float, default=0.0)
    p.add_argument("--variant", choices=list(VARIANTS), default="normal",
                   help="number of thoracic/lumbar vertebrae (anatomical variants)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    case = write_case(a.seed, a.out, a.fov, a.plane, a.slice_thickness, a.pixel, a.oblique_deg, variant=a.variant)
    print(f"phantom seed={a.seed} fov={case['phantom'].fov} variant={a.variant} grid={case['geometry'].shape} "
          f"-> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
