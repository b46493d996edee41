"""How sure the level numbering is: what it was anchored on, and what in the result contradicts it.

TotalSpineSeg names levels by counting discs from landmark discs its networks recognise (C2-C3,
C7-T1, T12-L1, L5-S1): ``iterative_label`` takes the first two usable landmarks in the order
C2-C3, L5-S1, C7-T1, T12-L1, counts down from each with up to 6 lumbar levels, and counts up from
the highest one assuming the usual 12 thoracic and 5 lumbar vertebrae.  A count that starts from a
single landmark cannot see a sixth or a fourth lumbar vertebra, or 11 or 13 rib-bearing ones; that
is the wrong-level risk clinicians fear.  This module reads the network output that was labelled
and the labels it received and reports, for a radiologist and for a machine:

* the anchors (landmarks the numbering rests on, as iterative_label chooses them);
* every other landmark the network found, and whether the numbering agrees with it (a T12-L1
  landmark found at the disc numbered T11-T12 says the thoracic count is not 12);
* the count of lumbar-type vertebrae (6: L6 labelled; 4: no L5 above the sacrum), levels missing
  inside the labelled range, and levels cut by the superior or inferior edge of the field of view;
* a confidence (``high``: two anchors and nothing contradicts them; ``moderate``: one anchor, the
  rest counted; ``low``: something contradicts the count) and the warnings that justify it.

It only reads arrays; the numbering itself stays totalspineseg's.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from spineseg.labels import (DISCS, L5, L5L6, L5S1, L6, LEVELS, LUMBAR_VERTEBRAE, SACRUM, THORACIC_VERTEBRAE, VERTEBRAE,
                             level_name)
from spineseg.labels import rank as _rank


@dataclass
class Landmark:
    """A landmark disc the step-2 network marked, and the level the numbering gave it."""

    name: str                    # "L5-S1"
    voxels: int
    numbered_as: str | None      # level name of the disc holding it, None when it is on no disc
    agrees: bool
    anchor: bool = False

    def as_dict(self) -> dict:
        return {"landmark": self.name, "voxels": self.voxels, "numbered_as": self.numbered_as,
                "agrees": self.agrees, "anchor": self.anchor}


@dataclass
class Numbering:
    anchors: list[str]
    landmarks: list[Landmark]
    lumbar_vertebrae: int                    # lumbar-type vertebrae labelled (L1..L6)
    labelled_range: tuple[str, str] | None   # most superior and most inferior level named
    missing: list[str]                       # levels absent inside the labelled range
    edge_superior: list[str] = field(default_factory=list)   # levels cut by the field of view
    edge_inferior: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)            # a few words per warning, for LO attributes
    notes: list[str] = field(default_factory=list)           # limits of this field of view (not warnings)
    # what this field of view cannot verify of the count, for the reader (also among the notes); the review
    # picture prints it, since a count no check can contradict here may still be wrong
    cannot_verify: list[str] = field(default_factory=list)
    confidence: str = "moderate"

    def flag(self, tag: str, warning: str) -> None:
        self.tags.append(tag)
        self.warnings.append(warning)

    @property
    def short(self) -> str:
        """At most ~30 characters, for SeriesDescription after the phantom warning."""
        anchors = "+".join(self.anchors) or "no anchor"
        if self.confidence == "low":
            return f"CHECK LEVELS ({self._anomaly_tag()})"
        return f"levels from {anchors}"

    def _anomaly_tag(self) -> str:
        return self.tags[0] if self.tags else "count"

    @property
    def summary(self) -> str:
        """One line for the report: anchors and confidence (the warnings are listed beside it)."""
        anchors = " and ".join(self.anchors) if self.anchors else "no landmark"
        return f"numbering anchored on {anchors} (confidence {self.confidence})"

    @property
    def content(self) -> str:
        """At most 64 characters (ContentDescription, LO): anchors, and what to check."""
        anchors = "+".join(self.anchors) or "no landmark"
        if self.confidence == "low":
            return f"Levels from {anchors}; CHECK {self._anomaly_tag()}"[:64]
        return f"Levels anchored on {anchors}, confidence {self.confidence}"[:64]

    def as_dict(self) -> dict:
        return {"anchors": self.anchors, "confidence": self.confidence, "summary": self.summary,
                "short": self.short, "content_description": self.content, "lumbar_vertebrae": self.lumbar_vertebrae,
                "labelled_range": list(self.labelled_range) if self.labelled_range else None,
                "missing_inside_range": self.missing,
                "at_field_of_view_edge": {"superior": self.edge_superior, "inferior": self.edge_inferior},
                "landmarks": [lm.as_dict() for lm in self.landmarks], "warnings": self.warnings,
                "notes": self.notes, "field_of_view_cannot_verify": self.cannot_verify}


def _min_component_size() -> int:
    from spineseg.inference.nnunet_import import utilities
    return int(inspect.signature(utilities().iterative_label).parameters["min_component_size"].default)


def find_landmarks(network: np.ndarray, labelled: np.ndarray, params: dict) -> list[Landmark]:
    """Landmark discs in ``network`` (the step's output scheme, as handed to iterative_label) and
    the final label the majority of their voxels received in ``labelled`` (same grid)."""
    min_size = _min_component_size()
    names = {out: level_name(out) for out in params["disc_landmark_output_labels"]}
    found = []
    for raw, out in zip(params["disc_landmark_labels"], params["disc_landmark_output_labels"]):
        mask = network == raw
        n = int(mask.sum())
        if n <= min_size:
            continue
        got = labelled[mask]
        got = got[np.isin(got, DISCS)]
        numbered = int(np.bincount(got).argmax()) if got.size else None
        found.append(Landmark(names[out], n, level_name(numbered) if numbered else None, numbered == out))
    return found


def choose_anchors(landmarks: list[Landmark], params: dict) -> list[str]:
    """The landmarks iterative_label numbers from: the first two usable ones in its priority order
    (``selected_disc_landmarks``), after it drops a C2-C3 that is not the top disc or an L5-S1 that
    is not the bottom one; a landmark it used always keeps its own label, so a found landmark the
    numbering disagrees with was not used."""
    by_raw = dict(zip(params["disc_landmark_labels"], params["disc_landmark_output_labels"]))
    usable = {lm.name for lm in landmarks if lm.agrees}
    priority = [level_name(by_raw[raw]) for raw in params["selected_disc_landmarks"]]
    end_landmarks = {level_name(by_raw[r]) for r in params["selected_disc_landmarks"][:2]}
    # C2-C3 and L5-S1 are dropped from the list when they are not at the end of the spine
    priority = [p for p in priority if p not in end_landmarks or p in usable]
    anchors: list[str] = []
    for index, name in enumerate(priority):
        if anchors and index > 1:
            break
        if name in usable:
            anchors.append(name)
    return anchors


def _present_in_order(values: set[int], order: list[int], optional: int, end: int | None) -> list[int]:
    """``order`` restricted to what a normal spine has, plus ``optional`` when present; ``end``
    closes the order (the sacrum below the last lumbar vertebra)."""
    seq = [v for v in order if v != optional or v in values]
    return seq + ([end] if end is not None and end in values else [])


def _gaps(values: set[int], seq: list[int]) -> list[int]:
    found = [i for i, v in enumerate(seq) if v in values]
    if len(found) < 2:
        return []
    return [v for v in seq[found[0]:found[-1] + 1] if v not in values]


def field_of_view_edges(labels: np.ndarray, affine_lps: np.ndarray) -> tuple[list[str], list[str]]:
    """Levels touching the superior and inferior faces of the volume (cut by the field of view)."""
    axis = int(np.argmax(np.abs(np.asarray(affine_lps)[2, :3])))      # array axis closest to head-foot
    first = set(np.unique(np.take(labels, 0, axis=axis)).tolist())
    last = set(np.unique(np.take(labels, labels.shape[axis] - 1, axis=axis)).tolist())

    def names(vals):
        return [level_name(v) for v in sorted(vals & LEVELS, key=_rank)]
    superior_is_last = affine_lps[2, axis] > 0                          # LPS z grows to the head
    return (names(last), names(first)) if superior_is_last else (names(first), names(last))


ORDER_MARGIN_MM = 2.0    # how far past its neighbour a level must lie to contradict the order (label noise)


def order_contradictions(final: np.ndarray, affine_lps: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of levels (upper, lower by their names) whose positions contradict their names: the level named
    lower lies higher, head-ward, by more than ``ORDER_MARGIN_MM`` (median head-foot position of each
    level's voxels in patient space, robust to stray fragments). A vertebra named below the disc that
    should lie beneath it is a miscount the labels alone show, at any field of view; the spine's curves
    do not reverse the head-foot order of neighbouring levels."""
    levels = np.asarray(sorted(LEVELS))
    mask = np.isin(final, levels)
    if not mask.any():
        return []
    idx = np.nonzero(mask)
    values = final[idx]
    head = np.asarray(affine_lps, float)[2, :3] @ np.stack(idx).astype(float) + float(affine_lps[2, 3])  # LPS +z: head
    order = np.argsort(values, kind="stable")
    values, head = values[order], head[order]
    present, starts = np.unique(values, return_index=True)
    heights = {int(v): float(np.median(h)) for v, h in zip(present, np.split(head, starts[1:]))}
    ranked = sorted(heights, key=_rank)
    return [(upper, lower) for i, upper in enumerate(ranked) for lower in ranked[i + 1:]
            if heights[lower] - heights[upper] > ORDER_MARGIN_MM]


def assess(network: np.ndarray, labelled: np.ndarray, params: dict,
           final: np.ndarray | None = None, affine_lps: np.ndarray | None = None,
           anchored_by: str | None = None) -> Numbering:
    """Numbering provenance of one labelled step.

    ``network``/``labelled``: the step's network output as iterative_label received it and the
    labels it returned, on one grid; ``final``/``affine_lps``: the final label map on the source
    grid, for the field-of-view edges; ``anchored_by``: the partner series whose labels named the levels
    (``--loc``), which then comes first among the anchors.
    """
    landmarks = find_landmarks(network, labelled, params)
    anchors = ([anchored_by] if anchored_by else []) + choose_anchors(landmarks, params)
    for lm in landmarks:
        lm.anchor = lm.name in anchors
    values = set(np.unique(labelled if final is None else final).tolist())
    lumbar = sum(v in values for v in LUMBAR_VERTEBRAE)
    v_seq = _present_in_order(values, VERTEBRAE, L6, SACRUM)
    d_seq = _present_in_order(values, DISCS, L5L6, None)
    missing_values = sorted(set(_gaps(values, v_seq)) | set(_gaps(values, d_seq)), key=_rank)
    named = sorted((v for v in values if v in LEVELS), key=_rank)
    numbering = Numbering(anchors, landmarks, lumbar,
                          (level_name(named[0]), level_name(named[-1])) if named else None,
                          [level_name(v) for v in missing_values])
    contradictions = []
    if final is not None and affine_lps is not None:
        numbering.edge_superior, numbering.edge_inferior = field_of_view_edges(final, affine_lps)
        contradictions = order_contradictions(final, affine_lps)
    _judge(numbering, values, contradictions)
    return numbering


def _judge(n: Numbering, values: set[int], contradictions: list[tuple[int, int]] = ()) -> None:
    anchors = " and ".join(n.anchors) or "no landmark"
    confirm = "confirm the count on a whole-spine image or localizer"
    if contradictions:
        pairs = "; ".join(f"{level_name(lower)} lies above {level_name(upper)}" for upper, lower in contradictions[:3])
        more = f" (and {len(contradictions) - 3} more)" if len(contradictions) > 3 else ""
        n.flag(f"{level_name(contradictions[0][1])} order", f"the labels contradict their own order: {pairs}{more}; "
               f"at least one level is misnamed, {confirm}")
    if L6 in values:
        n.flag("6 lumbar", f"numbering anchored on {anchors}; 6 lumbar-type vertebrae (L6 labelled): "
               f"lumbosacral transitional anatomy or a miscount, {confirm}")
    if L5 not in values and 44 in values and (SACRUM in values or L5S1 in values):
        n.flag("4 lumbar", f"numbering anchored on {anchors}; 4 lumbar-type vertebrae (no L5 above the sacrum): "
               f"sacralised L5 or a thoracic count other than 12, {confirm}")
    for lm in n.landmarks:
        if not lm.agrees:
            where = f"the disc numbered {lm.numbered_as}" if lm.numbered_as else "no labelled disc"
            n.flag(f"{lm.name} off", f"the network's {lm.name} landmark lies at {where}: the numbering from "
                   f"{anchors} disagrees with it by at least one level, {confirm}")
    if n.missing:
        n.flag(f"{n.missing[0]} missing", f"levels missing inside the labelled range: {', '.join(n.missing)}; "
               f"{confirm}")
    if not n.anchors:
        n.flag("no anchor", "no landmark anchored the numbering; level names are not reliable")
    thoracic = [v for v in THORACIC_VERTEBRAE if v in values]
    if n.anchors == ["L5-S1"] and thoracic:
        which = (f"{level_name(thoracic[0])} is" if len(thoracic) == 1 else
                 f"{level_name(thoracic[0])} to {level_name(thoracic[-1])} are")
        limit = (f"{which} named by counting up from L5-S1 assuming 12 thoracic vertebrae; this field of view "
                 "cannot show the thoracic count")
        n.notes.append(limit)
        n.cannot_verify.append(limit)
    if n.warnings:
        n.confidence = "low"
    elif len(n.anchors) >= 2:
        n.confidence = "high"
    else:
        n.confidence = "moderate"
