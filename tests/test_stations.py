"""Level agreement of two series in patient space (spineseg.inference.stations)."""
import numpy as np

import pytest

from spineseg.inference.stations import MIN_SHARED_VOXELS, anchor_rank, compare, renumber


def column(values, z0=0):
    """A label map with one 10x10x10 block per level along axis 0 (1 mm voxels), starting at z0 mm."""
    labels = np.zeros((10 * len(values), 10, 10), np.uint8)
    for i, v in enumerate(values):
        labels[10 * i:10 * (i + 1)] = v
    affine = np.eye(4)
    affine[0, 3] = z0
    return labels, affine


def test_same_levels_on_shifted_grids_agree():
    a, aa = column([30, 31, 32, 41])              # T10 T11 T12 L1 from 0 mm
    b, ab = column([32, 41, 42], z0=20)           # T12 L1 L2 from 20 mm: shares T12 and L1
    c = compare(a, aa, b, ab)
    assert c.shared_voxels == 2000 and c.agreement == 1.0 and c.consistent and c.offsets == {}


def test_a_one_level_shift_is_caught_and_named():
    a, aa = column([30, 31, 32, 41])
    b, ab = column([31, 32, 41], z0=20)           # the same bones, named one level higher
    c = compare(a, aa, b, ab)
    assert c.judged and not c.consistent and c.agreement == 0.0
    assert c.offsets == {"T12": "T11", "L1": "T12"}
    assert "T12 is T11" in c.describe()
    assert c.shift == -1 and c.shift_share == 1.0         # b names each of a's vertebrae one level higher


def test_no_shared_anatomy_is_not_judged():
    a, aa = column([30, 31])
    b, ab = column([41, 42], z0=500)
    c = compare(a, aa, b, ab)
    assert c.shared_voxels == 0 and not c.judged and c.consistent
    assert MIN_SHARED_VOXELS > 0


# a lumbar station counted up from L5-S1: T12, T12-L1, L1 ... L5, L5-S1, sacrum, with canal (2) and cord (1)
LUMBAR = [32, 91, 41, 92, 42, 93, 43, 94, 44, 95, 45, 100, 50, 2, 1]


def test_renumbering_down_one_level_makes_the_last_lumbar_vertebra_l6():
    """Six lumbar vertebrae, counted from C2-C3 elsewhere: this station's T12 is L1 and its L5 is L6; the disc
    above the sacrum stays L5-S1 (100) and the one above it becomes L5-L6 (96), as TotalSpineSeg names them."""
    labels = np.array(LUMBAR, np.uint8)
    assert renumber(labels, 1).tolist() == [41, 92, 42, 93, 43, 94, 44, 95, 45, 96, 46, 100, 50, 2, 1]


def test_renumbering_up_one_level_for_four_lumbar_vertebrae():
    labels = np.array(LUMBAR, np.uint8)
    assert renumber(labels, -1).tolist() == [31, 82, 32, 91, 41, 92, 42, 93, 43, 94, 44, 100, 50, 2, 1]
    assert renumber(labels, 0).tolist() == LUMBAR


@pytest.mark.parametrize("values,shift", [
    ([45, 96, 46, 100, 50], 1),      # L6 has no level below it, and L5-L6 would land on the disc above the sacrum
    ([11, 63, 12], -1),              # nothing above C1
])
def test_renumbering_that_would_leave_the_scheme_is_refused(values, shift):
    assert renumber(np.array(values, np.uint8), shift) is None


def test_the_count_from_c2_c3_outranks_the_count_from_l5_s1():
    assert anchor_rank(["C2-C3", "L5-S1"]) < anchor_rank(["L5-S1"]) < anchor_rank(["C7-T1"])
    assert anchor_rank(["series 11 (T2 SAG STATION 1)"]) == anchor_rank([]) > anchor_rank(["T12-L1"])
