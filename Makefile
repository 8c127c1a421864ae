# mtdense: `make demo` trains and evaluates on the built-in synthetic city; `make test` runs the tests.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mtdense-installed
# torch/torchvision are pinned to the releases this project is tested with.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# The suite runs in two pytest-xdist workers, one test file per worker at a time: on a 2-core
# machine 512 s instead of 713 s for the same tests (README, "Tests and benchmarks").
# TEST_WORKERS=0 runs it in this process, as plain pytest does.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: demo test test-fast install bench clean help

help:
	@echo "make demo       generate a synthetic stereo city, train, evaluate -> runs/demo"
	@echo "make test       run the test suite (two workers; TEST_WORKERS=0: one process)"
	@echo "make test-fast  the suite without tests marked slow"
	@echo "make bench      speed benchmark table at 400x1024 (docs/benchmarks.md)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mtdense demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/mtdense bench --size 400 1024 --markdown docs/benchmarks.md

clean:
	rm -rf runs .pytest_cache
