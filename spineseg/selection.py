"""Choosing the spine series of a study.

Every series is either eligible (with a score) or rejected (with a reason a person can read).
The score prefers sagittal planes, T2 contrast, more slices and finer pixels; rules from
``app.yaml`` can require or exclude series by attribute, in the spirit of the MONAI Deploy
series selector's JSON rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .dicom_input import SeriesInfo, plane_of
from .errors import InputError

IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}
LOCALIZER_WORDS = re.compile(r"\b(loc|localizer|localiser|scout|survey|3-?plane|tri-?pilot|pilot)\b", re.I)
PLANE_SCORE = {"sagittal": 30, "coronal": 10, "axial": 5, "oblique": 8, "unknown": 0}


@dataclass
class Candidate:
    series: SeriesInfo
    eligible: bool
    score: float = 0.0
    reasons: list[str] = field(default_factory=list)
    plane: str = "unknown"
    contrast: str = "unknown"

    def as_dict(self) -> dict:
        d = self.series.summary()
        d.update({"plane": self.plane, "contrast": self.contrast, "eligible": self.eligible,
                  "score": round(self.score, 1), "reasons": self.reasons})
        return d


@dataclass
class SelectionRules:
    """``all_eligible``: process every eligible series instead of the best one.
    ``require`` / ``exclude``: {DICOM keyword: regex} matched against the first instance."""

    all_eligible: bool = False
    require: dict[str, str] = field(default_factory=dict)
    exclude: dict[str, str] = field(default_factory=dict)
    min_slices: int = 3


def contrast_of(series: SeriesInfo) -> str:
    ds = series.first
    text = " ".join(str(getattr(ds, a, "") or "") for a in ("SeriesDescription", "ProtocolName", "SequenceName"))
    if re.search(r"stir|tirm", text, re.I):
        return "STIR"
    if re.search(r"t2|tse.*t2|space", text, re.I):
        return "T2"
    if re.search(r"t1", text, re.I):
        return "T1"
    try:  # fall back on the timing parameters
        tr, te = float(ds.RepetitionTime), float(ds.EchoTime)
    except (AttributeError, TypeError, ValueError):
        return "unknown"
    if tr > 1500 and te > 60:
        return "T2"
    if tr < 1000 and te < 30:
        return "T1"
    return "unknown"


def assess(series: SeriesInfo, rules: SelectionRules) -> Candidate:
    try:
        return _assess(series, rules)
    except Exception as exc:  # a damaged header makes a series ineligible, never the app crash
        return Candidate(series, eligible=False, reasons=[f"unreadable header ({type(exc).__name__})"])


def _assess(series: SeriesInfo, rules: SelectionRules) -> Candidate:
    ds = series.first
    cand = Candidate(series, eligible=True, plane=plane_of(ds), contrast=contrast_of(series))
    sop = str(getattr(ds, "SOPClassUID", ""))
    if series.modality != "MR":
        cand.eligible = False
        cand.reasons.append(f"modality {series.modality or 'missing'}, not MR")
    elif sop not in IMAGE_SOP_CLASSES:
        cand.eligible = False
        cand.reasons.append(f"SOP class {sop} is not an MR image")
    image_type = [str(v).upper() for v in (getattr(ds, "ImageType", []) or [])]
    if "LOCALIZER" in image_type or LOCALIZER_WORDS.search(series.description):
        cand.eligible = False
        cand.reasons.append("localizer/scout")
    if cand.eligible and series.n_images < rules.min_slices:
        cand.eligible = False
        cand.reasons.append(f"only {series.n_images} image(s); at least {rules.min_slices} needed")
    for key, pattern in rules.require.items():
        if not re.search(pattern, str(getattr(ds, key, "") or ""), re.I):
            cand.eligible = False
            cand.reasons.append(f"rule: {key} does not match {pattern!r}")
    for key, pattern in rules.exclude.items():
        if re.search(pattern, str(getattr(ds, key, "") or ""), re.I):
            cand.eligible = False
            cand.reasons.append(f"rule: {key} matches excluded {pattern!r}")
    if cand.eligible:
        cand.score = PLANE_SCORE.get(cand.plane, 0) + {"T2": 20, "T1": 10, "STIR": 8}.get(cand.contrast, 5)
        cand.score += min(series.n_images, 60) / 6.0
        try:
            cand.score += 5.0 / max(float(ds.PixelSpacing[0]), 0.2)
        except (AttributeError, TypeError, ValueError, IndexError):
            pass
        cand.reasons.append(f"eligible: {cand.plane}, {cand.contrast}, {series.n_images} images")
    return cand


def select_series(series: list[SeriesInfo], rules: SelectionRules | None = None) -> tuple[list[Candidate], list[Candidate]]:
    """Return (chosen, all candidates ranked); raise when no series is eligible."""
    rules = rules or SelectionRules()
    cands = sorted((assess(s, rules) for s in series), key=lambda c: (not c.eligible, -c.score))
    eligible = [c for c in cands if c.eligible]
    if not eligible:
        modalities = sorted({s.modality or "?" for s in series})
        if "MR" not in modalities:
            raise InputError("NO_MR_SERIES", f"The study holds no MR series (modalities: {', '.join(modalities)}); "
                             "spine-seg segments spine MRI only.")
        raise InputError("NO_ELIGIBLE_SERIES", "No series of the study can be segmented: " + "; ".join(
            f"series {c.series.series_number} ({c.series.description!r}): {', '.join(c.reasons)}" for c in cands))
    chosen = eligible if rules.all_eligible else eligible[:1]
    for c in cands:
        if c in chosen:
            c.reasons.append("chosen")
        elif c.eligible:
            c.reasons.append(f"not chosen: lower score than series {chosen[0].series.series_number}")
    return chosen, cands
