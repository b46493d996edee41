"""Level agreement of two series in patient space (spineseg.inference.stations)."""
import numpy as np

from spineseg.inference.stations import MIN_SHARED_VOXELS, compare


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


def test_no_shared_anatomy_is_not_judged():
    a, aa = column([30, 31])
    b, ab = column([41, 42], z0=500)
    c = compare(a, aa, b, ab)
    assert c.shared_voxels == 0 and not c.judged and c.consistent
    assert MIN_SHARED_VOXELS > 0
