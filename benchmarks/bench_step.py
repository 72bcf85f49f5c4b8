"""Training-step benchmark (`make bench`): the project's step against a plain baseline, measured in
one process, on the same images, the same machine.

    python -m benchmarks.bench_step                         # real CIFAR-10, batch 256, 2 views
    python -m benchmarks.bench_step --steps 3 --warmup 1 --batch 16 --width 8   # CI-sized
    python -m benchmarks.bench_step --root DATA_DIR         # your cifar-10-batches-py

(a) project: the trainer's step — data through `repro.data.build_loader` on the FFCV path (the
    .beton written by data_prep.write_cifar; crops in FFCV's compiled pipeline, colour augmentation
    on the training device; `--loader torchvision` measures the project step on the PIL path),
    channels-last + bf16 autocast + cudnn.benchmark on CUDA, optional torch.compile (--compile),
    metrics kept on the device, LARS with foreach ops.
(b) baseline: fp32, NCHW, eager, torchvision's CIFAR10 + PIL two-view DataLoader (solo-learn's
    pipeline), and the FroSSL loss as upstream writes it (the trace read back with `.item()`).
Both: ResNet18 (CIFAR stem), FroSSL projector, the full CIFAR "symmetric" augmentations, LARS.
Printed and saved as JSON (with the machine): views/s, step time, peak memory, the ratio (a)/(b),
and on CUDA an estimated model-FLOP utilisation from an analytic FLOP count (conv and linear
multiply-adds counted by forward hooks, x2 FLOPs, x3 for forward + backward). Warm-up (and
compile) time is excluded from the rates and reported separately.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets as tv_datasets

from benchmarks.bench_data import DEFAULT_CACHE, accept_rebuilt_cifar, cifar_root, write_cifar_beton
from repro.cli import UserError, run_cli
from repro.config import load_config
from repro.data import build_loader
from repro.data.augment import TwoViews
from repro.device import DeviceSetup
from repro.methods import build_method
from repro.optim import build_optimizer, scale_lr
from repro.train import Pretrainer, compile_forward

ROOT = Path(__file__).resolve().parents[1]
# dense bf16 peak TFLOP/s by GPU name fragment (docs/sources.md section 6)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "V100": 125.0}


def frossl_upstream(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The FroSSL loss written as upstream does: std, column norm, trace read back with .item()."""
    def normalise(z):
        z = z - z.mean(0)
        z = z / z.std(0)
        return nn.functional.normalize(z, p=2, dim=0) * math.sqrt(z.shape[1])

    z1, z2 = normalise(z1), normalise(z2)
    loss = nn.functional.mse_loss(z1, z2)
    for z in (z1, z2):
        cov = z.T @ z if z.shape[1] <= z.shape[0] else z @ z.T
        cov = cov / torch.trace(cov).item()
        loss = loss + torch.log(torch.linalg.matrix_norm(cov, ord="fro") ** 2)
    return loss


def count_forward_flops(model: nn.Module, views: list[torch.Tensor]) -> float:
    """Conv/linear multiply-adds of one forward pass of a method over all views, x2 FLOPs."""
    macs = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs[0] += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(views)
    for h in handles:
        h.remove()
    return 2.0 * macs[0]


def measure(step_fn, batches, steps: int, warmup: int, setup: DeviceSetup) -> dict:
    """Run warm-up steps, then time `steps` steps (data loading included)."""
    it = iter(batches)
    start = time.perf_counter()
    for _ in range(warmup):
        step_fn(*next(it))
    setup.synchronize()
    warm = time.perf_counter() - start
    if setup.cuda:
        torch.cuda.reset_peak_memory_stats(setup.device)
    start = time.perf_counter()
    for _ in range(steps):
        step_fn(*next(it))
    setup.synchronize()
    elapsed = time.perf_counter() - start
    return {"warmup_s": warm, "step_s": elapsed / steps,
            "peak_memory_gb": torch.cuda.max_memory_allocated(setup.device) / 2**30 if setup.cuda else None}


def endless(loader_epochs):
    epoch = 0
    while True:
        yield from loader_epochs(epoch)
        epoch += 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="folder holding cifar-10-batches-py (default: the real CIFAR-10 "
                        "decoded from ../shared/data into --cache)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the archive is decoded")
    parser.add_argument("--loader", choices=("ffcv", "torchvision"), default="ffcv",
                        help="the project step's data path (default: FFCV, the project's fast path)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--width", type=int, default=64, help="ResNet base width (64 = ResNet18)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the project's step")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_step.json")
    args = parser.parse_args(argv)
    if args.batch < 2 or args.steps < 1 or args.warmup < 1:
        raise UserError("--batch must be >= 2, --steps and --warmup >= 1")
    data = cifar_root(args.root, args.cache)
    if args.loader == "ffcv":
        write_cifar_beton(data)
    cfg = load_config(ROOT / "repro/configs/cifar10/frossl.yaml", [
        f"data.root={data}", f"data.loader={args.loader}", f"data.batch_size={args.batch}",
        f"data.num_workers={args.workers}", f"model.width={args.width}", f"device={args.device}"])
    # (a) runs the trainer's switches (bf16 + channels-last on CUDA, as `auto` resolves them); (b) fp32 NCHW
    project = DeviceSetup.from_config(cfg).for_model(build_method(cfg))
    plain = DeviceSetup.create(project.device, precision="fp32", channels_last=False)
    device = project.device
    project.apply_backend_settings()
    results = {}

    def build(setup: DeviceSetup):
        torch.manual_seed(0)
        method = setup.module(build_method(cfg))
        model = Pretrainer(method, nn.Linear(method.backbone.num_features, 10)).to(device)
        optimizer = build_optimizer("lars", [{"params": list(model.parameters())}],
                                    lr=scale_lr(0.3, args.batch), weight_decay=1e-6)
        return model, optimizer

    # (a) the project's step
    model, optimizer = build(project)
    forward = compile_forward(model, args.compile)   # the trainer's: a compile failure is a one-line error
    with accept_rebuilt_cifar():
        loader = build_loader(cfg.data, split="train", views="two", shuffle=True, drop_last=True, seed=0,
                              device=project.device)
    sums = {}

    def project_step(views, labels):
        views, labels = project.batch(views, labels)
        with project.autocast():
            loss, terms = forward(views, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for k, v in terms.items():  # kept on the device, as the trainer does
            sums[k] = sums.get(k, 0) + v.detach().float()

    results["project"] = measure(project_step, endless(loader.epoch), args.steps, args.warmup, project)
    probe_views = [torch.randn(2, 3, 32, 32, device=device) for _ in range(2)]   # FLOPs scale with the batch
    flops_per_step = 3 * count_forward_flops(model.method, probe_views) * args.batch / 2
    del model, optimizer, forward

    # (b) the plain baseline
    model, optimizer = build(plain)
    with accept_rebuilt_cifar():
        dataset = tv_datasets.CIFAR10(str(data), train=True, transform=TwoViews("symmetric", 32, "cifar10"))
    baseline_loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                 num_workers=args.workers, persistent_workers=args.workers > 0)

    def baseline_step(views, labels):
        views = [v.to(device) for v in views]
        features = [model.method.backbone(v) for v in views]
        z = [model.method.projector(f) for f in features]
        loss = frossl_upstream(*z)
        logits = model.classifier(features[0].detach())
        loss = loss + nn.functional.cross_entropy(logits, labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        print_value = loss.item()  # upstream logs the loss every step
        del print_value

    results["baseline"] = measure(baseline_step, endless(lambda e: iter(baseline_loader)), args.steps,
                                  args.warmup, plain)

    for name in ("project", "baseline"):
        r = results[name]
        r["views_per_s"] = 2 * args.batch / r["step_s"]
        r["images_per_s"] = args.batch / r["step_s"]
    ratio = results["baseline"]["step_s"] / results["project"]["step_s"]
    gpu = torch.cuda.get_device_name(device) if project.cuda else None
    peak = next((v for k, v in PEAK_TFLOPS.items() if gpu and k in gpu), None)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "gpu": gpu,
                    "torch": torch.__version__, "cuda": torch.version.cuda},
        "settings": {"batch": args.batch, "steps": args.steps, "warmup": args.warmup, "width": args.width,
                     "workers": args.workers, "compile": args.compile, "device": str(device), "data": str(data),
                     "project_loader": type(loader).__name__},
        "flops_per_step": flops_per_step,
        "project": results["project"], "baseline": results["baseline"], "speedup": ratio,
        "cifar10_epoch_s_project": 50_000 / results["project"]["images_per_s"],
        "mfu_project": flops_per_step / results["project"]["step_s"] / (peak * 1e12) if peak else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"device {device}{' (' + gpu + ')' if gpu else ''}, batch {args.batch}, width {args.width}, "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    for name in ("project", "baseline"):
        r = results[name]
        mem = f", peak {r['peak_memory_gb']:.2f} GiB" if r["peak_memory_gb"] is not None else ""
        print(f"  {name:<9} {r['views_per_s']:10.0f} views/s  {1000 * r['step_s']:8.1f} ms/step  "
              f"(warm-up {r['warmup_s']:.1f} s{mem})")
    print(f"  speed-up (a)/(b): {ratio:.2f}x; CIFAR-10 epoch at this rate: {report['cifar10_epoch_s_project']:.1f} s"
          + (f"; estimated MFU {100 * report['mfu_project']:.1f}%" if report["mfu_project"] else ""))
    print(f"  saved {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
