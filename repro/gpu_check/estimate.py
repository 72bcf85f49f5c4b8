"""Wall-time estimate of experiment runs from their FLOPs: the project's one estimator. Two users:
`make gpu-check` calibrates the rate by one measured epoch on this machine (estimate_targets); the
plan summary (`make -n TARGET`) and `make help` show, until gpu-check has measured a rate, a range of
two estimates (estimate_range): the FLOP-based one at a reference GPU's assumed utilisation
(reference_rate) and the one a published epoch time implies (anchor_rate; a slower fp32 setup,
usually the higher figure). Neither is a measurement.

    rate           = CIFAR-10 epoch FLOPs / measured seconds per CIFAR-10 FroSSL pretraining epoch
    run seconds    = epochs x epoch FLOPs(dataset) / rate  (+ its linear probe: PROBE_COST)

Epoch FLOPs (EPOCH_FLOPS) are docs/experiments.md's analytic counts ("Estimated GPU-hours"). The
estimate cannot see that momentum encoders and queues make BYOL/MoCo/DINO dearer than FroSSL, nor
a rate that changes with the image size, nor decoding-bound runs (ImageNet's JPEGs, the
torchvision probe path), which take longer. Figure 2 runs on the CPU (about 40 s) and counts 0.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PFLOP = 1e15
# training FLOPs of one pretraining epoch (docs/experiments.md, "Estimated GPU-hours": 2 FLOPs per
# multiply-add, a step = 3 x the forward, two views): CIFAR 1.42 GFLOP per 32 px view with
# solo-learn's padding-2 stem, STL-10 105,000 images at 96 px, ImageNet 1,281,167 at 224 px
EPOCH_FLOPS = {"cifar10": 0.43 * PFLOP, "cifar100": 0.43 * PFLOP, "stl10": 0.43 * PFLOP, "imagenet": 28.0 * PFLOP}
# images per pretraining epoch: CIFAR train splits, STL-10 train+unlabeled, ImageNet-1k train
PRETRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "stl10": 105_000, "imagenet": 1_281_167}
# images of the linear probe's (labelled) training split
PROBE_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "stl10": 5_000, "imagenet": 1_281_167}
PROBE_EPOCHS = 100
# probe FLOPs per image / pretraining FLOPs per image: the paper's probe (100 epochs on the labelled
# split, frozen backbone, one view, no backward through it) is one forward per image, a pretraining
# step 3 x forward x 2 views
PROBE_COST = 1 / 6
TABLE2_ROWS = 12            # 10 baselines, FroSSL, FroSSL (no logs)
TABLE3_ROWS = 11            # expected_results/table3.yaml's rows
ABLATION_ROWS = 2           # FroSSL (no logs) and FroSSL, the ablation record's rows (repro/experiments/table.py)
CIFAR10_EPOCH_IMAGES = PRETRAIN_IMAGES["cifar10"]

# The reference GPU of the plan summary and `make help` (docs/experiments.md, "Estimated GPU-hours"):
# an H100 SXM's dense bf16 peak, 989 TFLOP/s (docs/sources.md section 6), at an assumed 35% of it.
REFERENCE_GPU = "H100 SXM"
REFERENCE_PEAK_FLOPS = 989e12      # FLOP/s
REFERENCE_UTILISATION = 0.35       # assumed model-FLOP utilisation, not measured here
# The published anchor for the same network (docs/sources.md section 6): a SimCLR ResNet18 CIFAR-10
# epoch, batch 512, fp32, CPU augmentation, on one A100 (dkobak/simclr-cifar10's README)
ANCHOR_EPOCH_S = 11.9
ANCHOR_GPU = "A100"


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


def anchor_rate() -> float:
    """FLOP/s that the published anchor's CIFAR-10 epoch time implies (≈ 36 TFLOP/s)."""
    return flops_per_second(ANCHOR_EPOCH_S)


def reference_note() -> str:
    """How the plan's range of GPU-hours is made, in one line."""
    return (f"a range of two estimates, not a measurement: FLOP counts at {REFERENCE_UTILISATION:.0%} of one "
            f"{REFERENCE_GPU}'s {REFERENCE_PEAK_FLOPS / 1e12:.0f} TFLOP/s dense bf16 peak - the rate of a "
            f"published SimCLR ResNet18 CIFAR-10 epoch of {ANCHOR_EPOCH_S} s on one {ANCHOR_GPU} (fp32); "
            f"`make gpu-check` measures yours (repro/gpu_check/estimate.py)")


def estimate_range(runs: list[Run]) -> tuple[float, float]:
    """(FLOP-based, anchor-based) hours of `runs`: the range shown until a rate is measured."""
    return runs_seconds(runs, reference_rate())["hours"], runs_seconds(runs, anchor_rate())["hours"]


def hours_text(hours: float) -> str:
    """Hours to the precision an estimate has: 10.5, 0.86, 0.01 (two significant digits below 1)."""
    return f"{hours:.1f}" if hours >= 1 else f"{hours:.2g}"


def range_text(low: float, high: float) -> str:
    """'10.5-114' (GPU-hours, each to its own precision)."""
    return f"{hours_text(low)}-{hours_text(high)}"


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
    return targets_at(flops_per_second(seconds_per_cifar10_epoch))


def targets_at(rate: float) -> dict[str, dict]:
    """estimate_targets at `rate` FLOP/s (reference_rate() and anchor_rate() give the range)."""
    out = {target: runs_seconds(runs, rate) for target, runs in TARGET_RUNS.items()}
    total = {k: sum(out[t][k] for t in ALL_PARTS) for k in ("pretrain_s", "probe_s", "seconds")}
    out["all"] = {**total, "hours": total["seconds"] / 3600, "runs": [f"{t}" for t in ALL_PARTS]}
    return out


def measured_epoch(summary: Path) -> dict | None:
    """The CIFAR-10 epoch time a full (not dry) gpu-check run measured, from its gpu_check.json:
    {"cifar10_epoch_s", "gpu", "date", "path"}; None when there is none (or it is unreadable)."""
    try:
        data = json.loads(Path(summary).read_text())
        estimate = data["parts"]["estimate"]
        gpus = data["parts"]["environment"]["details"].get("gpus") or [{"name": "GPU"}]
        if data.get("mode") != "full" or estimate["status"] != "passed":
            return None
        return {"cifar10_epoch_s": float(estimate["details"]["cifar10_epoch_s"]), "gpu": gpus[0]["name"],
                "date": data.get("date", "?"), "path": str(summary)}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def format_duration(seconds: float) -> str:
    """'42 s', '12.5 min', '3.2 h', '4.1 d' (the largest unit that keeps the number >= 1)."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
