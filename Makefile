# Two commands a newcomer needs: `make demo` (the main job) and `make test`.
# Both bootstrap .venv with venv + pip. The pinned CPU torch is installed first so that
# pip never resolves the `train` extra to a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TORCH_PIN := torch==2.13.0

.PHONY: setup demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: the bundled `echo` task trained under the supervisor on this machine's
# CPU (live progress, heartbeats every 30 s, the avg_bit_acc >= 0.93 gate at the end).
demo: $(STAMP)
	$(BIN)/harness run echo --heartbeat 30

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers (pytest-xdist): most of the suite waits on real processes and timers, so two
# run it in about half the time on 2 cores. The Slurm suite runs after, alone: its jobs
# run on this machine's CPUs under real time limits, and one cluster serves it.
# PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --ignore=tests/slurm
	$(BIN)/pytest tests/slurm

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/mistakes.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# The GPU check (bench/gpu_check.py, issue 11): cp312 manylinux wheels of what the device
# machine lacks, at the versions this venv has, into bench/wheels/ (gitignored; carry it).
GPU_WHEELS := bench/wheels
GPU_PLATFORMS := --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux_2_28_x86_64

.PHONY: gpu-wheels
gpu-wheels: $(STAMP)
	rm -rf $(GPU_WHEELS)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps \
		--only-binary=:all: --python-version 3.12 --implementation cp $(GPU_PLATFORMS) \
		-d $(GPU_WHEELS) $$($(BIN)/python bench/gpu_check.py --pins)
	$(BIN)/python bench/gpu_check.py --check-wheels
