"""Which final label values TotalSpineSeg's pipeline can emit, derived from totalspineseg itself.

The final labels come out of ``totalspineseg.iterative_label`` (step 2): each landmark disc's
output label is the first of its region and the region may hold up to ``region_max_sizes``
levels (totalspineseg 20260807: 5 cervical discs from C2-C3, 12 thoracic, **6 lumbar**, 1
sacral), vertebrae follow the same regions from C3 on with C1 and C2 in front, and the canal,
cord and sacrum labels are mapped directly. Six lumbar regions is why L6 (46) and the L5-L6
disc (96) can appear on a real study with lumbosacral transitional anatomy.

Nothing here is typed from memory: the sizes are read from ``iterative_label``'s signature and
the landmark labels from the parameters this app passes (``spineseg.inference.two_step``), which are the
reference command's own. ``label_texts`` reads the level names that totalspineseg's command
prints on its final preview images, a second, independent statement of the same set.
"""
from __future__ import annotations

import ast
import inspect
from functools import cache
from pathlib import Path


def _region_labels(first_labels: list[int], sizes: list[int], step: int = 1) -> list[int]:
    """Output labels of each region, as iterative_label builds ``all_possible_*_output_labels``."""
    return [first + i * step for first, size in zip(first_labels, sizes) for i in range(size)]


@cache
def region_max_sizes() -> tuple[int, ...]:
    """Most levels per region (cervical from C3, thoracic, lumbar, sacrum) totalspineseg labels."""
    import totalspineseg as tss
    return tuple(inspect.signature(tss.iterative_label).parameters["region_max_sizes"].default)


@cache
def emittable_labels() -> frozenset[int]:
    """Every final label value the in-process pipeline can write into a label map."""
    from spineseg.inference.two_step import STEP1_LABELLING, STEP2_LABELLING

    sizes = list(region_max_sizes())
    p = STEP2_LABELLING
    discs = _region_labels(p["disc_landmark_output_labels"], sizes)
    first_vertebra = p["vertebrae_landmark_output_labels"][0]          # C3: C1 and C2 come before it
    vertebrae = [first_vertebra - 2, first_vertebra - 1] + _region_labels(p["vertebrae_landmark_output_labels"], sizes)
    direct = [p["canal_output_label"], p["cord_output_label"], p["sacrum_output_label"]]
    step1_direct = [STEP1_LABELLING["canal_output_label"], STEP1_LABELLING["cord_output_label"],
                    STEP1_LABELLING["sacrum_output_label"], *STEP1_LABELLING["map_input_dict"].values()]
    return frozenset(v for v in (*discs, *vertebrae, *direct, *step1_direct) if v > 0)


@cache
def label_texts() -> dict[int, str]:
    """Level names of totalspineseg's final preview (``_step2_output_tags``), read from its source.

    The command draws these beside each structure of its final output; the union of its
    ``label_texts_right`` (vertebrae) and ``label_texts_left`` (sacrum and discs) dictionaries is
    the set of level values its authors expect the final output to hold.
    """
    import totalspineseg.inference as tss_inference

    tree = ast.parse(Path(inspect.getsourcefile(tss_inference)).read_text())
    texts: dict[int, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        suffix = kw.get("output_suffix")
        if not (isinstance(suffix, ast.Constant) and suffix.value == "_step2_output_tags"):
            continue
        for name in ("label_texts_right", "label_texts_left"):
            if isinstance(kw.get(name), ast.Dict):
                texts.update(ast.literal_eval(kw[name]))
    if not texts:
        raise RuntimeError("totalspineseg's final preview call (_step2_output_tags) was not found; "
                           "its label texts moved: update spineseg/inference/label_scheme.py")
    return texts
