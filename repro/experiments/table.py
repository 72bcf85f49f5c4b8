"""THE table of experiments: one record per table or figure of the paper (and `all`). Everything
else (planning, running, collecting, the command line, the Make targets) reads these records and
never branches on a target's name: adding an experiment is adding a record here
(docs/experiments.md, "Adding an experiment").

Rows are config names: a run of row R on dataset D trains repro/configs/D/R.yaml. Experiments that
share training runs share one `Runs` (Table 2's STL-10 column, Table 3 and the ablation are the
same run folders), so a run one of them trained is found done by the others.
"""
from __future__ import annotations

from functools import partial

from repro.experiments.claims import collect_at_chosen_rates, record_claims, run_claims_target
from repro.experiments.collect import (collect_claims, collect_linear_regime, collect_online_curves_and_probe,
                                       collect_online_top1, collect_probe_top1, collect_spectra)
from repro.experiments.commands import figure2_command
from repro.experiments.experiment import Experiment, Runs
from repro.report.plots import plot_figure3, plot_figure4

TABLE2_ROWS = ("simclr", "swav", "mocov2plus", "simsiam", "byol", "dino", "vicreg", "barlow_twins", "wmse",
               "corinfomax", "frossl_nologs", "frossl")
TABLE3_EPOCHS = (3, 10, 30, 50, 100)
# Figure 3 (paper 5.2: ResNet18, STL-10, lr 0.1, batch 256, 5 epochs; optimizer in the unavailable
# appendix B.1): SGD with momentum 0.9 at a constant lr 0.1 (min_lr = lr: the cosine is flat).
FIGURE3_PROTOCOL = ("optim.name=sgd", "optim.lr=0.1", "optim.min_lr=0.1", "optim.warmup_epochs=0", "optim.epochs=5",
                    "data.batch_size=256", "eval.online_eval_every=0", "train.spectra_every={spectra_every}")
FIGURE4_WINDOW = 30   # epochs of the figure's per-epoch curves

# Tables 2 and 3 share runs: the STL-10 runs validate every epoch for Table 3's columns.
TABLE_RUNS = Runs(per_dataset={"stl10": ("eval.online_eval_every=1",)})

FIGURE2 = Experiment(
    "figure2", "linear regime, eq. 8 vs the Barlow variant (CPU, about a minute; repro/linear_regime.py)",
    collect=collect_linear_regime, copy_figure="figure2/figure2.png",
    script=figure2_command, done_file="figure2/figure2.json")
TABLE2 = Experiment(
    "table2", "linear probe top-1, 12 rows x CIFAR-10 / CIFAR-100 (1000 ep.) / STL-10 (500 ep.)",
    rows=TABLE2_ROWS, datasets=("cifar10", "cifar100", "stl10"), runs=TABLE_RUNS,
    collect=collect_probe_top1, variants=True)
TABLE3 = Experiment(
    "table3", "STL-10 online top-1 at epochs 3-100: Table 2's STL-10 runs, stopped once epoch 100 is validated",
    rows=tuple(r for r in TABLE2_ROWS if r != "corinfomax"),   # no CorInfoMax row in Table 3
    datasets=("stl10",), runs=TABLE_RUNS, stop_at_epoch=max(TABLE3_EPOCHS), evaluate=False,
    collect=partial(collect_online_top1, epochs=TABLE3_EPOCHS))
ABLATION = Experiment(
    "ablation", "the FroSSL (no logs) rows of Tables 2 and 3, with the FroSSL rows to compare",
    rows=("frossl_nologs", "frossl"), datasets=TABLE2.datasets, runs=TABLE_RUNS, results=(TABLE2, TABLE3),
    check_own_rows=True, note="ablation: the STL-10 runs also give Table 3's no-logs rows (validated every epoch)")
FIGURE3 = Experiment(
    "figure3", "5 STL-10 epochs of FroSSL, VICReg, Barlow Twins, SimCLR with eigenvalue tracking",
    rows=("frossl", "vicreg", "barlow_twins", "simclr"), datasets=("stl10",), takes_datasets=False,
    runs=Runs(prefix="figure3-", overrides=FIGURE3_PROTOCOL), evaluate=False,
    collect=collect_spectra, plot=plot_figure3)
FIGURE4 = Experiment(
    "figure4", "ImageNet, FroSSL vs Barlow Twins, 100 epochs, online top-1/top-5 per epoch, probe",
    rows=("frossl", "barlow_twins"), datasets=("imagenet",), takes_datasets=False,
    runs=Runs(overrides=("eval.online_eval_every=1",)),
    collect=partial(collect_online_curves_and_probe, window=FIGURE4_WINDOW),
    plot=partial(plot_figure4, window=FIGURE4_WINDOW))
# The CPU claims profile (docs/claims.md): small versions of Table 3's, Figure 3's and the ablation's
# comparisons on real CIFAR-10, read as an image folder at 32 px (the JPEG archive unpacked, or
# torchvision's files written out as PNG: repro/experiments/claims.py). ONE schedule for every
# method, so that the comparison is between objectives, not recipes: a width-8 ResNet18 (CIFAR stem),
# 4,096 training images, batch 128 (32 steps per epoch), 3 epochs, LARS at lr 0.2 per 256 images
# (0.1 per step at batch 128) with a linear warmup over the first 1.5 epochs, online validation
# after every epoch, the spectra every 5 steps, the cached probe. Chosen by measurement
# (docs/claims.md "Choosing the schedule"): VICReg's loss went non-finite in the first 15 steps at
# lr 0.3 and 0.2 per step, and stayed finite on seeds 0, 1 and 2 with this one.
CLAIMS_PROTOCOL = ("data.dataset=imagefolder", "data.image_size=32", "data.download=false", "data.subset=4096",
                   "data.batch_size=128", "model.width=8", "optim.name=lars", "optim.classifier_lr=0.1", "optim.lr=0.2",
                   "optim.epochs=3", "optim.warmup_epochs=1.5", "eval.online_eval_every=1", "eval.probe=cached",
                   "train.spectra_every=5")
CLAIMS_ROWS = ("frossl", "barlow_twins", "vicreg", "simclr", "frossl_nologs")
CLAIMS_RANDOM_INIT_ROW = CLAIMS_ROWS[0]   # its runs' encoders at initialisation give the random-init baseline row
# PROFILE=claims-all (docs/claims.md): the same schedule for FroSSL, all nine baselines and the ablation,
# each row at its own learning rate, chosen by a seed-0 sweep (repro/experiments/claims.py); not a
# target of its own: `make claims PROFILE=claims-all` selects it, its results are the claims experiment's.
CLAIMS_ALL_ROWS = ("frossl",) + tuple(r for r in TABLE2_ROWS if r not in ("frossl", "frossl_nologs")) + ("frossl_nologs",)
CLAIMS_ALL = Experiment(
    "claims", "CPU profile on real CIFAR-10: every method at its swept learning rate, 3 seeds",
    rows=CLAIMS_ALL_ROWS, datasets=("cifar10",), takes_datasets=False,
    runs=Runs(prefix="claims-all-", overrides=CLAIMS_PROTOCOL), profiles=("claims-all",),
    collect=collect_at_chosen_rates, check_own_rows=True, runner=run_claims_target, record_references=record_claims)
CLAIMS = Experiment(
    "claims", "CPU profile on real CIFAR-10: Table 3's early-learning, Figure 3's and the ablation's claims, 3 seeds",
    rows=CLAIMS_ROWS, datasets=("cifar10",), takes_datasets=False,
    runs=Runs(prefix="claims-", overrides=CLAIMS_PROTOCOL), profiles=("claims", "claims-quick"),
    profile_records={"claims-all": CLAIMS_ALL}, collect=collect_claims, check_own_rows=True,
    runner=run_claims_target, record_references=record_claims)

ALL = Experiment("all", "all of the above, then the full check and the report",
                 parts=(FIGURE2, TABLE2, TABLE3, FIGURE3, FIGURE4))

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (FIGURE2, TABLE2, TABLE3, ABLATION, FIGURE3, FIGURE4, CLAIMS,
                                                            ALL)}
# what `collect NAME` and `record NAME` accept: the experiments that write their own result file
COLLECTABLE: dict[str, Experiment] = {e.name: e for e in EXPERIMENTS.values() if e.collect is not None}
