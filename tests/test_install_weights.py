"""Installing release zips: verified, loadable, all or nothing (zips built here from the phantom models)."""
import zipfile

import pytest
import torch

import install_weights as IW
from spineseg.errors import ModelError
from spineseg.inference.two_step import STEP1_DATASET, STEP2_DATASET, LoadedModel, find_model_folder

RELEASE = "r20991231"


@pytest.fixture(scope="module")
def release_zips(models_dir, tmp_path_factory):
    """Zips shaped like the official release, holding the phantom weights without their phantom mark."""
    out = tmp_path_factory.mktemp("zips")
    zips = []
    for ds in (STEP1_DATASET, STEP2_DATASET):
        folder = find_model_folder(models_dir, ds, "direct")
        ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        ckpt.pop("spine_seg_provenance", None)
        tmp_ckpt = out / f"{ds}.pth"
        torch.save(ckpt, tmp_ckpt)
        path = out / f"{ds}_{RELEASE}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            base = f"{ds}/{folder.name}"
            zf.write(folder / "plans.json", f"{base}/plans.json")
            zf.write(folder / "dataset.json", f"{base}/dataset.json")
            zf.write(tmp_ckpt, f"{base}/fold_0/checkpoint_final.pth")
        zips.append(path)
    return zips


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_install_then_app_prefers_the_release(tmp_path, release_zips):
    target = IW.install([str(z) for z in release_zips], tmp_path)
    assert target == tmp_path / "nnUNet" / "results" / RELEASE
    folder = find_model_folder(tmp_path, STEP2_DATASET)
    assert folder.parent == target / STEP2_DATASET
    info = LoadedModel(folder).info
    assert info.kind == "official" and info.release == RELEASE
    assert not [p for p in (tmp_path / "nnUNet" / "results").iterdir() if p.name.startswith(".")]


def test_reinstall_replaces_in_place(tmp_path, release_zips):
    IW.install([str(z) for z in release_zips], tmp_path)
    IW.install([str(z) for z in release_zips], tmp_path)
    assert len(list((tmp_path / "nnUNet" / "results" / RELEASE).iterdir())) == 2


def test_corrupt_zip_installs_nothing(tmp_path, release_zips):
    bad = tmp_path / release_zips[1].name
    data = bytearray(release_zips[1].read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    bad.write_bytes(bytes(data))
    models = tmp_path / "models"
    with pytest.raises(ModelError) as exc:
        IW.install([str(release_zips[0]), str(bad)], models)
    assert exc.value.code == "WEIGHTS_CORRUPT"
    assert _tree(models) == ["nnUNet", "nnUNet/results"]


def test_one_step_alone_is_refused(tmp_path, release_zips):
    with pytest.raises(ModelError) as exc:
        IW.install([str(release_zips[0])], tmp_path)
    assert exc.value.code == "WEIGHTS_MALFORMED" and STEP2_DATASET in exc.value.message


def test_checksum_mismatch_is_refused(tmp_path, release_zips):
    with pytest.raises(ModelError) as exc:
        IW.install([str(z) for z in release_zips], tmp_path, sha256=["0" * 64, "0" * 64])
    assert exc.value.code == "WEIGHTS_CORRUPT"
    assert not (tmp_path / "nnUNet" / "results" / RELEASE).exists()


def test_command_line_reports_errors(tmp_path, capsys):
    assert IW.main([str(tmp_path / "missing.zip"), "--models", str(tmp_path)]) == 4
    assert "WEIGHTS_NOT_FOUND" in capsys.readouterr().err
