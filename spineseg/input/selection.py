"""Choosing the spine series of a study.

Every series is either eligible (with a score) or rejected (with a reason a person can read).
The score prefers sagittal planes, T2 contrast, more slices and finer pixels. Sites can narrow the
choice in ``app.yaml`` with ``require``/``exclude`` regexes, or with selection rules written as for
the MONAI Deploy SDK's ``DICOMSeriesSelectorOperator``::

    {"selections": [{"name": "Sagittal T2", "conditions": {"Modality": "(?i)MR",
                                                         "SeriesDescription": "(?i)t2.*sag",
                                                         "ImageType": ["ORIGINAL", "PRIMARY"],
                                                         "SliceThickness": [2.5, 5]}}]}

Matching follows that operator: a string matches when equal ignoring case, else as a regex search
(ignoring case); a list condition on a multi-valued attribute needs every listed value present; a
number must be equal. One extension: a two-number list on a numeric attribute is an inclusive range.
Selections are tried in order and the first that matches an eligible series decides; among its
matches the ranking above picks the best (or all, with ``all_eligible``). Rules only narrow: a
localizer, a non-MR series or too few slices stays ineligible whatever the rules say.
"""
from __future__ import annotations

import json
import numbers
import re
from dataclasses import dataclass, field

from pydicom.multival import MultiValue

from spineseg.input.dicom_input import SeriesInfo, plane_of
from spineseg.errors import InputError, SpineSegError

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
    selection: str | None = None      # name of the selection rule it matched, when rules are set

    def as_dict(self) -> dict:
        d = self.series.summary()
        d.update({"plane": self.plane, "contrast": self.contrast, "eligible": self.eligible,
                  "score": round(self.score, 1), "reasons": self.reasons})
        if self.selection is not None:
            d["selection"] = self.selection
        return d


@dataclass
class SelectionRules:
    """``all_eligible``: process every eligible series instead of the best one.
    ``require`` / ``exclude``: {DICOM keyword: regex} matched against the first instance.
    ``rules``: MONAI Deploy selector rules (a dict, or its JSON text), see the module docstring."""

    all_eligible: bool = False
    require: dict[str, str] = field(default_factory=dict)
    exclude: dict[str, str] = field(default_factory=dict)
    min_slices: int = 3
    rules: dict | str | None = None

    def __post_init__(self):
        self.rules = parse_rules(self.rules)


def parse_rules(rules: dict | str | None) -> dict | None:
    """Validate selector rules; a mistake names the selection and condition at fault."""
    if rules in (None, "", {}):
        return None
    if isinstance(rules, str):
        try:
            rules = json.loads(rules)
        except json.JSONDecodeError as exc:
            raise SpineSegError("BAD_SELECTION_RULES", f"Selection rules are not valid JSON ({exc}).") from exc
    selections = rules.get("selections") if isinstance(rules, dict) else None
    if not isinstance(selections, list) or not selections:
        raise SpineSegError("BAD_SELECTION_RULES", 'Selection rules need a non-empty "selections" list, as in the '
                         "MONAI Deploy series selector.")
    for i, sel in enumerate(selections):
        name = selection_name(i, sel) if isinstance(sel, dict) else f"#{i + 1}"
        conditions = sel.get("conditions") if isinstance(sel, dict) else None
        if not isinstance(conditions, dict) or not conditions:
            raise SpineSegError("BAD_SELECTION_RULES", f"Selection {name!r} has no \"conditions\" mapping.")
        for key, value in conditions.items():
            if isinstance(value, str):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise SpineSegError("BAD_SELECTION_RULES", f"Selection {name!r}, condition {key}: {value!r} is "
                                     f"not a valid regular expression ({exc}).") from exc
            elif not isinstance(value, (list, numbers.Number)) and value is not None:
                raise SpineSegError("BAD_SELECTION_RULES", f"Selection {name!r}, condition {key}: use a string, a "
                                 f"number or a list, not {type(value).__name__}.")
    return rules


def _condition_matches(ds, key: str, wanted) -> bool:
    """One condition against the first instance, with the SDK selector's semantics."""
    if wanted is None or wanted == "":
        return True
    value = getattr(ds, key, None)
    if value is None or value == "":
        return False
    if isinstance(value, (list, tuple, MultiValue)):
        present = [str(v).casefold() for v in value]
        wanted_all = wanted if isinstance(wanted, list) else [wanted]
        return all(any(str(w).casefold() in p for p in present) for w in wanted_all)
    if isinstance(wanted, list):
        if len(wanted) == 2 and all(isinstance(w, numbers.Number) for w in wanted):
            try:
                return wanted[0] <= float(value) <= wanted[1]
            except (TypeError, ValueError):
                return False
        return False
    if isinstance(wanted, numbers.Number):
        try:
            return float(value) == float(wanted)
        except (TypeError, ValueError):
            return False
    text = str(value)
    return text.casefold() == str(wanted).casefold() or re.search(str(wanted), text, re.I) is not None


def selection_name(index: int, selection: dict) -> str:
    """A selection's name, or its 1-based position when it has none."""
    return str(selection.get("name") or f"#{index + 1}")


def matching_selection(ds, rules: dict) -> str | None:
    """Name of the first selection whose conditions all hold for ``ds`` (None: no match)."""
    for i, sel in enumerate(rules["selections"]):
        if all(_condition_matches(ds, k, v) for k, v in sel["conditions"].items()):
            return selection_name(i, sel)
    return None


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
    if rules.rules:
        cand.selection = matching_selection(ds, rules.rules)
        if cand.selection is None:
            cand.eligible = False
            cand.reasons.append("matches none of the selection rules")
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
    if rules.rules and eligible:
        # the first selection (in the rules' order) that matched an eligible series decides
        order = [selection_name(i, sel) for i, sel in enumerate(rules.rules["selections"])]
        first = min(order.index(c.selection) for c in eligible)
        for c in eligible:
            if order.index(c.selection) > first:
                c.eligible = False
                c.reasons.append(f"matches selection {c.selection!r}, after {order[first]!r}")
        eligible = [c for c in eligible if c.eligible]
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
