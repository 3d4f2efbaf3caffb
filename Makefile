# `make sweep SWEEP=smoke.yaml` and `make test` set up .venv on first use, then run.
# `make test` also starts, when not running yet, what the tests use for real: a one-node Slurm
# (with slurmdbd), an OAR server and Chromium, from Debian's packages (needs root);
# `make test SERVICES=0` skips that (the tests that need them then fail, saying which script to run).
# TensorFlow, JAX and PyTorch (the three Keras backends, docs/backends.md): the CUDA builds where
# nvidia-smi exists (GPU nodes), the CPU builds elsewhere; force one with TF_EXTRA=gpu or TF_EXTRA=cpu.
# On CPU, torch comes from PyTorch's CPU index (TORCH_INDEX; a PyPI torch would pull ~3 GB of CUDA
# wheels), installed first so that the extra finds it satisfied. TORCH_INDEX= (empty) skips that index
# where a CPU wheel is already at hand (a local wheel folder, as in CI).
, := ,
PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     ?= .venv
SWEEP    ?= smoke.yaml
TF_EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
BACKEND_EXTRAS := $(if $(filter gpu,$(TF_EXTRA)),jax-gpu$(,)torch-gpu,jax$(,)torch)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SPEC  ?= torch>=2.13,<2.14
STAMP    := $(VENV)/.installed-$(TF_EXTRA)
BT       := $(VENV)/bin/benchmark-tracker

SERVICES ?= 1
# Two pytest-xdist workers: much of the suite waits on schedulers and subprocesses, so two keep a 2-core
# CI machine busy (tests/conftest.py keeps each live server's tests on one worker). 0 runs them in-process.
PYTEST_WORKERS ?= 2

.PHONY: install sweep expand collect status test services nightly clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(if $(filter cpu,$(TF_EXTRA)),$(VENV)/bin/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url '$(TORCH_INDEX)') '$(TORCH_SPEC)')
	$(VENV)/bin/python -m pip install --quiet -e '.[$(TF_EXTRA),$(BACKEND_EXTRAS),test]'
	rm -f $(VENV)/.installed-*
	touch $@

sweep: $(STAMP)
	$(BT) sweep '$(SWEEP)' $(ARGS)

expand: $(STAMP)
	$(BT) expand '$(SWEEP)' $(ARGS)

collect status: $(STAMP)
	$(BT) $@ '$(CAMPAIGN)'

nightly: $(STAMP)
	$(BT) nightly $(ARGS)

services:
	bash tests/browser/install-chromium.sh
	bash tests/clusters/slurm-up.sh
	bash tests/clusters/oar-up.sh

test: $(STAMP) $(if $(filter 1,$(SERVICES)),services)
	$(VENV)/bin/python -m pytest -m "cluster or not cluster" -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
