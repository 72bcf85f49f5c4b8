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

# ---- make help: the targets grouped by task, each paper target with its estimated cost, the main
# variables with their values. A target with a `##` comment that no group names is listed under "Other".
# HELP_COST_<target>: the range of GPU-hours of the target's whole plan at the default variables, from the
# one estimator (repro/experiments/summary.py cost_label: FLOP-based to anchor-based, repro/gpu_check/estimate.py);
# written by `make help-costs` (paste its output here), tests/test_make_help.py fails when one differs.
# `make -n TARGET` prints the same for any variables, at the measured rate once gpu-check has one.
HELP_PAPER := figure2 table2 table3 ablation figure3 figure4 claims all
HELP_EVERYDAY := demo test test-slow train evaluate export tensorboard check report
HELP_DATA := data bench bench-data
HELP_SETUP := setup wheelhouse gpu-check fresh-machine-test slurm-test faults
HELP_COST_figure2 := CPU, no training run
HELP_COST_table2 := est. 10.5-100.5 GPU-h, 36 runs
HELP_COST_table3 := est. 0.38-3.6 GPU-h, 11 runs
HELP_COST_ablation := est. 1.7-16.8 GPU-h, 6 runs
HELP_COST_figure3 := est. 0.0069-0.066 GPU-h, 4 runs
HELP_COST_figure4 := est. 5.2-50.2 GPU-h, 2 runs
HELP_COST_all := est. 15.7-150.8 GPU-h, 42 runs
HELP_VARIABLES := GPUS NNODES DATA_DIR IMAGENET_DIR CACHE_DIR OUT METHODS DATASETS SEEDS EPOCHS PROFILE PROBE \
  OVERRIDES PREPARE_DATA CONFIG ARGS RUN
HELP_VAR_GPUS := processes (GPUs) per run on this machine; > 1 runs torchrun
HELP_VAR_NNODES := machines per run (with NODE_RANK, MASTER_ADDR, MASTER_PORT, RDZV_TIMEOUT; docs/experiments.md)
HELP_VAR_DATA_DIR := datasets (may be read-only); missing CIFAR/STL-10 are downloaded into it
HELP_VAR_IMAGENET_DIR := ImageNet image folder for figure4 (empty: DATA_DIR/imagenet; may be read-only)
HELP_VAR_CACHE_DIR := derived files (FFCV) are written and reused here, never in DATA_DIR
HELP_VAR_OUT := run folders; results in OUT/results
HELP_VAR_METHODS := rows to run, e.g. "frossl vicreg" (empty: all rows of the target)
HELP_VAR_DATASETS := e.g. cifar10 (empty: all datasets of the target)
HELP_VAR_SEEDS := e.g. "0 1 2"
HELP_VAR_EPOCHS := override the epochs of every run (empty: as in the paper; else NOT-COMPARABLE)
HELP_VAR_PROFILE := paper | short (reduced budgets)
HELP_VAR_PROBE := empty (as the config: full) | cached (fast, NOT-COMPARABLE)
HELP_VAR_OVERRIDES := extra key=value config overrides for every run (NOT-COMPARABLE)
HELP_VAR_PREPARE_DATA := auto (download, write FFCV files) | none
HELP_VAR_CONFIG := make train: the config file
HELP_VAR_ARGS := make demo/train/evaluate: extra arguments
HELP_VAR_RUN := make evaluate, make export: the run folder
HELP_TARGETS = $(shell sed -nE 's/^([a-zA-Z0-9_-]+):.*\#\# .*/\1/p' $(MAKEFILE_LIST))
help_line = sed -nE 's/^$(1):.*\#\# (.*)/\1/p' $(MAKEFILE_LIST) | head -n1 | \
  awk -v t='$(1)' -v c='$(HELP_COST_$(1))' '{printf "  make %-19s %s%s\n", t, $$0, (c == "" ? "" : "  [" c "]")}';
# descriptions and costs must not contain a single quote (they are quoted for the shell)
help_group = $(if $(strip $(2)),printf '\n%s\n' '$(1)'; $(foreach t,$(2),$(call help_line,$(t))),:)

help: ## this list: the targets by task, the paper's with their estimated cost, and the main variables
	@printf '%s\n' 'FroSSL reproducibility artifact: make TARGET [VARIABLE=value ...]' \
	  '`make -n TARGET` prints the plan without running it: runs, probes, GPU-hours, downloads, disk.'
	@$(call help_group,Reproduce the paper (GPU-h: a range of two estimates - FLOP counts at 35% of an H100 SXM dense bf16 peak to the rate of a published 11.9 s SimCLR ResNet18 CIFAR-10 epoch on an A100; not measured: make gpu-check measures yours),$(HELP_PAPER))
	@$(call help_group,Everyday,$(HELP_EVERYDAY))
	@$(call help_group,Data and benchmarks,$(HELP_DATA))
	@$(call help_group,Setup and checks,$(HELP_SETUP))
	@$(call help_group,Other,$(filter-out $(HELP_PAPER) $(HELP_EVERYDAY) $(HELP_DATA) $(HELP_SETUP) help,$(HELP_TARGETS)))
	@printf '\n%s\n' 'Main variables (current value; the default unless set):'
	@$(foreach v,$(HELP_VARIABLES),printf '  %-13s %-16s %s\n' '$(v)' '$(or $($(v)),(empty))' '$(HELP_VAR_$(v))';)

# OFFLINE=DIR: install from a wheelhouse (make wheelhouse) with no network, beside a site torch
OFFLINE ?=
setup: ## install everything (python3.X-venv/-dev and ffcv's apt libraries, .venv from the hash-locked requirements*.lock, ffcv from source) [OFFLINE=wheelhouse dir]
	@$(SETUP) $(if $(OFFLINE),--offline "$(OFFLINE)")

# a folder of wheels for a node without internet (docs/gpu-check.md): PYTHON_VERSION and PLATFORM
# name the node; WITH_TORCH=1 adds torch/torchvision (default: the node's site torch is used)
WHEELHOUSE ?= wheelhouse
PYTHON_VERSION ?= 3.12
PLATFORM ?= manylinux_2_28_x86_64
WITH_TORCH ?= 0
WHEELHOUSE_PACKAGES ?=
.PHONY: wheelhouse help-costs
wheelhouse: ## wheels for an offline node into WHEELHOUSE (pyyaml, tqdm, ...; hash-checked against requirements.lock) [PYTHON_VERSION=3.12 PLATFORM= WITH_TORCH=0]
	PYTHON_VERSION="$(PYTHON_VERSION)" PLATFORM="$(PLATFORM)" WITH_TORCH="$(WITH_TORCH)" \
	  WHEELHOUSE_PACKAGES="$(WHEELHOUSE_PACKAGES)" bash scripts/setup.sh --wheelhouse "$(WHEELHOUSE)"

# the HELP_COST lines above, from the estimator
help-costs: setup
	@$(PYTHON) -c 'from repro.experiments.summary import help_cost_lines; print(*help_cost_lines(), sep="\n")'

.PHONY: slurm-test
slurm-test: ## (root) the SLURM batch script on a 2-node SLURM cluster started here: pre-emption, time limit, arrays (docs/slurm.md) [SCENARIOS=]
	PYTHON="$(abspath $(PYTHON))" bash scripts/slurm_test.sh

.PHONY: fresh-machine-test
fresh-machine-test: ## (root, ~4 GB of downloads) the README's two commands in a fresh Debian 12 root (debootstrap) [PYTEST_ARGS=]
	bash scripts/fresh_machine_test.sh

# ---- the image (docs/docker.md): docker when its daemon answers, else podman with its flags -------
TARGET ?= runtime
IMAGE ?=
HELP_SETUP += image image-test
.PHONY: image image-test
image: ## build the image frossl (TARGET=test: frossl-test) with docker, else podman; the commit as build argument [TARGET= IMAGE=tag PIP_CA=bundle.pem]
	bash scripts/image.sh "$(TARGET)" $(IMAGE)

image-test: ## (root or docker; 1-2 h on 2 busy cores, ~30 GB of disk) build every stage from a clean export of HEAD, run demo/test/stop/shm/--user checks in it [CHECKS=]
	bash scripts/image_test.sh

demo: setup ## CPU demo: FroSSL on bundled digits + linear probe vs random init (1-4 min on 2 CPU cores)
	$(PYTHON) -m repro.demo $(ARGS)

# pytest-xdist workers (each takes the cores / workers threads); the 15 slowest tests are printed
TEST_WORKERS ?= 2
TEST_FLAGS = -n $(TEST_WORKERS) --durations=15
test: setup ## run the test suite (what CI runs; slow tests excluded; TEST_WORKERS=2)
	$(PYTHON) -m pytest -m "not slow" $(TEST_FLAGS) $(PYTEST_ARGS)

test-slow: setup ## run only the slow tests
	$(PYTHON) -m pytest -m slow $(TEST_FLAGS) $(PYTEST_ARGS)

train: setup ## pretrain: make train CONFIG=repro/configs/cifar10/frossl.yaml ARGS="optim.epochs=100 name=x"
	$(PYTHON) -m repro.train $(CONFIG) data.cache_dir=$(CACHE_DIR) $(ARGS)

evaluate: setup ## linear probe + k-NN of a run: make evaluate RUN=runs/cifar10-frossl ARGS="--probe cached"
	@test -n "$(RUN)" || { echo "error: RUN is empty: make evaluate RUN=runs/<name>" >&2; exit 2; }
	$(PYTHON) -m repro.evaluate $(RUN) $(ARGS)

.PHONY: export
export: setup ## a run's backbone as a torchvision resnet18 state_dict + JSON sidecar (docs/export.md): make export RUN=runs/cifar10-frossl [ARGS="--out x.pt"]
	@test -n "$(RUN)" || { echo "error: RUN is empty: make export RUN=runs/<name>" >&2; exit 2; }
	$(PYTHON) -m repro.export $(RUN) $(ARGS)

# every run folder's tb/ under OUT (the trainer writes it beside metrics.jsonl); --bind_all: reachable
# from other machines and through docker run -p (docs/training.md "Watching a run")
TB_PORT ?= 6006
.PHONY: tensorboard
tensorboard: setup ## live view of the runs in OUT (loss terms, lr, online top-1/5, images/s): http://HOST:TB_PORT [OUT=runs TB_PORT=6006]
	$(PYTHON) -m tensorboard.main --logdir "$(OUT)" --bind_all --port $(TB_PORT)

FAULT_RUNS ?= 5
.PHONY: faults
faults: setup ## kill a small CPU run K times (SIGKILL, SIGTERM), resume, count bit-identical results (FAULT_RUNS=5)
	$(PYTHON) -m repro.faults --runs $(FAULT_RUNS)

BENCH_ARGS ?=
.PHONY: bench
bench: setup ## training-step benchmark: project step vs plain baseline, views/s, ratio, MFU on CUDA (BENCH_ARGS="--steps 3")
	$(PYTHON) -m benchmarks.bench_step $(BENCH_ARGS)

DATA_DIR ?= data
OUT ?= runs
CACHE_DIR ?= $(OUT)/cache
DATASET ?= cifar10
DATA_ARGS ?=
.PHONY: data bench-data
data: setup ## FFCV .beton files into CACHE_DIR/ffcv: make data DATASET=cifar10|cifar100|stl10|imagefolder DATA_DIR=data [DATA_ARGS="--subset 1000"]
	$(PYTHON) -m data_prep $(DATASET) --root $(DATA_DIR) --out $(CACHE_DIR)/ffcv $(DATA_ARGS)

# fill DATA_DIR before it is mounted read-only (docs/docker.md); ImageNet cannot be downloaded: its
# layout (IMAGENET_DIR, else DATA_DIR/imagenet) is checked when it is there
DOWNLOAD ?= cifar10 cifar100 stl10 imagenet
HELP_DATA += download
.PHONY: download
download: setup ## fill DATA_DIR before mounting it read-only: CIFAR-10/100 and STL-10 downloaded; ImageNet (put there by hand) has its layout checked [DOWNLOAD="cifar10 cifar100 stl10 imagenet" IMAGENET_DIR=]
	@for dataset in $(DOWNLOAD); do \
	  $(PYTHON) -m repro.experiments download $$dataset --data-dir "$(DATA_DIR)" --imagenet-dir "$(IMAGENET_DIR)" || exit $$?; \
	done

BENCH_DATA_ARGS ?=
bench-data: setup ## two-view batches/s: FFCV loader vs torchvision+PIL DataLoader, real CIFAR-10 (BENCH_DATA_ARGS="--batches 40")
	$(PYTHON) -m benchmarks.bench_data $(BENCH_DATA_ARGS)

# ---- first hour on a GPU (docs/gpu-check.md) ---------------------------------------------------
GPU_CHECK_ARGS ?=
.PHONY: gpu-check
# data: CIFAR10= (the JPEG archive), else DATA_DIR when it holds cifar-10-batches-py, else none (the parts
# that need none run: environment, CUDA tests, the step benchmark on synthetic batches)
gpu-check: setup ## on a new GPU machine (<= 9 min): env, CUDA tests, bench, 3-epoch FroSSL, every target's time -> runs/gpu-check/ [CIFAR10= GPU_CHECK_ARGS="--dry-run"]
	$(PYTHON) -m repro.gpu_check $(if $(CIFAR10),--data "$(CIFAR10)",$(if $(wildcard $(DATA_DIR)/cifar-10-batches-py),--data "$(DATA_DIR)")) $(GPU_CHECK_ARGS)

# ---- paper experiments (docs/experiments.md) --------------------------------------------------
# Each target runs `python -m repro.experiments TARGET`: prepare data, train what is missing,
# resume the unfinished, skip what is done, evaluate, write $(OUT)/results/, check its own rows.
# `make -n TARGET` prints the runs it would launch (the recipe line runs with --dry-run).
GPUS ?= 1
# several machines (docs/experiments.md): the same make command on each, NODE_RANK=0..NNODES-1,
# MASTER_ADDR = the NODE_RANK=0 machine; GPUS is per machine, the batch splits over NNODES x GPUS
NNODES ?= 1
NODE_RANK ?= 0
MASTER_ADDR ?=
MASTER_PORT ?= 29500
# seconds the nodes wait for each other (the preflight's meeting, each torchrun's rendezvous)
RDZV_TIMEOUT ?= 600
DATA_DIR ?= data
OUT ?= runs
# derived files (FFCV) go here, so DATA_DIR and IMAGENET_DIR may be read-only mounts (docs/data.md)
CACHE_DIR ?= $(OUT)/cache
METHODS ?=
DATASETS ?=
SEEDS ?= 0
EPOCHS ?=
PROFILE ?= paper
PROBE ?=
OVERRIDES ?=
IMAGENET_DIR ?=
CIFAR10 ?=
PREPARE_DATA ?= auto
SPECTRA_EVERY ?= 10
VARIANT ?= paper
RESULTS ?= $(OUT)/results
DRY_RUN = $(if $(findstring n,$(firstword -$(MAKEFLAGS))),--dry-run)
EXPERIMENTS = $(PYTHON) -m repro.experiments
# claims: SEEDS only when set on the command line (else the profile's: 0 1 2, or 0 for claims-quick)
CLAIMS_SEEDS = $(if $(filter command line environment override,$(origin SEEDS)),$(SEEDS))
# every target's flags but the seeds and the profile (claims picks its own): COMMON_FLAGS
EXPERIMENT_FLAGS = $(COMMON_FLAGS) --seeds "$(SEEDS)" --profile "$(PROFILE)"
COMMON_FLAGS = $(DRY_RUN) --gpus "$(GPUS)" --out "$(OUT)" --data-dir "$(DATA_DIR)" \
  --imagenet-dir "$(IMAGENET_DIR)" --cifar10 "$(CIFAR10)" --methods "$(METHODS)" --datasets "$(DATASETS)" \
  --epochs "$(EPOCHS)" --probe "$(PROBE)" \
  --overrides "$(OVERRIDES)" --prepare-data "$(PREPARE_DATA)" --spectra-every "$(SPECTRA_EVERY)" \
  --nnodes "$(NNODES)" --node-rank "$(NODE_RANK)" --master-addr "$(MASTER_ADDR)" --master-port "$(MASTER_PORT)" \
  --rdzv-timeout "$(RDZV_TIMEOUT)" \
  --variant "$(VARIANT)" --cache-dir "$(CACHE_DIR)"

.PHONY: table2 table3 figure2 figure3 figure4 ablation claims all check report
figure2: setup ## Figure 2: eq. 8 vs Barlow variant, linear maps on 1024 CIFAR-10 images (CPU, ~1 min); then its check
	+$(EXPERIMENTS) figure2 $(EXPERIMENT_FLAGS)

table2: setup ## Table 2: linear probe, 12 rows x CIFAR-10/100 (1000 ep.), STL-10 (500 ep.) [METHODS= DATASETS= SEEDS= GPUS= VARIANT=authors]
	+$(EXPERIMENTS) table2 $(EXPERIMENT_FLAGS)

table3: setup ## Table 3: STL-10 online top-1 at epochs 3-100 (the STL-10 runs of Table 2, stopped after epoch 100)
	+$(EXPERIMENTS) table3 $(EXPERIMENT_FLAGS)

ablation: setup ## the FroSSL (no logs) rows of Tables 2 and 3, beside FroSSL
	+$(EXPERIMENTS) ablation $(EXPERIMENT_FLAGS)

figure3: setup ## Figure 3: 5 STL-10 epochs, top-14 covariance eigenvalues of FroSSL/VICReg/Barlow/SimCLR
	+$(EXPERIMENTS) figure3 $(EXPERIMENT_FLAGS)

figure4: setup ## Figure 4: ImageNet FroSSL vs Barlow Twins, 100 epochs (GPUS=4 splits the batch of 224; IMAGENET_DIR=)
	+$(EXPERIMENTS) figure4 $(EXPERIMENT_FLAGS)

claims: setup ## CPU claims profile on real CIFAR-10 (Table 3 / Figure 3 / ablation claims, 3 seeds, ~55 min on 2 idle cores) [PROFILE=claims-quick|claims-all CIFAR10=archive]
	+$(EXPERIMENTS) claims $(COMMON_FLAGS) --profile "$(if $(filter paper,$(PROFILE)),claims,$(PROFILE))" --seeds "$(CLAIMS_SEEDS)"

all: setup ## every experiment above, then the full check and the report
	+$(EXPERIMENTS) all $(EXPERIMENT_FLAGS)

check: setup ## compare every result in OUT/results with expected_results/: PASS/FAIL/MISSING/NOT-COMPARABLE (non-zero exit on FAIL)
	$(PYTHON) -m repro.check --results "$(RESULTS)"

report: setup ## execute repro/report/report.ipynb into one HTML file: OUT/results/report.html
	$(PYTHON) -m repro.report --results "$(RESULTS)"
