"""The MAP build context made offline by `monai-deploy package` (holoscan-cli 4.2.0), GPU and CPU variants."""
import json
import subprocess

import pytest
import yaml

from conftest import ROOT

PKG_PYTHON = ROOT / ".venv-package" / "bin" / "python"


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    if not PKG_PYTHON.exists():
        pytest.fail("the packaging environment .venv-package is missing: `make test` and `make package` create it")
    out = tmp_path_factory.mktemp("map")
    proc = subprocess.run([str(PKG_PYTHON), "-m", "tools.package_map", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return out


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_build_context_is_complete(contexts, variant):
    ctx = contexts / variant
    app_yaml = yaml.safe_load((ROOT / "app.yaml").read_text())
    app_json = json.loads((ctx / "map" / "app.json").read_text())
    pkg_json = json.loads((ctx / "map" / "pkg.json").read_text())
    assert json.loads(app_json["command"]) == ["python3", "/opt/holoscan/app"]
    assert app_json["sdk"] == "monai-deploy" and app_json["sdkVersion"] == "4.0.0"
    assert app_json["version"] == pkg_json["version"] == str(app_yaml["application"]["version"])
    env = app_json["environment"]
    assert env["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models" and env["HOLOSCAN_CONFIG_PATH"].endswith("app.yaml")
    assert app_json["input"]["path"] == "input/" and app_json["output"]["path"] == "output/"
    assert pkg_json["resources"] == app_yaml["resources"]
    assert pkg_json["models"] == {"nnUNet": "/opt/holoscan/models/nnUNet"}
    for dataset in ("Dataset101_TotalSpineSeg_step1", "Dataset102_TotalSpineSeg_step2"):
        src = sorted((ROOT / "models" / "nnUNet" / "results" / dataset).glob("*/fold_0/checkpoint_final.pth"))
        dst = sorted((ctx / "models" / "nnUNet" / "results" / dataset).glob("*/fold_0/checkpoint_final.pth"))
        assert len(src) == len(dst) == 1 and src[0].read_bytes() == dst[0].read_bytes()
    assert (ctx / "app" / "__main__.py").is_file() and (ctx / "app.config").is_file()
    if variant == "gpu":   # the packager's layout: our packages in lib/, which its image puts on PYTHONPATH
        assert (ctx / "lib" / "spineseg" / "pipeline.py").is_file() and (ctx / "lib" / "operators" / "base.py").is_file()
    else:                  # the project's wheel in dist/, pip-installed by the Dockerfile; no lib/, no PYTHONPATH
        assert not (ctx / "lib").exists() and [w.name for w in (ctx / "dist").iterdir()] == [
            f"spine_seg-{app_yaml['application']['version']}-py3-none-any.whl"]
    requirements = (ctx / "pip" / "requirements.txt").read_text().splitlines()
    assert "nnunetv2==2.8.1" in requirements and "totalspineseg==20260807" in requirements
    assert not [r for r in requirements if r.split("==")[0] in ("pytest", "hypothesis", "dcmqi")]
    assert "torch==2.13.0" in requirements and not [r for r in requirements if r.startswith("-")]
    dockerfile = (ctx / "Dockerfile").read_text()
    sdk_dockerfile = dockerfile if variant == "gpu" else (ctx / "Dockerfile.holoscan-cli").read_text()
    assert "pip install --no-cache-dir --user -r /tmp/requirements.txt" in sdk_dockerfile
    if variant == "gpu":
        assert "FROM nvcr.io/nvidia/cuda:13.0.0-runtime-ubuntu24.04 AS base" in dockerfile
        assert "COPY ./models  /opt/holoscan/models" in dockerfile
    else:
        # buildable offline on the Debian base: no keyring download, no package index, pinned wheels only
        assert "FROM ${BASE_IMAGE} AS release" in dockerfile and "\n@SDK@\n" not in dockerfile
        assert not [w for w in ("curl", "apt-get", "http", "nvidia.com", "pip install --upgrade") if w in dockerfile]
        assert "pip install --no-index --find-links /tmp/wheelhouse" in dockerfile
        assert "COPY ./models /opt/holoscan/models" in dockerfile
        assert "--no-deps --no-cache-dir --disable-pip-version-check \\\n        -q /tmp/dist/spine_seg-" in dockerfile
        assert "PYTHONPATH" not in dockerfile and "/opt/holoscan/lib" not in dockerfile
        assert (ctx / "entrypoint.sh").read_bytes() == (ROOT / "deploy" / "map" / "entrypoint.sh").read_bytes()
        assert (ctx / "wheelhouse").is_dir()
        # the packager's labels and HOLOSCAN_* variables, unchanged
        for line in sdk_dockerfile.splitlines():
            if line.startswith("ENV HOLOSCAN_") or (line.startswith("LABEL ") and not line.startswith("LABEL base=")):
                assert line in dockerfile.splitlines(), line
    build = json.loads((ctx / "buildx-args.json").read_text())
    assert build["platforms"] == ["linux/amd64"] and build["tags"]
