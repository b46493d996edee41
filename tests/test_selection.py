"""Choosing the spine series among a study's series."""
import pydicom
import pytest

import phantom as P
from helpers import write_ct_copy
from spineseg.input.dicom_input import scan_dicom
from spineseg.errors import InputError
from spineseg.input.selection import SelectionRules, select_series


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


# --- MONAI Deploy selector rules -------------------------------------------------------------

def _chosen_numbers(study, rules, **kw):
    chosen, ranked = select_series(scan_dicom(study).series, SelectionRules(rules=rules, **kw))
    return [c.series.series_number for c in chosen], {c.series.series_number: c for c in ranked}


def test_selector_rules_pick_the_series_they_describe(mixed_study):
    rules = {"selections": [{"name": "Sagittal T1", "conditions": {"Modality": "(?i)MR",
                                                                   "SeriesDescription": "(?i)^t1.*sag"}}]}
    numbers, ranked = _chosen_numbers(mixed_study, rules)
    assert numbers == [2]                        # the rules override the T2 preference
    assert ranked[2].selection == "Sagittal T1" and ranked[2].as_dict()["selection"] == "Sagittal T1"
    assert "matches none of the selection rules" in ranked[3].reasons


def test_selector_rules_are_tried_in_order(mixed_study):
    rules = {"selections": [
        {"name": "Axial T2", "conditions": {"SeriesDescription": "T2 TSE AX"}},
        {"name": "Any MR", "conditions": {"Modality": "MR"}}]}
    numbers, ranked = _chosen_numbers(mixed_study, rules)
    assert numbers == [4]
    assert any("after 'Axial T2'" in r for r in ranked[3].reasons)
    # all_eligible takes every series of the first selection that matched, not those of later ones
    numbers, _ = _chosen_numbers(mixed_study, {"selections": [{"name": "Sagittal",
                                                               "conditions": {"SeriesDescription": "SAG"}}]},
                                 all_eligible=True)
    assert sorted(numbers) == [2, 3]


def test_selector_list_and_number_conditions(mixed_study):
    # ImageType must hold every listed value; a two-number list is a range on a numeric attribute
    rules = {"selections": [{"name": "thick", "conditions": {"ImageType": ["ORIGINAL", "PRIMARY"],
                                                             "SliceThickness": [5.5, 7]}}]}
    numbers, _ = _chosen_numbers(mixed_study, rules)
    assert numbers == [4]                        # the 6 mm axial; the localizer stays ineligible
    rules = {"selections": [{"name": "none", "conditions": {"ImageType": ["DERIVED"]}}]}
    with pytest.raises(InputError) as exc:
        _chosen_numbers(mixed_study, rules)
    assert exc.value.code == "NO_ELIGIBLE_SERIES" and "matches none of the selection rules" in exc.value.message


def test_rules_never_make_a_localizer_eligible(mixed_study):
    rules = {"selections": [{"name": "loc", "conditions": {"SeriesDescription": "LOC"}}]}
    with pytest.raises(InputError) as exc:
        _chosen_numbers(mixed_study, rules)
    assert "localizer/scout" in exc.value.message


@pytest.mark.parametrize("rules,fragment", [
    ("{not json", "not valid JSON"),
    ({"selection": []}, '"selections" list'),
    ({"selections": [{"name": "x"}]}, "no \"conditions\""),
    ({"selections": [{"name": "x", "conditions": {"SeriesDescription": "(unclosed"}}]}, "regular expression"),
    ({"selections": [{"name": "x", "conditions": {"Rows": {"a": 1}}}]}, "use a string"),
])
def test_bad_selector_rules_are_refused_with_the_reason(rules, fragment):
    from spineseg.errors import SpineSegError
    with pytest.raises(SpineSegError) as exc:
        SelectionRules(rules=rules)
    assert exc.value.code == "BAD_SELECTION_RULES" and fragment in exc.value.message


def test_rules_from_the_environment_reach_the_selection(tmp_path):
    import json

    from spineseg.pipeline import AppConfig
    rules = {"selections": [{"name": "T2", "conditions": {"SeriesDescription": "T2"}}]}
    cfg = AppConfig.from_settings(tmp_path, tmp_path, None, {}, {"SPINESEG_SELECTION_RULES": json.dumps(rules)})
    assert cfg.selection.rules == rules
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    cfg = AppConfig.from_settings(tmp_path, tmp_path, None, {}, {"SPINESEG_SELECTION_RULES": str(path)})
    assert cfg.selection.rules == rules
