# One command each: `make run` (demo pipeline) and `make test` (whole suite).
# Both set up .venv from the pinned requirements first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
DEMO := demo
DEMO_TRAIN ?= 36
DEMO_TEST ?= 12

.PHONY: run test lint bench demo venv torch compiled clean slurm-up slurm-down test-slurm

# A stamp per requirements file: editing one reinstalls. The package itself goes in
# editable, so `imgshard` and `import imgshard` work from anywhere in .venv.
$(BIN)/.runtime: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(BIN)/.dev: requirements-dev.txt requirements-test.txt $(BIN)/.runtime
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(BIN)/.runtime

# PyTorch in .venv, for the DataLoader path and examples/train_clouds.py (pyproject.toml's torch extra).
torch: $(BIN)/.runtime
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[torch]'

# Every job imports imgshard in a new Python; where PYTHONDONTWRITEBYTECODE is
# set (many containers), each would compile it again: 0.16 s of CPU in a
# 5-job build. Files already compiled are skipped.
compiled: $(BIN)/.runtime
	$(BIN)/python -m compileall -q imgshard

$(DEMO)/.complete: imgshard/tools/demo.py | $(BIN)/.runtime
	rm -rf $(DEMO)/train_images $(DEMO)/test_images
	$(BIN)/python -m imgshard.tools.demo $(DEMO) --train $(DEMO_TRAIN) --test $(DEMO_TEST)
	touch $@

demo: $(DEMO)/.complete

# demo.yaml: a train set with masks (its train.csv, Understanding Clouds format) and a test set without.
run: $(BIN)/.runtime compiled $(DEMO)/.complete
	$(BIN)/snakemake --cores $(CORES) --configfile demo.yaml
	$(BIN)/snakemake --cores $(CORES) verify --configfile demo.yaml

test: $(BIN)/.dev compiled
	$(BIN)/python -m pytest

lint: $(BIN)/.dev $(DEMO)/.complete
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/python -m pyflakes imgshard benchmarks scripts examples

# 512 full-size images against serial, pool and the decode limit: benchmarks/results/.
bench: $(BIN)/.dev compiled
	$(BIN)/python -m benchmarks.bench

# An environment of its own: see requirements-slurm.txt for why not .venv.
SLURM_BIN := .venv-slurm/bin
$(SLURM_BIN)/.slurm: requirements-slurm.txt requirements.txt requirements-test.txt
	test -x $(SLURM_BIN)/python || $(PYTHON) -m venv .venv-slurm
	$(SLURM_BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-slurm.txt
	touch $@

# A single-node SLURM cluster on this machine (root: installs Debian's slurm and munge if missing).
slurm-up:
	bash cluster/slurm-up.sh

slurm-down:
	bash cluster/slurm-down.sh

# The pipeline through that cluster, compared with a local build.
test-slurm: $(SLURM_BIN)/.slurm slurm-up
	$(SLURM_BIN)/python -m pytest -m slurm tests/slurm

clean:
	rm -rf results logs .snakemake
