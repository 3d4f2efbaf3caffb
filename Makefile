# `make sweep SWEEP=smoke.yaml` and `make test` set up .venv on first use, then run.
# TensorFlow: the CUDA build where nvidia-smi exists (GPU nodes), the CPU build elsewhere;
# force one with TF_EXTRA=gpu or TF_EXTRA=cpu.
PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     ?= .venv
SWEEP    ?= smoke.yaml
TF_EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP    := $(VENV)/.installed-$(TF_EXTRA)
BT       := $(VENV)/bin/benchmark-tracker

.PHONY: install sweep expand collect status test nightly clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[$(TF_EXTRA),test]'
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

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
