"""A series without a landmark disc is labelled with the help of a partner series of its study and Frame
of Reference (a whole-spine localizer), as `totalspineseg --loc` does; without a usable partner the coded
error stays, with the reason."""
import numpy as np
import pytest

import phantom as P
from spineseg.dicom_input import scan_dicom
from spineseg.errors import InputError
from spineseg.localizer import partner_candidates
from spineseg.pipeline import AppConfig, run_all
from spineseg.report import RunReport


def named_correctly(labels, truth) -> tuple[int, int]:
    """(right, named) over the truth's vertebrae and discs that the result labels at all (a sliver cut by
    the edge of the field of view that is not segmented is not a naming error)."""
    right = named = 0
    for v in (v for v in np.unique(truth) if v >= 11):
        got = labels[truth == v]
        got = got[got >= 11]
        if got.size * 2 < (truth == v).sum():
            continue
        named += 1
        right += int(np.bincount(got).argmax() == v)
    return right, named


def run(folder, out):
    cfg = AppConfig.from_settings(folder, out, None, {}, env={})
    report = RunReport(out)
    run_all(cfg, report)
    return report


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("localizer_study")
    return root, P.write_localizer_study(5203, root)


def test_partner_must_share_study_and_frame_of_reference_and_overlap(study, tmp_path):
    root, _ = study
    series = {s.series_number: s for s in scan_dicom(root).series}
    t2, loc = series[5], series[1]
    fits, refused = partner_candidates(t2, [t2, loc])
    assert fits == [loc] and refused == []
    far = P.write_localizer_study(5203, tmp_path / "far", shift_localizer_mm=900.0)
    far_loc = next(s for s in scan_dicom(tmp_path / "far").series if s.series_number == 1)
    fits, refused = partner_candidates(t2, [far_loc])
    assert fits == [] and "does not overlap series 5 in patient space" in refused[0]
    far_loc.headers[0].FrameOfReferenceUID = "1.2.3.4"
    assert "another Frame of Reference" in partner_candidates(t2, [far_loc])[1][0]


def test_thoracic_series_is_labelled_from_the_localizer(study, tmp_path):
    root, cases = study
    report = run(root, tmp_path / "out")
    entry = report.processed[0]
    assert entry["series_number"] == 5                       # the T2, not the localizer, is the result
    anchored = entry["numbering"]["anchored_by"]
    assert anchored["series_number"] == 1 and anchored["anchors"]
    assert entry["numbering"]["anchors"][0].startswith("series 1")
    import nibabel as nib
    labels = np.asarray(nib.load(tmp_path / "out" / entry["outputs"]["label_map"]).dataobj)
    from spineseg.dicom_input import load_volume
    vol = load_volume(next(s for s in scan_dicom(root).series if s.series_number == 5))
    _, truth = P.render(cases["t2"]["phantom"], vol.affine, vol.array.shape)
    right, named = named_correctly(labels, truth)
    assert named >= 10 and right / named >= 0.95, (right, named)


def test_without_the_localizer_it_still_fails_with_no_level_landmark(study, tmp_path):
    root, _ = study
    with pytest.raises(InputError) as err:
        run(root / "t2", tmp_path / "out")
    assert err.value.code == "NO_LEVEL_LANDMARK" and "holds no other series" in err.value.message


def test_a_localizer_that_does_not_overlap_is_refused_with_the_reason(tmp_path):
    P.write_localizer_study(5203, tmp_path / "study", shift_localizer_mm=900.0)
    with pytest.raises(InputError) as err:
        run(tmp_path / "study", tmp_path / "out")
    assert err.value.code == "NO_LEVEL_LANDMARK"
    assert "series 1: does not overlap series 5 in patient space" in err.value.message
