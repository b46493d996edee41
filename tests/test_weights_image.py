"""`make image WEIGHTS=DIR`: release zips verified against the site's SHA256SUMS, installed through
install_weights, baked into the CPU MAP in place of the phantom models, and run as `official` (issue 27, item 3).

The zips here have the release's shape (r20251124 layout, a trainer folder named nnUNetTrainerDAExt as in
TotalSpineSeg's training recipe, checkpoint_best.pth and checkpoint_final.pth both present) and hold the bundled
networks without their phantom mark, so that the study segments in seconds; checkpoint_final.pth holds zeroed
weights, so a run that took it instead of checkpoint_best.pth (the reference's choice) would find no spine. The
full-size ResEnc-L networks of the release run through the same path in bench/official_image.py (minutes, and
2.3 GB of checkpoints: a bench, not a test)."""
from __future__ import annotations

import json
import subprocess
import sys

import pydicom
import pytest
import torch

import release_zips
import weights_image
from conftest import ROOT
from container_helpers import IMAGE, demo_study, docker, image, output_folder, run_map  # noqa: F401 (fixtures)
from spineseg.inference.checksums import sha256_of
from spineseg.inference.two_step import STEP1_DATASET, STEP2_DATASET, find_model_folder

RELEASE = "r20251124"
TRAINER_FOLDER = "nnUNetTrainerDAExt__nnUNetPlans__3d_fullres"


def release_folder(models_dir, dataset, root):
    """The bundled model of ``dataset`` in a release's shape: best = its weights unmarked, final = zeroed."""
    bundled = find_model_folder(models_dir, dataset, "direct")
    folder = root / dataset / TRAINER_FOLDER
    (folder / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        (folder / name).write_bytes((bundled / name).read_bytes())
    checkpoint = torch.load(bundled / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    checkpoint.pop("spine_seg_provenance", None)
    checkpoint["trainer_name"] = "nnUNetTrainerDAExt"
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_best.pth")
    checkpoint["network_weights"] = {k: torch.zeros_like(v) for k, v in checkpoint["network_weights"].items()}
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


@pytest.fixture(scope="module")
def weights_dir(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    out = root / "zips"
    for dataset in (STEP1_DATASET, STEP2_DATASET):
        release_zips.write_release_zip(release_folder(models_dir, dataset, root / "folders"), out, RELEASE)
    release_zips.write_sums(out)
    return out


def build_weights_image(weights, tag):
    """`make image WEIGHTS=`'s command (python -m tools.weights_image, from the repository root)."""
    return subprocess.run([sys.executable, "-m", "tools.weights_image", str(weights), "--tag", tag], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def official_image(image, weights_dir):
    tag = f"{IMAGE}-{RELEASE}-test"
    proc = build_weights_image(weights_dir, tag)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    yield tag
    docker("image", "rm", "-f", tag)


def test_the_image_holds_the_release_and_not_the_phantom_models(official_image, weights_dir):
    info = json.loads(docker("image", "inspect", official_image).stdout)[0]
    labels = info["Config"]["Labels"]
    assert labels["org.spineseg.weights.release"] == RELEASE
    vetted = dict(line.split()[::-1] for line in (weights_dir / "SHA256SUMS").read_text().splitlines())
    assert labels["org.spineseg.weights.zips-sha256"] == ",".join(f"{n}={h}" for n, h in sorted(vetted.items()))
    listing = docker("run", "--rm", "--entrypoint", "find", official_image, "/opt/holoscan/models", "-name", "*.pth")
    assert sorted(listing.stdout.split()) == sorted(
        f"/opt/holoscan/models/nnUNet/results/{RELEASE}/{ds}/{TRAINER_FOLDER}/fold_0/checkpoint_{which}.pth"
        for ds in (STEP1_DATASET, STEP2_DATASET) for which in ("best", "final"))


def test_a_study_runs_as_official_with_the_best_checkpoint(official_image, demo_study, weights_dir, tmp_path):
    out = output_folder(tmp_path)
    proc = run_map(demo_study, out, image=official_image)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads((out / "report.json").read_text())
    models = report["models"]
    for step in ("step1", "step2"):
        assert models[step]["kind"] == "official" and models[step]["release"] == RELEASE
        assert models[step]["checkpoint"] == "checkpoint_best.pth"
        assert models[step]["openvino_ir"] == "precompiled"
    assert not [w for w in report.get("warnings", []) if "phantom" in json.dumps(w).lower()]
    seg = pydicom.dcmread(next(out.glob("*_seg.dcm")))
    assert "PHANTOM" not in seg.SeriesDescription.upper() and "phantom" not in seg.ContentDescription.lower()
    algorithm = str(seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0])
    assert RELEASE in algorithm and "phantom" not in algorithm.lower()


def tampered_copy(weights_dir, tmp_path):
    copy = tmp_path / "zips"
    copy.mkdir()
    for f in weights_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    victim = copy / f"{STEP2_DATASET}_{RELEASE}.zip"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    return copy, victim


def test_a_tampered_zip_is_refused_before_anything_is_built(image, weights_dir, tmp_path):
    copy, victim = tampered_copy(weights_dir, tmp_path)
    staged_before = sorted(weights_image.STORE.iterdir()) if weights_image.STORE.exists() else []
    tag = f"{IMAGE}-tampered-test"
    proc = build_weights_image(copy, tag)
    assert proc.returncode == 4
    assert "WEIGHTS_CORRUPT" in proc.stderr and str(victim) in proc.stderr and "SHA-256" in proc.stderr
    assert docker("image", "inspect", tag).returncode != 0
    assert (sorted(weights_image.STORE.iterdir()) if weights_image.STORE.exists() else []) == staged_before


@pytest.mark.parametrize("change,expected", [
    ("missing", "has no SHA256SUMS"),
    ("unlisted", "lists"),
    ("malformed", "is not '<64 hex digits>  <file name>'"),
])
def test_zips_without_a_matching_sha256_list_are_refused(weights_dir, tmp_path, change, expected):
    copy = tmp_path / "zips"
    copy.mkdir()
    for f in weights_dir.glob("*.zip"):
        (copy / f.name).write_bytes(f.read_bytes())
    sums = (weights_dir / "SHA256SUMS").read_text()
    if change == "unlisted":
        (copy / "SHA256SUMS").write_text(sums.splitlines()[0] + "\n")
    elif change == "malformed":
        (copy / "SHA256SUMS").write_text(sums.replace("  ", " ", 1).replace(" ", "\t", 1))
    with pytest.raises(weights_image.ModelError) as err:
        weights_image.verify(copy)
    assert err.value.code == "WEIGHTS_UNVERIFIED" and expected in err.value.message


def test_verify_accepts_what_sha256sum_writes(weights_dir):
    checked = weights_image.verify(weights_dir)
    assert [(p.name, h) for p, h in checked] == sorted((z.name, sha256_of(z)) for z in weights_dir.glob("*.zip"))


def test_a_staged_release_is_reused_only_while_it_holds_what_the_zips_hold(weights_dir, tmp_path, monkeypatch):
    """A second build from the same zips reuses build/image/weights/<key>/models (no second install) unless a file
    there was changed, removed or added since: then it installs again."""
    monkeypatch.setattr(weights_image, "STORE", tmp_path / "store")
    verified = weights_image.verify(weights_dir)
    files = weights_image.zip_files(verified)
    models = weights_image.install_once(verified)
    assert weights_image.holds(models, files)
    installed = models.stat().st_ino
    assert weights_image.install_once(verified) == models and models.stat().st_ino == installed      # reused
    checkpoint = next(models.rglob("checkpoint_best.pth"))
    good = checkpoint.read_bytes()
    checkpoint.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))          # same size, another CRC-32
    assert not weights_image.holds(models, files)
    assert weights_image.install_once(verified) == models and models.stat().st_ino != installed    # installed again
    assert checkpoint.read_bytes() == good and weights_image.holds(models, files)
    (models / "nnUNet" / "stray.txt").write_text("not from a zip")
    assert not weights_image.holds(models, files)
    (models / "nnUNet" / "stray.txt").unlink()
    next(models.rglob("plans.json")).unlink()
    assert not weights_image.holds(models, files)
