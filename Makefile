# One-command set-up, demo, tests and benchmarks. Everything lives in ./.venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean gpu-wheels

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY)"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/mis demo --out demo_out

test: install
	$(BIN)/python -m pytest

bench: install
	@set -e; for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f; done

# Wheels the GPU machine lacks (its python3 is 3.12 and cannot download); see benchmarks/gpu_check.sh.
gpu-wheels: install
	$(BIN)/python -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 \
		--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .gpu_wheels \
		monai==1.6.1 nibabel pydicom soundfile cffi pycparser

clean:
	rm -rf demo_out .pytest_cache build src/*.egg-info
