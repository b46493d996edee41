"""Numbering provenance: anchors as totalspineseg chooses them, landmark agreement, variant warnings."""
import numpy as np
import pytest

from spineseg.inference.two_step import STEP2_LABELLING
from spineseg.labels import ANATOMICAL_SEQUENCE
from spineseg.inference.numbering import assess, choose_anchors, field_of_view_edges, find_landmarks

# step-2 network classes of the landmark discs, and their final labels
C2C3, C7T1, T12L1, L5S1 = 2, 3, 4, 5
OUT = {C2C3: 63, C7T1: 71, T12L1: 91, L5S1: 100}


def blocks(levels, landmark_at=None):
    """A column of 8x8x8 blocks, one per final label in ``levels`` (superior first); the network array
    marks the landmark classes of ``landmark_at`` ({class: final label of the block holding it}) and
    plain disc elsewhere."""
    n = len(levels)
    z = 10 * n + 2
    labelled = np.zeros((12, 12, z), np.uint8)
    network = np.zeros_like(labelled)
    where = {}
    for i, value in enumerate(levels):
        top = z - 2 - 10 * i            # array axis 2 is superior-positive (RAS, as the 1 mm grid)
        sl = (slice(2, 10), slice(2, 10), slice(top - 8, top))
        labelled[sl] = value
        network[sl] = 1 if 63 <= value <= 100 else 7
        where[value] = sl
    for cls, value in (landmark_at or {}).items():
        network[where[value]] = cls
    return network, labelled


def lumbar(levels_from="T12", lumbar_count=5):
    names = {"T11": [31, 82], "T12": [32, 91]}[levels_from]
    vertebrae_and_discs = [41, 92, 42, 93, 43, 94, 44, 95, 45, 96, 46][:2 * lumbar_count - 1]
    return names + vertebrae_and_discs + [100, 50]


def test_two_end_landmarks_that_agree_give_high_confidence():
    levels = [v for v in ANATOMICAL_SEQUENCE if v not in (46, 96)]      # C1 to the sacrum, 5 lumbar
    network, labelled = blocks(levels, {C2C3: 63, L5S1: 100})
    n = assess(network, labelled, STEP2_LABELLING)
    assert n.anchors == ["C2-C3", "L5-S1"] and n.confidence == "high" and n.warnings == []
    assert n.short == "levels from C2-C3+L5-S1"
    assert len(n.content) <= 64


def test_one_anchor_is_moderate():
    network, labelled = blocks(lumbar(), {L5S1: 100})
    n = assess(network, labelled, STEP2_LABELLING)
    assert n.anchors == ["L5-S1"] and n.confidence == "moderate" and n.warnings == []


def test_a_landmark_the_numbering_disagrees_with_is_a_warning():
    # six lumbar-type vertebrae counted up from L5-S1: the true T12-L1 disc is numbered T11-T12
    levels = [31, 82, 32, 91, 41, 92, 42, 93, 43, 94, 44, 95, 45, 100, 50]
    network, labelled = blocks(levels, {L5S1: 100, T12L1: 82})
    n = assess(network, labelled, STEP2_LABELLING)
    assert n.anchors == ["L5-S1"]
    t12 = next(lm for lm in n.landmarks if lm.name == "T12-L1")
    assert not t12.agrees and t12.numbered_as == "T11-T12" and not t12.anchor
    assert n.confidence == "low"
    assert any("T12-L1 landmark lies at the disc numbered T11-T12" in w for w in n.warnings)
    assert n.short == "CHECK LEVELS (T12-L1 off)"


def test_six_lumbar_vertebrae_warn_with_the_anchor_named():
    network, labelled = blocks(lumbar(lumbar_count=6), {L5S1: 100})
    n = assess(network, labelled, STEP2_LABELLING)
    assert n.lumbar_vertebrae == 6 and n.confidence == "low"
    assert n.warnings[0].startswith("numbering anchored on L5-S1; 6 lumbar-type vertebrae")
    assert "confirm the count on a whole-spine image" in n.warnings[0]
    assert n.short == "CHECK LEVELS (6 lumbar)"


def test_four_lumbar_vertebrae_and_gaps_warn():
    levels = [32, 91, 41, 92, 42, 93, 43, 94, 44, 100, 50]       # no L5 and no L4-L5 above the sacrum
    network, labelled = blocks(levels, {L5S1: 100})
    n = assess(network, labelled, STEP2_LABELLING)
    assert n.lumbar_vertebrae == 4
    assert any("4 lumbar-type vertebrae" in w for w in n.warnings)
    assert n.missing == ["L4-L5", "L5"]
    assert n.short == "CHECK LEVELS (4 lumbar)"


def test_no_gap_for_a_normal_spine_without_L6():
    network, labelled = blocks(lumbar(), {L5S1: 100})
    assert assess(network, labelled, STEP2_LABELLING).missing == []


@pytest.mark.parametrize("found,anchors", [
    ({C2C3: 63, L5S1: 100, C7T1: 71, T12L1: 91}, ["C2-C3", "L5-S1"]),      # first two in priority order
    ({C7T1: 71, T12L1: 91}, ["C7-T1", "T12-L1"]),                         # thoracic: neither end landmark
    ({L5S1: 100, T12L1: 91}, ["L5-S1"]),                                  # T12-L1 comes third: not used
    ({C2C3: 63, C7T1: 71}, ["C2-C3", "C7-T1"]),                           # no L5-S1: C7-T1 moves up
])
def test_anchors_follow_iterative_label_priority(found, anchors):
    levels = [12, 63, 13, 64, 17, 71, 21, 72, 32, 91, 41, 92, 45, 100, 50]
    network, labelled = blocks(levels, found)
    assert choose_anchors(find_landmarks(network, labelled, STEP2_LABELLING), STEP2_LABELLING) == anchors


def test_small_landmarks_are_ignored_as_totalspineseg_does():
    network, labelled = blocks(lumbar(), {L5S1: 100})
    network[network == L5S1] = 1
    network[2:4, 2:4, 2:10] = L5S1          # 32 voxels: under min_component_size
    n = assess(network, labelled, STEP2_LABELLING)
    assert n.anchors == [] and n.confidence == "low"


def test_field_of_view_edges_follow_the_head_foot_axis():
    labels = np.zeros((5, 20, 6), np.uint8)      # sagittal stack: rows run head to foot
    labels[:, 0:3] = 41
    labels[:, 5:8] = 92
    labels[:, 17:20] = 50
    affine = np.eye(4)
    affine[:3, :3] = [[0, 0, 1], [1, 0, 0], [0, -1, 0]]   # row index grows towards the feet (LPS z falls)
    assert field_of_view_edges(labels, affine) == (["L1"], ["Sacrum"])
    affine[:3, :3] = [[0, 0, 1], [1, 0, 0], [0, 1, 0]]    # flipped: row 0 is now inferior
    assert field_of_view_edges(labels, affine) == (["Sacrum"], ["L1"])


def test_thoracic_levels_counted_up_from_the_sacrum_carry_a_note_not_a_warning():
    network, labelled = blocks(lumbar(), {L5S1: 100})          # T12 named only by counting up from L5-S1
    n = assess(network, labelled, STEP2_LABELLING)
    assert n.confidence == "moderate" and n.warnings == []
    assert n.notes == ["T12 is named by counting up from L5-S1 assuming 12 thoracic vertebrae; this field of "
                       "view cannot show the thoracic count"]
    assert n.as_dict()["notes"] == n.notes
    # the one numbering no check here can contradict (11 rib-bearing vertebrae seen lumbar-only): the reader
    # is told what this field of view cannot verify, in the report and on the review picture
    assert n.cannot_verify == n.notes and n.as_dict()["field_of_view_cannot_verify"] == n.notes


# --- the numbering checks the order of its own labels (a vertebra named below the disc beneath it) ---

def _truth(fov, variant="normal", plane="sagittal", slice_mm=3.0, pixel_mm=2.0, seed=8100):
    """A phantom's true label map on a coarse source grid, with its LPS affine."""
    import phantom as P
    ph = P.make_phantom(seed, fov, variant)
    geom = P.series_geometry(ph, plane, slice_mm, pixel_mm)
    _, labels = P.render(ph, geom.affine, geom.shape, oversample=P.slice_oversample(slice_mm))
    return labels, geom.affine


@pytest.fixture(scope="module")
def truths():
    return {case: _truth(*case) for case in [("thoracic",), ("lumbar", "6-lumbar"), ("cervical",),
                                              ("lumbar", "normal", "axial", 4.0, 1.5)]}


def _shift_edge_vertebra(labels, edge):
    """A miscount at the edge of the field of view, as seen on a thoracic T2: the field of view ends at a
    disc (everything beyond it removed), and the vertebra beside that disc is named one level too far
    outwards while the disc keeps its right name (T10 named T11, above the T10-T11 disc). Returns the new
    map, the vertebra's true and given labels."""
    from spineseg.labels import DISCS, VERTEBRAE, rank
    seq = [v for v in ANATOMICAL_SEQUENCE if (labels == v).any()]
    pairs = [(seq[i], seq[i + 1]) for i in range(len(seq) - 1)]
    if edge == "inferior":       # a vertebra and the disc below it, away from the lumbosacral end
        vertebra, disc = [(v, d) for v, d in pairs if v in VERTEBRAE[:-2] and d in DISCS[:-2]][-2]
        beyond = [v for v in seq if rank(v) > rank(disc)]
        new = VERTEBRAE[VERTEBRAE.index(vertebra) + 1]
    else:                        # a disc and the vertebra below it, away from the cranio-cervical end
        disc, vertebra = [(d, v) for d, v in pairs if d in DISCS and v in VERTEBRAE[2:]][1]
        beyond = [v for v in seq if rank(v) < rank(disc)]
        new = VERTEBRAE[VERTEBRAE.index(vertebra) - 1]
    shifted = np.where(np.isin(labels, beyond), 0, labels).astype(labels.dtype)
    shifted[labels == vertebra] = new
    return shifted, vertebra, new


def test_true_labels_never_contradict_their_order(truths):
    from spineseg.inference.numbering import order_contradictions
    for case, (labels, affine) in truths.items():
        assert order_contradictions(labels, affine) == [], case


@pytest.mark.parametrize("edge", ["inferior", "superior"])
def test_a_vertebra_misnamed_at_the_edge_contradicts_the_disc_beside_it(truths, edge):
    """Every field of view: the renamed vertebra lies on the wrong side of its own disc, and the numbering
    says which levels, with low confidence and CHECK LEVELS."""
    from spineseg.labels import level_name
    for case, (labels, affine) in truths.items():
        shifted, old, new = _shift_edge_vertebra(labels, edge)
        network = np.zeros_like(shifted)
        n = assess(network, shifted, STEP2_LABELLING, final=shifted, affine_lps=affine)
        assert n.confidence == "low" and n.short.startswith("CHECK LEVELS"), (case, n.warnings)
        warning = next(w for w in n.warnings if "contradict their own order" in w)
        assert f"{level_name(new)} lies above" in warning or f"lies above {level_name(new)}" in warning, warning
