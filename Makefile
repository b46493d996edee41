# spine-seg: `make demo` runs the app on a generated sample study; `make test` runs the test suite.
# Both create the virtual environment (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-test.txt constraints.txt pyproject.toml | cksum | cut -d' ' -f1)
DEMO   := demo
# `monai-deploy package` lives in holoscan-cli 4.2.0, which cannot share .venv (it pins packaging<26)
PKG_VENV  := .venv-package
PKG_STAMP := $(PKG_VENV)/.installed-holoscan-cli-4.2.0

.PHONY: venv demo test test-fast ohif models package image image-test clean

venv: $(STAMP)

# The pins first, then the project itself, editable and without resolving again: tests, tools and benches import
# spineseg, app and operators from this checkout, and the spine-seg and spine-seg-resend commands are in $(BIN).
$(STAMP): requirements.txt requirements-test.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-test.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/python tools/phantom.py --seed 7 --fov lumbar --slice-thickness 3.5 --pixel 0.6 --out $(DEMO)/study
	$(BIN)/python app -i $(DEMO)/study/dicom -o $(DEMO)/output
	@echo
	@echo "Demo study (phantom DICOM):  $(DEMO)/study/dicom"
	@echo "DICOM SEG:                   $$(ls $(DEMO)/output/*_seg.dcm)"
	@echo "Label map (NIfTI):           $$(ls $(DEMO)/output/*_labels.nii.gz)"
	@echo "Measurements (DICOM SR):     $$(ls $(DEMO)/output/*_measurements_sr.dcm)"
	@echo "Review picture (PNG):        $$(ls $(DEMO)/output/*_review.png)"
	@echo "Review picture (DICOM SC):   $$(ls $(DEMO)/output/*_review_sc.dcm)"
	@echo "Measurement table (PNG):     $$(ls $(DEMO)/output/*_measurements_table.png)"
	@echo "Measurement table (SC, 2nd): $$(ls $(DEMO)/output/*_measurements_table_sc.dcm)"
	@echo "Report:                      $(DEMO)/output/report.json"

# The whole suite, two test files at a time (pytest-xdist; a file's tests stay on one worker, so its
# module fixtures are made once). Tiers: pyproject.toml's markers, assigned in tests/conftest.py.
TEST_WORKERS ?= 2
test: $(STAMP) $(PKG_STAMP) ohif
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# The quick loop: no servers, no images, no browser, no end-to-end runs (a few minutes)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not pacs and not container and not browser" tests

# OHIF v3 (static builds from npm) and playwright-core for tests/test_ohif_display.py, in build/ohif. Without
# node/npm or the registry this warns and the browser test skips (it fails under CI=true; .ci/run installs them).
ohif:
	@if command -v npm >/dev/null && command -v node >/dev/null; then tests/browser/fetch_ohif.sh \
	  || echo "WARNING: could not install OHIF/playwright-core into build/ohif; the browser test will say so"; \
	else echo "note: node/npm not found; the OHIF browser test will be skipped (apt-get install nodejs npm chromium)"; fi

$(PKG_STAMP):
	test -x $(PKG_VENV)/bin/python || $(PYTHON) -m venv $(PKG_VENV)
	$(PKG_VENV)/bin/python -m pip install -q holoscan-cli==4.2.0
	$(PKG_VENV)/bin/python -m pip install -q --no-deps holoscan-cu13==4.6.0
	touch $@

# MAP build context (GPU and CPU variants) in build/map; on a machine with Docker: make package BUILD=1
package: $(STAMP) $(PKG_STAMP)
	$(PKG_VENV)/bin/python -m tools.package_map --out build/map $(if $(BUILD),--build)

# The CPU MAP image, built offline with a real engine (tools/build_image.py: Debian base by mmdebstrap, pinned
# wheelhouse in build/wheelhouse, docker build --network none); needs `docker info` to work (README, Deployment).
# GPU=1: also the GPU MAP FROM it, torch swapped for its CUDA build (deploy/map/Dockerfile.gpu; docs/map-image.md).
# WEIGHTS=DIR: then that image (GPU's with GPU=1) with the TotalSpineSeg release zips in DIR, checked against
# DIR/SHA256SUMS, in place of the phantom models (tools/weights_image.py; docs/deployment.md, "Official weights")
image: $(STAMP) $(PKG_STAMP)
	$(PKG_VENV)/bin/python -m tools.build_image $(if $(GPU),--gpu)
	$(if $(WEIGHTS),$(BIN)/python -m tools.weights_image "$(WEIGHTS)" $(if $(GPU),--gpu))

# The built image run as hospitals run it (tests/test_container_image.py)
image-test: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_container_image.py

# Re-train the bundled phantom models with the recipe that made them (models/README.md): a first run, then
# a --resume run on fresh phantoms at a lower learning rate. They were trained on a CUDA GPU (8 minutes on an
# H200, phantom generation included); MODEL_DEVICE=cpu runs the same recipe on the CPU (~18 h on 2 cores).
MODEL_DEVICE  ?= cuda
MODEL_WORKERS ?= $(shell nproc)
TRAIN := $(BIN)/python -m tools.train_phantom_models --out models --device $(MODEL_DEVICE) --patch 128 64 48 \
         --workers $(MODEL_WORKERS) --threads 4
models: $(STAMP)
	$(TRAIN) --steps 1 --batch 16 --cases 150 --iterations 1464
	$(TRAIN) --steps 2 --batch 16 --cases 150 --iterations 1373
	$(TRAIN) --steps 1 --batch 24 --cases 80 --iterations 576 --resume --lr 1e-3
	$(TRAIN) --steps 2 --batch 24 --cases 80 --iterations 825 --resume --lr 1e-3

clean:
	rm -rf $(DEMO) .pytest_cache
