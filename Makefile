# The two sacred commands: `make demo` and `make test`. Each sets up .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# the pinned CPU wheel first, so that no multi-GB CUDA build is pulled in
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,fed]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medpeft demo

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/backbone_speed.py
	$(BIN)/python benchmarks/adapter_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
