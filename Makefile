# FroSSL reproducibility artifact. `make help` lists the targets.
# Every target that runs Python first runs scripts/setup.sh (cheap when nothing changed).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
SETUP ?= bash scripts/setup.sh
CONFIG ?= repro/configs/cifar10/frossl.yaml
RUN ?=
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help setup demo test test-slow train evaluate

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort -u | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

setup: ## install everything (apt libraries, .venv with pinned packages, ffcv from source)
	@$(SETUP)

demo: setup ## CPU demo: FroSSL on bundled digits + linear probe vs random init (~3 min)
	$(PYTHON) -m repro.demo $(ARGS)

test: setup ## run the test suite (what CI runs; slow tests excluded)
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup ## run only the slow tests
	$(PYTHON) -m pytest -m slow $(PYTEST_ARGS)

train: setup ## pretrain: make train CONFIG=repro/configs/cifar10/frossl.yaml ARGS="optim.epochs=100 name=x"
	$(PYTHON) -m repro.train $(CONFIG) $(ARGS)

evaluate: setup ## linear probe + k-NN of a run: make evaluate RUN=runs/cifar10-frossl ARGS="--probe cached"
	@test -n "$(RUN)" || { echo "error: RUN is empty: make evaluate RUN=runs/<name>" >&2; exit 2; }
	$(PYTHON) -m repro.evaluate $(RUN) $(ARGS)

FAULT_RUNS ?= 5
.PHONY: faults
faults: setup ## kill a small CPU run K times (SIGKILL, SIGTERM), resume, count bit-identical results (FAULT_RUNS=5)
	$(PYTHON) -m repro.faults --runs $(FAULT_RUNS)

BENCH_ARGS ?=
.PHONY: bench
bench: setup ## training-step benchmark: project step vs plain baseline, views/s, ratio, MFU on CUDA (BENCH_ARGS="--steps 3")
	$(PYTHON) -m benchmarks.bench_step $(BENCH_ARGS)

DATA_DIR ?= data
DATASET ?= cifar10
DATA_ARGS ?=
.PHONY: data bench-data
data: setup ## FFCV .beton files: make data DATASET=cifar10|cifar100|stl10|imagefolder DATA_DIR=data [DATA_ARGS="--subset 1000"]
	@case "$(DATASET)" in \
	  cifar10|cifar100) $(PYTHON) -m data_prep.write_cifar --dataset $(DATASET) --root $(DATA_DIR) $(DATA_ARGS) ;; \
	  stl10) $(PYTHON) -m data_prep.write_stl10 --root $(DATA_DIR) $(DATA_ARGS) ;; \
	  imagefolder) $(PYTHON) -m data_prep.write_imagefolder --root $(DATA_DIR) $(DATA_ARGS) ;; \
	  *) echo "error: DATASET=$(DATASET): choose cifar10, cifar100, stl10 or imagefolder" >&2; exit 2 ;; \
	esac

BENCH_DATA_ARGS ?=
bench-data: setup ## two-view batches/s: FFCV loader vs torchvision+PIL DataLoader, real CIFAR-10 (BENCH_DATA_ARGS="--batches 40")
	$(PYTHON) -m benchmarks.bench_data $(BENCH_DATA_ARGS)
