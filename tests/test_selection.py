"""Choosing the spine series among a study's series."""
import pydicom
import pytest

import phantom as P
from helpers import write_ct_copy
from spineseg.dicom_input import scan_dicom
from spineseg.errors import InputError
from spineseg.selection import SelectionRules, select_series


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory):
    """Localizer, sagittal T1, sagittal T2 and axial T2 of one phantom, in one study."""
    root = tmp_path_factory.mktemp("mixed")
    ph = P.make_phantom(5002, "lumbar")
    study = P._uid(5002, "study")
    specs = [
        (1, "LOC 3-plane", "sagittal", 8.0, 2.0),
        (2, "T1 TSE SAG", "sagittal", 4.0, 1.5),
        (3, "T2 TSE SAG", "sagittal", 4.0, 1.5),
        (4, "T2 TSE AX", "axial", 6.0, 1.5),
    ]
    for number, desc, plane, thick, pixel in specs:
        geom = P.series_geometry(ph, plane, thick, pixel)
        img, _ = P.render(ph, geom.affine, geom.shape)
        P.write_dicom_series(img, geom, root / f"s{number}", 5002, series_number=number,
                             series_description=desc, study_uid=study)
    for f in (root / "s1").glob("*.dcm"):   # the localizer says so in ImageType, as scanners do
        ds = pydicom.dcmread(f)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(f)
    for f in (root / "s2").glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.RepetitionTime, ds.EchoTime = "550", "12"
        ds.save_as(f)
    return root


def test_sagittal_t2_is_chosen_and_others_explained(mixed_study):
    scan = scan_dicom(mixed_study)
    assert len(scan.series) == 4
    chosen, ranked = select_series(scan.series)
    assert [c.series.series_number for c in chosen] == [3]
    by_number = {c.series.series_number: c for c in ranked}
    assert not by_number[1].eligible and "localizer/scout" in by_number[1].reasons
    assert by_number[2].contrast == "T1" and by_number[4].plane == "axial"
    assert any("not chosen" in r for r in by_number[2].reasons)
    assert all(c.as_dict()["reasons"] for c in ranked)


def test_all_eligible_setting_processes_every_eligible_series(mixed_study):
    chosen, _ = select_series(scan_dicom(mixed_study).series, SelectionRules(all_eligible=True))
    assert sorted(c.series.series_number for c in chosen) == [2, 3, 4]


def test_rules_can_exclude_a_series(mixed_study):
    rules = SelectionRules(exclude={"SeriesDescription": "T2 TSE SAG"})
    chosen, _ = select_series(scan_dicom(mixed_study).series, rules)
    assert chosen[0].series.series_number != 3


def test_ct_only_study_is_rejected(tmp_path, phantom_study):
    write_ct_copy(phantom_study["dicom_files"], tmp_path, count=5)
    with pytest.raises(InputError) as exc:
        select_series(scan_dicom(tmp_path).series)
    assert exc.value.code == "NO_MR_SERIES" and "CT" in exc.value.message
