"""The code table covers every final label TotalSpineSeg can emit (read from totalspineseg itself)."""
import numpy as np
import pytest

import phantom as P
from spineseg.inference import label_scheme
from spineseg.outputs.codes_table import STRUCTURES


def test_code_table_covers_exactly_what_the_labelling_can_emit():
    emittable = label_scheme.emittable_labels()
    assert set(STRUCTURES) == set(emittable), sorted(set(STRUCTURES) ^ set(emittable))


def test_code_table_covers_totalspineseg_final_label_texts():
    texts = label_scheme.label_texts()
    assert {46: "L6", 96: "L5L6"}.items() <= texts.items()
    assert set(texts) <= set(STRUCTURES), sorted(set(texts) - set(STRUCTURES))


def test_six_lumbar_regions_come_from_totalspineseg():
    assert label_scheme.region_max_sizes()[2] == 6
    assert {46, 96} <= label_scheme.emittable_labels()


def test_iterative_label_on_six_lumbar_anatomy_emits_only_coded_values():
    """Run totalspineseg's own labelling on a step-2-scheme map drawn from a 6-lumbar phantom."""
    import nibabel as nib
    import totalspineseg as tss

    from spineseg.inference.two_step import STEP2_LABELLING, _iterative_label
    import train_phantom_models as T

    ph = P.make_phantom(5203, "whole", "6-lumbar")
    affine, shape = P.canonical_grid(ph, spacing=1.5)
    _, final = P.render(ph, affine, shape)
    step2 = T.step2_target(final)
    seg = nib.Nifti1Image(step2.astype(np.uint8), P.lps_to_ras(affine))
    labelled = np.asanyarray(_iterative_label(tss.largest_component(seg, binarize=True, dilate=5), "Step 2",
                                              **STEP2_LABELLING).dataobj)
    values = set(np.unique(labelled).tolist()) - {0}
    assert {46, 96} <= values
    assert values <= set(STRUCTURES)


@pytest.mark.parametrize("value", [46, 96])
def test_variant_levels_are_named_and_distinctly_coloured(value):
    entry = STRUCTURES[value]
    assert entry["name"] == {46: "L6 vertebra", 96: "L5-L6 intervertebral disc"}[value]
    neighbours = {46: (45, 50), 96: (95, 100)}[value]
    assert all(STRUCTURES[n]["rgb"] != entry["rgb"] for n in neighbours)
    assert entry["type"][1] == "SCT"
