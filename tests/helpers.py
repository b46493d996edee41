"""Small helpers shared by tests: Dice, SEG decoding, fake model descriptions, reading the measurement SR,
running the app as a subprocess (run_app: its environment policy is written above it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from spineseg import labels as L

VERTEBRAE = [*L.VERTEBRAE, L.SACRUM]      # L6 (46) included; the sacrum counts as bone
DISCS = L.DISCS                           # L5-L6 (96) included
GROUPS = {"cord": [L.CORD], "canal": [L.CANAL], "vertebrae": VERTEBRAE, "discs": DISCS}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else 2.0 * float((a & b).sum()) / float(denom)


def spine_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of everything labelled (any structure) against the truth: insensitive to the phantom
    models' accuracy per class, but near 0 when geometry is wrong (a flipped or shifted axis)."""
    return dice(pred > 0, truth > 0)


def group_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {g: dice(np.isin(pred, v), np.isin(truth, v)) for g, v in GROUPS.items() if np.isin(truth, v).any()}


def fake_model_description(kind: str = "phantom") -> dict:
    m = {"kind": kind, "release": "phantom" if kind == "phantom" else "r20260730", "checkpoint": "checkpoint_final.pth"}
    digit = "0" if kind == "phantom" else "1"
    return {"device": "cpu", "step1": {**m, "dataset": "Dataset101_TotalSpineSeg_step1", "sha256": "a" * 63 + digit},
            "step2": {**m, "dataset": "Dataset102_TotalSpineSeg_step2", "sha256": "b" * 63 + digit}}


def decode_seg(seg_path, source_datasets) -> np.ndarray:
    """Label map (slice, row, column) in the order of ``source_datasets``, decoded with highdicom,
    mapped back to TotalSpineSeg label values through the segments' SNOMED type codes."""
    import highdicom as hd

    from spineseg.outputs.codes_table import STRUCTURES

    seg = hd.seg.segread(seg_path)
    by_code = {v["type"][0]: k for k, v in STRUCTURES.items()}
    uids = [str(ds.SOPInstanceUID) for ds in source_datasets]
    segment_numbers = list(seg.segment_numbers)   # LABELMAP also describes background (0)
    arr = seg.get_pixels_by_source_instance(uids, segment_numbers=segment_numbers, combine_segments=True,
                                            skip_overlap_checks=False, assert_missing_frames_are_empty=True)
    lut = np.zeros(max(segment_numbers) + 1, np.uint8)
    for s in seg.SegmentSequence:
        if int(s.SegmentNumber) not in segment_numbers:
            continue
        lut[int(s.SegmentNumber)] = by_code[s.SegmentedPropertyTypeCodeSequence[0].CodeValue]
    return lut[arr]




def decode_seg_with_dcmqi(seg_path, target_shape, target_affine_ras, workdir) -> np.ndarray:
    """Label map on a target grid decoded independently by dcmqi's ``segimage2itkimage``.

    Each segment file dcmqi writes is mapped into the target grid through world coordinates
    (target voxel -> world -> dcmqi voxel), so grids that differ in extent or order still compare.
    """
    import json
    import subprocess
    import sys
    from pathlib import Path

    import nibabel as nib

    from spineseg.outputs.codes_table import STRUCTURES

    exe = Path(sys.executable).parent / "segimage2itkimage"
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(exe), "--inputDICOM", str(seg_path), "--outputDirectory", str(workdir), "--prefix", "s",
                    "--outputType", "nifti"], check=True, capture_output=True, timeout=300)
    meta = json.loads((workdir / "s-meta.json").read_text())
    by_code = {v["type"][0]: k for k, v in STRUCTURES.items()}
    out = np.zeros(target_shape, np.uint8)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in target_shape], indexing="ij"), -1).reshape(-1, 3)
    world = target_affine_ras @ np.c_[idx, np.ones(len(idx))].T
    # one file per group of segments (s-1, s-2, ...); in a file each segment's voxels hold its labelID
    # (BINARY/FRACTIONAL SEGs give one segment per file, a LABELMAP SEG one file with all of them)
    for number, group in enumerate(meta["segmentAttributes"], start=1):
        img = nib.load(workdir / f"s-{number}.nii.gz")
        data = np.asanyarray(img.dataobj)
        src = np.round(np.linalg.inv(img.affine) @ world)[:3].astype(int)
        inside = np.all((src >= 0) & (src < np.array(data.shape[:3])[:, None]), axis=0)
        values = np.zeros(len(idx), data.dtype)
        values[inside] = data[tuple(src[:, inside])]
        for attr in group:
            hit = values == attr["labelID"] if len(group) > 1 else values > 0
            code = attr["SegmentedPropertyTypeCodeSequence"]["CodeValue"]
            out.reshape(-1)[hit] = by_code[code]
    return out


def write_ct_copy(src_files, dst, count: int = 6):
    """Copies of the first ``count`` files relabelled as a CT series (a study spine-seg must refuse)."""
    import pydicom
    dst.mkdir(parents=True, exist_ok=True)
    for f in list(src_files)[:count]:
        ds = pydicom.dcmread(f)
        ds.Modality = "CT"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.save_as(dst / f.name)
    return dst


def write_small_series(root, seed: int = 5400, pixel: float = 4.0):
    """A tiny 6-slice sagittal lumbar phantom series (12 mm slices, 4 mm pixels): fast to copy and mutate."""
    import phantom as P
    ph = P.make_phantom(seed, "lumbar")
    geom = P.series_geometry(ph, "sagittal", 12.0, pixel)
    image, _ = P.render(ph, geom.affine, geom.shape)
    return P.write_dicom_series(image, geom, root / "dicom", seed)


def drawn_values(sr) -> list[dict]:
    """Each measurement of a written SR as a viewer reads it: text (Comment) and label, tracking, value, unit and the
    SCOORD it is drawn with (graphic type, (column, row) points, referenced image and frame)."""
    out = []
    for g in sr.content.get_image_measurement_groups():
        (m,) = g.get_measurements()
        (coords,) = m.referenced_coordinates
        ref = coords.ContentSequence[0].ReferencedSOPSequence[0]
        (comment,) = [i for i in g[0].ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121106"]
        # a point's text also carries its value ("L4-L5 canal area 340.68 mm2"): the label is what precedes it
        suffix = f" {m.value:.2f} {m.unit.value}"
        text = str(comment.TextValue)
        out.append({"text": text, "label": text[:-len(suffix)] if text.endswith(suffix) else text,
                    "tracking_identifier": g.tracking_identifier,
                    "tracking_uid": g.tracking_uid, "finding": g.finding_type.value, "value": m.value,
                    "unit": m.unit.value, "graphic": coords.GraphicType,
                    "points": np.asarray(coords.GraphicData, float).reshape(-1, 2),
                    "sop": str(ref.ReferencedSOPInstanceUID), "nested": len(m[0].ContentSequence)})
    return out


def reader_label(m, field: str) -> str:
    """The label a reader sees for a value (README "Measurements"), e.g. "L4-L5 disc height, centre"."""
    disc = m.label in L.DISCS
    level = "Sacrum" if m.label == L.SACRUM else m.level
    if field == "volume_mm3":
        return f"{level} {'disc ' if disc else ''}volume"
    if field.startswith("height_"):
        return f"{level} {'disc' if disc else 'body'} height, {field.split('_')[1]}"
    return {"canal_area_mm2": f"{level} canal area", "canal_ap_diameter_mm": f"{level} canal AP diameter",
            "cord_area_mm2": f"{level} cord area"}[field]


def image_point(vol, sop: str, column_row) -> np.ndarray:
    """LPS of a (column, row) SCOORD point (PS3.3 C.18.6.1.2: the first pixel's centre is (0.5, 0.5))."""
    k = [str(ds.SOPInstanceUID) for ds in vol.datasets].index(sop)
    c, r = np.asarray(column_row, float) - 0.5
    return vol.affine[:3, :3] @ np.array([k, r, c]) + vol.affine[:3, 3]


# Running the app as a subprocess: the one way every test does it.
#
# Environment policy: the app sees the test process's environment without any SPINESEG_* or HOLOSCAN_* variable
# (settings and the MAP's input/output/model paths), so no test depends on what the developer's shell exports,
# except SPINESEG_OPENVINO_CACHE (tests/conftest.py points it at one folder for the session, so that the networks
# are exported once); then the test's own ``env`` is added. A test that needs a setting passes it in ``env``.
KEPT_APP_VARIABLES = ("SPINESEG_OPENVINO_CACHE",)
APP = Path(__file__).resolve().parent.parent / "app"


def app_env(env: dict | None = None) -> dict:
    """The environment of an app (or resend) subprocess under the policy above, with ``env`` added."""
    import os
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SPINESEG_", "HOLOSCAN_")) or k in KEPT_APP_VARIABLES}
    return {**base, **(env or {})}


def run_app(study=None, out=None, *args, engine: str | None = None, env: dict | None = None, timeout: float = 900):
    """``python app [-i study] [-o out] [--engine engine] *args``, output captured as text, in ``app_env(env)``.
    ``study``/``out`` None: not passed (a MAP-style run reads HOLOSCAN_* from ``env``); ``engine`` None: the
    app's default (holoscan)."""
    import subprocess
    import sys
    cmd = [sys.executable, str(APP)]
    cmd += ["-i", str(study)] if study is not None else []
    cmd += ["-o", str(out)] if out is not None else []
    cmd += ["--engine", engine] if engine else []
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=app_env(env))


def app_report(out) -> dict | None:
    """The run's report.json in ``out``, or None when there is none."""
    import json
    path = Path(out) / "report.json"
    return json.loads(path.read_text()) if path.exists() else None
