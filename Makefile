# The two sacred commands: `make demo` and `make test`. Each sets up .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TESTED := $(VENV)/.installed-test

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# the pinned CPU wheel first, so that no multi-GB CUDA build is pulled in
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[fed]' torch==2.13.0
	touch $(STAMP)

# the tests also check nnU-Net v2 (extra `peers`, the benchmark's peer), DICOM I/O (extra
# `dicom`), MONAI bundles (extra `bundle`), ONNX feature services (extra `onnx`) and HF peft.
# nnU-Net pulls torchvision through timm; PyPI's build does not load against the CPU torch and then breaks
# the transformers/peft import, and nothing medpeft or nnU-Net runs needs it: removed.
$(TESTED): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,fed,peers,dicom,bundle,onnx]' torch==2.13.0
	$(BIN)/pip uninstall -q -y torchvision
	touch $(TESTED)

demo: $(STAMP)
	$(BIN)/medpeft demo

# one test worker per core of the CI machine (2), each training on one thread, as does every
# process a test starts (tests/conftest.py);
# the slowest tests go first and each worker takes one test at a time, so the long ones overlap
# (session fixtures are built once for all workers); ruff and the layer contract (lint-imports,
# pyproject.toml) first
TEST_WORKERS ?= 2
test: $(TESTED)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist load --maxschedchunk 1 --durations=25

bench: $(TESTED)
	$(BIN)/python benchmarks/backbone_speed.py
	$(BIN)/python benchmarks/adapter_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
