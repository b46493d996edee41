# spine-seg: `make demo` runs the app on a generated sample study; `make test` runs the test suite.
# Both create the virtual environment (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt | cksum | cut -d' ' -f1)
DEMO   := demo
# `monai-deploy package` lives in holoscan-cli 4.2.0, which cannot share .venv (it pins packaging<26)
PKG_VENV  := .venv-package
PKG_STAMP := $(PKG_VENV)/.installed-holoscan-cli-4.2.0

.PHONY: venv demo test models package clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
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
	@echo "Report:                      $(DEMO)/output/report.json"

test: $(STAMP) $(PKG_STAMP)
	$(BIN)/python -m pytest -q tests

$(PKG_STAMP):
	test -x $(PKG_VENV)/bin/python || $(PYTHON) -m venv $(PKG_VENV)
	$(PKG_VENV)/bin/python -m pip install -q holoscan-cli==4.2.0
	$(PKG_VENV)/bin/python -m pip install -q --no-deps holoscan-cu13==4.6.0
	touch $@

# MAP build context (GPU and CPU variants) in build/map; on a machine with Docker: make package BUILD=1
package: $(PKG_STAMP)
	$(PKG_VENV)/bin/python tools/package_map.py --out build/map $(if $(BUILD),--build)

# Re-train the bundled phantom models (the bundled ones took about 78 minutes on 2 CPU cores; see models/README.md).
models: $(STAMP)
	$(BIN)/python tools/train_phantom_models.py --out models

clean:
	rm -rf $(DEMO) .pytest_cache
