"""A series without a landmark disc is labelled with the help of a partner series of its study and Frame
of Reference (a whole-spine localizer), as `totalspineseg --loc` does; without a usable partner the coded
error stays, with the reason."""
import dataclasses

import numpy as np
import pytest

import phantom as P
from spineseg.input.dicom_input import scan_dicom
from spineseg.errors import InputError
from spineseg.input.localizer import partner_candidates
from spineseg.pipeline import AppConfig, run_all
from spineseg.report import RunReport
from spineseg.study import StudyMemo


FAR_LOCALIZER = (P.LOCALIZER_STUDY[0], dataclasses.replace(P.LOCALIZER_STUDY[1], shift_mm=900.0))


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
    return root, P.write_study(5203, root)


def test_partner_must_share_study_and_frame_of_reference_and_overlap(study, tmp_path):
    root, _ = study
    series = {s.series_number: s for s in scan_dicom(root).series}
    t2, loc = series[5], series[1]
    fits, refused = partner_candidates(t2, [t2, loc])
    assert fits == [loc] and refused == []
    P.write_study(5203, tmp_path / "far", FAR_LOCALIZER)
    far_loc = next(s for s in scan_dicom(tmp_path / "far").series if s.series_number == 1)
    fits, refused = partner_candidates(t2, [far_loc])
    assert fits == [] and "does not overlap series 5 in patient space" in refused[0]
    far_loc.headers[0].FrameOfReferenceUID = "1.2.3.4"
    assert "another Frame of Reference" in partner_candidates(t2, [far_loc])[1][0]


@pytest.mark.slow
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
    from spineseg.input.dicom_input import load_volume
    vol = load_volume(next(s for s in scan_dicom(root).series if s.series_number == 5))
    _, truth = P.render(cases["t2"]["phantom"], vol.affine, vol.array.shape)
    right, named = named_correctly(labels, truth)
    assert named >= 10 and right / named >= 0.95, (right, named)


@pytest.mark.slow
def test_without_the_localizer_it_still_fails_with_no_level_landmark(study, tmp_path):
    root, _ = study
    with pytest.raises(InputError) as err:
        run(root / "t2", tmp_path / "out")
    assert err.value.code == "NO_LEVEL_LANDMARK" and "holds no other series" in err.value.message


@pytest.mark.slow
def test_a_localizer_that_does_not_overlap_is_refused_with_the_reason(tmp_path):
    P.write_study(5203, tmp_path / "study", FAR_LOCALIZER)
    with pytest.raises(InputError) as err:
        run(tmp_path / "study", tmp_path / "out")
    assert err.value.code == "NO_LEVEL_LANDMARK"
    assert "series 1: does not overlap series 5 in patient space" in err.value.message


@pytest.mark.slow
def test_three_stations_get_three_segs_with_one_numbering(tmp_path):
    """A whole-spine exam in three overlapping stations: one SEG per station; the thoracic one (no landmark)
    is numbered from another station; where two stations see the same anatomy they name it the same."""
    import nibabel as nib

    from spineseg.input.dicom_input import load_volume
    P.write_study(5203, tmp_path / "exam", P.STATIONS)
    out = tmp_path / "out"
    cfg = AppConfig.from_settings(tmp_path / "exam", out, None, {"selection": {"all_eligible": True}}, env={})
    report = RunReport(out)
    run_all(cfg, report)
    entries = {e["series_number"]: e for e in report.processed}
    assert sorted(entries) == [11, 12, 13] and all("seg" in e["outputs"] for e in entries.values())
    assert entries[12]["numbering"]["anchored_by"]["series_number"] in (11, 13)
    series = {s.series_number: s for s in scan_dicom(tmp_path / "exam").series}
    grids = {}
    for n, e in entries.items():
        vol = load_volume(series[n])
        grids[n] = (np.asarray(nib.load(out / e["outputs"]["label_map"]).dataobj), vol.affine)
    shared = 0
    for a, b in ((11, 12), (12, 13)):
        la, aa = grids[a]
        lb, ab = grids[b]
        idx = np.argwhere((la >= 11) & (la <= 50))                  # vertebrae (and the sacrum) of station a
        world = idx @ aa[:3, :3].T + aa[:3, 3]
        jb = np.rint((world - ab[:3, 3]) @ np.linalg.inv(ab[:3, :3]).T).astype(int)
        inside = np.all((jb >= 0) & (jb < lb.shape), axis=1)
        va, vb = la[tuple(idx[inside].T)], lb[tuple(jb[inside].T)]
        both = (vb >= 11) & (vb <= 50)
        assert both.sum() > 1000, (a, b, both.sum())                # the stations really share anatomy
        assert (va[both] == vb[both]).mean() >= 0.95, (a, b)
        shared += int(both.sum())
    assert shared > 0
    assert not any("share differently" in w for e in entries.values() for w in e["numbering"]["warnings"])


@pytest.mark.slow
def test_a_station_counted_from_a_weaker_landmark_is_renumbered_to_one_numbering(tmp_path):
    """Six lumbar vertebrae: the lumbar station counts up from L5-S1 and the thoracic one carries the count down
    from the cervical station (C2-C3), so they disagree by a level where they overlap. The lumbar station is
    renumbered to the count from C2-C3, as TotalSpineSeg names a whole spine: its last lumbar vertebra becomes
    L6, the levels match the truth, the two stations agree, and both say what happened."""
    import nibabel as nib

    from spineseg.inference.stations import compare
    from spineseg.input.dicom_input import load_volume
    study = P.write_study(5203, tmp_path / "exam", P.STATIONS, variant="6-lumbar")
    out = tmp_path / "out"
    cfg = AppConfig.from_settings(tmp_path / "exam", out, None, {"selection": {"all_eligible": True}}, env={})
    report = RunReport(out)
    run_all(cfg, report)
    entries = {e["series_number"]: e for e in report.processed}
    for n in (12, 13):
        numbering = entries[n]["numbering"]
        assert numbering["confidence"] == "low"
        assert any("series 12 and series 13 name the vertebrae they share differently" in w
                   and "series 13 was renumbered 1 level(s) down to the count of series 12" in w
                   for w in numbering["warnings"]), numbering["warnings"]
    assert "CHECK LEVELS" in pydicom_description(out / entries[13]["outputs"]["seg"])
    series = {s.series_number: s for s in scan_dicom(tmp_path / "exam").series}
    maps = {n: (np.asarray(nib.load(out / entries[n]["outputs"]["label_map"]).dataobj), load_volume(series[n]).affine)
            for n in (12, 13)}
    assert compare(*maps[13], *maps[12]).consistent
    lumbar, affine = maps[13]
    assert 46 in np.unique(lumbar) and 96 in np.unique(lumbar)       # L6 and the L5-L6 disc
    assert share_named_as_truth(lumbar, affine, study["station3"]) >= 0.95


LUMBAR_WITH_LOCALIZER = (P.SeriesSpec("t2", "lumbar", 3.0, 1.0, 5, "T2 SAG LSPINE"),
                         P.SeriesSpec("localizer", "whole", 5.0, 2.0, 1, "LOC SAG SPINE", localizer=True))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["always", "when_needed"])
def test_with_partner_always_a_lumbar_count_is_checked_against_the_whole_spine_localizer(tmp_path, policy):
    """Six lumbar vertebrae, a lumbar T2 (its own count from L5-S1, one level off) and a whole-spine localizer
    (counted from C2-C3) in one study. With SPINESEG_PARTNER=always the T2 is renumbered to the localizer's
    count: L6 appears and its levels match the truth. By default the localizer is not used for a series with
    its own landmark, and the T2 keeps its own (flagged) count."""
    import nibabel as nib

    from spineseg.input.dicom_input import load_volume
    study = P.write_study(5205, tmp_path / "exam", LUMBAR_WITH_LOCALIZER, variant="6-lumbar")
    out = tmp_path / "out"
    cfg = AppConfig.from_settings(tmp_path / "exam", out, None, {}, env={"SPINESEG_PARTNER": policy})
    report = RunReport(out)
    run_all(cfg, report)
    (entry,) = report.processed
    assert entry["series_number"] == 5
    numbering = entry["numbering"]
    assert numbering["confidence"] == "low"
    labels = np.asarray(nib.load(out / entry["outputs"]["label_map"]).dataobj)
    affine = load_volume(next(s for s in scan_dicom(tmp_path / "exam").series if s.series_number == 5)).affine
    correct = share_named_as_truth(labels, affine, study["t2"])
    renumbered = [w for w in numbering["warnings"] if "series 5 was renumbered 1 level(s) down to the count of "
                  "series 1" in w]
    if policy == "always":
        assert renumbered, numbering["warnings"]
        assert 46 in np.unique(labels) and correct >= 0.95
        assert "partner" in report.timings
    else:
        assert not renumbered and "partner" not in report.timings
        assert correct < 0.5                       # its own count, one level off: why "always" exists


def share_named_as_truth(labels, affine, truth) -> float:
    """Share of the vertebra voxels of ``labels`` (voxel -> LPS ``affine``) that carry the level the phantom's
    ground truth (``write_study``'s entry) gives the same point, where the truth has a vertebra too."""
    idx = np.argwhere((labels >= 11) & (labels <= 46))
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    g = truth["geometry"].affine
    jdx = np.rint((world - g[:3, 3]) @ np.linalg.inv(g[:3, :3]).T).astype(int)
    inside = np.all((jdx >= 0) & (jdx < truth["labels"].shape), axis=1)
    ours, true = labels[tuple(idx[inside].T)], truth["labels"][tuple(jdx[inside].T)]
    both = (true >= 11) & (true <= 46)
    assert both.sum() > 10_000                      # enough shared anatomy for the share to mean something
    return float((ours[both] == true[both]).mean())


def pydicom_description(path) -> str:
    import pydicom
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesDescription)


def test_a_multiframe_partner_is_placed_from_its_functional_groups(study, tmp_path):
    """A localizer sent as one Enhanced MR object has no position or orientation at its top level: it is placed
    frame by frame from its functional groups, as the loader places it (it was refused: "image geometry
    missing")."""
    from test_input_robustness import multiframe_copy

    from spineseg.input.localizer import series_extent
    root, _ = study
    series = {s.series_number: s for s in scan_dicom(root).series}
    multiframe_copy(root / "localizer" / "dicom", tmp_path / "loc", "enhanced", series_number=1)
    (loc,) = scan_dicom(tmp_path / "loc").series
    box, classic = series_extent(loc), series_extent(series[1])
    assert np.allclose(box.lo, classic.lo, atol=1e-3) and np.allclose(box.hi, classic.hi, atol=1e-3)
    assert partner_candidates(series[5], [loc]) == ([loc], [])


# a thoracic T2 without a landmark, five overlapping series without one either (each reaches past it), one that
# covers no more of the spine than the T2, and a whole-spine localizer with a slice missing
CROWDED = (P.SeriesSpec("t2", "thoracic", 4.0, 2.0, 5, "T2 SAG"),
           *(P.SeriesSpec(f"other{n}", "thoracic", 4.0, 2.0, n, f"T1 SAG {n}", shift_mm=shift)
             for n, shift in ((20, 12.0), (21, -12.0), (22, 24.0), (23, -24.0), (24, 36.0))),
           P.SeriesSpec("same", "thoracic", 4.0, 2.0, 30, "STIR SAG"),
           P.SeriesSpec("broken", "whole", 4.0, 2.0, 2, "LOC SAG SPINE", localizer=True))


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    root = tmp_path_factory.mktemp("crowded")
    study = P.write_study(5203, root, CROWDED)
    files = study["broken"]["dicom_files"]
    files[len(files) // 2].unlink()
    return {s.series_number: s for s in scan_dicom(root).series}


def no_landmark_anywhere(monkeypatch) -> list:
    """Every segmentation ends NO_LEVEL_LANDMARK, as on a study of thoracic series only; returns the affines of
    the volumes segmented, one per segmentation."""
    import spineseg.pipeline as pipeline
    calls = []

    def segment_volume(array, affine, models, **kw):
        calls.append(np.asarray(affine))
        raise InputError("NO_LEVEL_LANDMARK", "Step 1 found the spine but none of the landmark discs; send another.")
    monkeypatch.setattr(pipeline, "segment_volume", segment_volume)
    return calls


def test_partner_attempts_stop_at_the_bound_and_the_message_says_what_became_of_each_series(crowded, tmp_path,
                                                                                             monkeypatch):
    """Issue 24, item 7: a thoracic series without a landmark in a study of many overlapping series without one
    segmented every candidate (12, 113 s) before NO_LEVEL_LANDMARK. At most SPINESEG_PARTNER_MAX_ATTEMPTS (default
    3) partners are segmented; a candidate that certainly cannot help (the loader refuses it from its headers) is
    skipped without counting; the message lists what was tried, skipped, not tried and refused, and why."""
    from spineseg.errors import SpineSegError
    from spineseg.input.dicom_input import load_volume
    from spineseg.pipeline import segment_series
    calls = no_landmark_anywhere(monkeypatch)
    cfg = AppConfig.from_settings(tmp_path, tmp_path / "out", None, {}, env={})
    assert cfg.partner_max_attempts == 3
    volume = load_volume(crowded[5])
    with pytest.raises(InputError) as err:
        segment_series(volume, list(crowded.values()), None, cfg, RunReport(tmp_path / "out"))
    assert err.value.code == "NO_LEVEL_LANDMARK"
    assert len(calls) == 1 + 3                                 # its own segmentation and three partners
    message = err.value.message
    for n in (20, 21, 22):
        assert f"series {n} (T1 SAG {n}): tried, its own segmentation ended NO_LEVEL_LANDMARK" in message
    assert "series 2 (LOC SAG SPINE): skipped, it cannot be processed (MISSING_SLICES)" in message
    assert ("series 23 (T1 SAG 23), series 24 (T1 SAG 24): not tried, 3 partner series were tried already "
            "(SPINESEG_PARTNER_MAX_ATTEMPTS)") in message
    assert "series 30: covers no more of the spine than series 5" in message
    # the bound is a setting
    cfg = AppConfig.from_settings(tmp_path, tmp_path / "out", None, {"partner_max_attempts": 1}, env={})
    calls.clear()
    with pytest.raises(InputError):
        segment_series(volume, list(crowded.values()), None, cfg, RunReport(tmp_path / "out"))
    assert len(calls) == 1 + 1
    for bad in ("0", "101", "two"):
        with pytest.raises(SpineSegError) as refused:
            AppConfig.from_settings(tmp_path, tmp_path / "out", None, {}, env={"SPINESEG_PARTNER_MAX_ATTEMPTS": bad})
        assert refused.value.code == "BAD_SETTING" and "SPINESEG_PARTNER_MAX_ATTEMPTS" in refused.value.message


def test_a_series_that_failed_in_this_run_is_not_segmented_again(crowded, tmp_path, monkeypatch):
    """Two series without a landmark in one run (SPINESEG_ALL_SERIES): what failed as the first one's partner, or
    as a series of its own, is skipped by the second, and the second itself, tried as the first one's partner
    already, is not segmented again."""
    from spineseg.input.dicom_input import load_volume
    from spineseg.pipeline import segment_series
    calls = no_landmark_anywhere(monkeypatch)
    cfg = AppConfig.from_settings(tmp_path, tmp_path / "out", None, {}, env={})
    done = StudyMemo()
    with pytest.raises(InputError):
        segment_series(load_volume(crowded[5]), list(crowded.values()), None, cfg, RunReport(tmp_path / "out"), done)
    first = len(calls)
    with pytest.raises(InputError) as err:
        segment_series(load_volume(crowded[20]), list(crowded.values()), None, cfg, RunReport(tmp_path / "out"), done)
    assert len(calls) - first == 3                             # series 23, 24 and 30, the ones not tried yet
    for n in (23, 24, 30):
        assert f"series {n} ({crowded[n].description}): tried" in err.value.message
    for n in (5, 21, 22):
        assert f"series {n} ({crowded[n].description}): skipped, segmented already in this run, which ended " \
               "NO_LEVEL_LANDMARK" in err.value.message


def test_the_numbering_notes_name_the_partners_that_failed_before_one_named_the_levels(crowded, tmp_path,
                                                                                      monkeypatch):
    import spineseg.pipeline as pipeline
    from spineseg.inference.numbering import Numbering
    from spineseg.inference.two_step import SegmentationResult
    from spineseg.input.dicom_input import load_volume
    calls = no_landmark_anywhere(monkeypatch)
    failing = pipeline.segment_volume
    anchor = load_volume(crowded[22]).affine

    def segment_volume(array, affine, models, localizer=None, **kw):
        if localizer is None and not np.allclose(affine, anchor):
            return failing(array, affine, models, **kw)
        calls.append(affine)
        return SegmentationResult(np.zeros(array.shape, np.uint8),
                                  numbering=Numbering(["C2-C3"], [], 5, None, []))
    monkeypatch.setattr(pipeline, "segment_volume", segment_volume)
    cfg = AppConfig.from_settings(tmp_path, tmp_path / "out", None, {}, env={})
    result = pipeline.segment_series(load_volume(crowded[5]), list(crowded.values()), None, cfg,
                                     RunReport(tmp_path / "out"))
    assert result.partner["series_number"] == 22 and len(calls) == 1 + 3 + 1
    (note,) = [n for n in result.numbering.notes if n.startswith("partner series tried before it: ")]
    assert "series 20 (T1 SAG 20): tried, its own segmentation ended NO_LEVEL_LANDMARK" in note and "series 21" in note


@pytest.mark.slow
def test_a_retry_with_a_partner_runs_no_network_twice_on_the_same_image(study, tmp_path, monkeypatch):
    """Issue 28, item 4: the series without a landmark is labelled again with its partner's labels from its own
    network outputs (two_step.NetworkMemo), not preprocessed and run through the networks again; each network
    sees each input once in the whole run."""
    import spineseg.pipeline as pipeline
    from spineseg.inference.two_step import ModelPair, load_models

    seen = []

    class Counting:
        def __init__(self, model, step):
            self.model, self.step = model, step

        def __getattr__(self, name):
            return getattr(self.model, name)

        def predict(self, channels):
            seen.append((self.step, channels[0].shape, channels[0].affine.tobytes(),
                         np.asanyarray(channels[-1].dataobj).tobytes()))
            return self.model.predict(channels)

    def counting_models(*args, **kwargs):
        pair = load_models(*args, **kwargs)
        return ModelPair(Counting(pair.step1, "step1"), Counting(pair.step2, "step2"), pair.device, pair.backend)

    monkeypatch.setattr(pipeline, "load_models", counting_models)
    root, _ = study
    report = run(root, tmp_path / "out")
    assert report.processed[0]["numbering"]["anchored_by"], report.processed   # named from its partner
    step1 = [s for s in seen if s[0] == "step1"]
    assert len(step1) == len(set(step1)) == 2          # the T2 series and its partner, once each
    assert len(seen) == len(set(seen))
