# Quickstart: `make demo` and `make test` both create/refresh .venv with pip, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fewstep-installed
TEST_STAMP := $(VENV)/.fewstep-test-extras

.PHONY: demo demo-full test test-slow lint bench-toy bench-digits clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU machines get the CPU wheel (torch==2.13.0 from the local cache); GPU machines a regular build.
	if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "torch>=2.4"; \
	else $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[dev,image]'
	touch $(STAMP)

# the tests also cover the optional diffusers extra (pretrained diffusers teachers); the demo does not need it
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,image,diffusers]'
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/fewstep demo --out demo_out

demo-full: $(STAMP)
	$(VENV)/bin/fewstep demo --full --out demo_full_out

test: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks/scripts
	$(VENV)/bin/pytest

test-slow: $(TEST_STAMP)
	$(VENV)/bin/pytest -m "slow and not gpu and not data"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks/scripts

bench-toy: $(STAMP)
	$(VENV)/bin/fewstep bench toy --out bench_out/toy

bench-digits: $(STAMP)
	$(VENV)/bin/fewstep bench digits --out bench_out/digits

clean:
	rm -rf $(VENV) demo_out demo_full_out bench_out runs
