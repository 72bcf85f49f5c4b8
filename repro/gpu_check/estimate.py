"""Wall-time estimate of experiment runs from their FLOPs: the project's one estimator. Two users:

* `make gpu-check` calibrates the rate by one measured epoch on this machine (estimate_targets);
* the experiment targets' plan summary (`make -n TARGET`, repro/experiments/summary.py) and `make
  help` use the reference rate below, a named GPU at an assumed utilisation (reference_rate):
  estimated GPU-hours, not measurements.

The measured quantity is the seconds per CIFAR-10 FroSSL pretraining epoch (50,000 images, two
32 px views, ResNet18 with the CIFAR stem) on this machine. It gives an effective rate in FLOP/s,
and every run of a target is its training FLOPs divided by that rate:

    rate           = CIFAR-10 epoch FLOPs / measured seconds per CIFAR-10 epoch
    run seconds    = epochs x epoch FLOPs(dataset) / rate  (+ its linear probe, below)

Epoch FLOPs are docs/experiments.md's analytic counts ("Estimated GPU-hours": 2 FLOPs per
multiply-add, a training step = 3 x the forward, two views): CIFAR 0.43 PFLOP (1.42 GFLOP per
32 px view with solo-learn's padding-2 stem), STL-10 0.43 PFLOP (105,000 images at 96 px),
ImageNet 28 PFLOP (1,281,167 images at 224 px).

The paper's linear probe (100 epochs on the labelled training split, frozen backbone, one view,
no backward through the backbone) costs one forward per image: 1/6 of a pretraining step's FLOPs
per image (3 x forward x 2 views). Assumptions the estimate cannot see: every method costs what
FroSSL costs (momentum encoders and queues make BYOL/MoCo/DINO dearer), and the rate holds for
other image sizes; when decoding bounds a run (ImageNet's JPEGs, the torchvision probe path) the
real time is longer. Figure 2 runs on the CPU (about 40 s, docs/experiments.md) and counts 0 here.
"""
from __future__ import annotations

from dataclasses import dataclass

PFLOP = 1e15
# training FLOPs of one pretraining epoch (docs/experiments.md, "Estimated GPU-hours")
EPOCH_FLOPS = {"cifar10": 0.43 * PFLOP, "cifar100": 0.43 * PFLOP, "stl10": 0.43 * PFLOP, "imagenet": 28.0 * PFLOP}
# images per pretraining epoch: CIFAR train splits, STL-10 train+unlabeled, ImageNet-1k train
PRETRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "stl10": 105_000, "imagenet": 1_281_167}
# images of the linear probe's (labelled) training split
PROBE_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "stl10": 5_000, "imagenet": 1_281_167}
PROBE_EPOCHS = 100
PROBE_COST = 1 / 6          # probe FLOPs per image / pretraining FLOPs per image
TABLE2_ROWS = 12            # 10 baselines, FroSSL, FroSSL (no logs)
TABLE3_ROWS = 11            # expected_results/table3.yaml's rows
ABLATION_ROWS = 2           # FroSSL (no logs) and FroSSL, the ablation record's rows (repro/experiments/table.py)
CIFAR10_EPOCH_IMAGES = PRETRAIN_IMAGES["cifar10"]

# The reference GPU of the plan summary and `make help` (docs/experiments.md, "Estimated GPU-hours"):
# an H100 SXM's dense bf16 peak, 989 TFLOP/s (docs/sources.md section 6), at an assumed 35% of it.
REFERENCE_GPU = "H100 SXM"
REFERENCE_PEAK_FLOPS = 989e12      # FLOP/s
REFERENCE_UTILISATION = 0.35       # assumed model-FLOP utilisation, not measured here


@dataclass(frozen=True)
class Run:
    """`count` identical runs: `epochs` pretraining epochs on `dataset`, with or without the probe."""
    count: int
    dataset: str
    epochs: int
    probe: bool


# the paper profile of each target (docs/experiments.md's target table)
TARGET_RUNS: dict[str, list[Run]] = {
    "figure2": [],
    "table2": [Run(TABLE2_ROWS, "cifar10", 1000, True), Run(TABLE2_ROWS, "cifar100", 1000, True),
               Run(TABLE2_ROWS, "stl10", 500, True)],
    "table3": [Run(TABLE3_ROWS, "stl10", 100, False)],   # epochs 101-500 come with table2
    "ablation": [Run(ABLATION_ROWS, "cifar10", 1000, True), Run(ABLATION_ROWS, "cifar100", 1000, True),
                 Run(ABLATION_ROWS, "stl10", 500, True)],
    "figure3": [Run(4, "stl10", 5, False)],
    "figure4": [Run(2, "imagenet", 100, True)],
}
# `all` trains table2 (whose STL-10 runs give table3 and whose rows include the ablation),
# figure2, figure3 and figure4
ALL_PARTS = ("table2", "figure2", "figure3", "figure4")


def flops_per_second(seconds_per_cifar10_epoch: float) -> float:
    if not seconds_per_cifar10_epoch > 0:
        raise ValueError(f"seconds per CIFAR-10 epoch must be > 0, got {seconds_per_cifar10_epoch}")
    return EPOCH_FLOPS["cifar10"] / seconds_per_cifar10_epoch


def reference_rate() -> float:
    """FLOP/s of the reference GPU at the assumed utilisation (≈ 346 TFLOP/s)."""
    return REFERENCE_PEAK_FLOPS * REFERENCE_UTILISATION


def reference_note() -> str:
    """How the plan's GPU-hours are made, in one line."""
    return (f"estimated on one {REFERENCE_GPU} at {REFERENCE_UTILISATION:.0%} of its "
            f"{REFERENCE_PEAK_FLOPS / 1e12:.0f} TFLOP/s dense bf16 peak from FLOP counts (an estimate, not a "
            f"measurement; repro/gpu_check/estimate.py)")


def run_seconds(run: Run, rate: float) -> dict:
    """Seconds of one kind of run (all `count` of them): pretraining and probe separately."""
    pretrain = run.count * run.epochs * EPOCH_FLOPS[run.dataset] / rate
    probe = 0.0
    if run.probe:
        per_image = EPOCH_FLOPS[run.dataset] / PRETRAIN_IMAGES[run.dataset]
        probe = run.count * PROBE_EPOCHS * PROBE_IMAGES[run.dataset] * per_image * PROBE_COST / rate
    return {"pretrain_s": pretrain, "probe_s": probe}


def runs_seconds(runs: list[Run], rate: float) -> dict:
    """{"pretrain_s", "probe_s", "seconds", "hours", "runs"} of a list of runs at `rate` FLOP/s."""
    parts = [run_seconds(run, rate) for run in runs]
    pretrain = sum(p["pretrain_s"] for p in parts)
    probe = sum(p["probe_s"] for p in parts)
    return {"pretrain_s": pretrain, "probe_s": probe, "seconds": pretrain + probe, "hours": (pretrain + probe) / 3600,
            "runs": [f"{r.count} x {r.dataset} {r.epochs} ep{' + probe' if r.probe else ''}" for r in runs]}


def estimate_targets(seconds_per_cifar10_epoch: float) -> dict[str, dict]:
    """{target: {"seconds", "hours", "pretrain_s", "probe_s", "runs"}} on one GPU of this machine."""
    rate = flops_per_second(seconds_per_cifar10_epoch)
    out = {target: runs_seconds(runs, rate) for target, runs in TARGET_RUNS.items()}
    total = {k: sum(out[t][k] for t in ALL_PARTS) for k in ("pretrain_s", "probe_s", "seconds")}
    out["all"] = {**total, "hours": total["seconds"] / 3600, "runs": [f"{t}" for t in ALL_PARTS]}
    return out


def format_duration(seconds: float) -> str:
    """'42 s', '12.5 min', '3.2 h', '4.1 d' (the largest unit that keeps the number >= 1)."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
