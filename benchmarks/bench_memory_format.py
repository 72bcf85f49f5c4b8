"""Memory-format benchmark: the project's ResNet18 forward + backward, NCHW against channels-last
(`DeviceSetup(channels_last=...)`, the switch `model.channels_last` sets), in one process on the same
inputs. It is the measurement behind `model.channels_last: auto` (docs/performance.md).

    python -m benchmarks.bench_memory_format                 # CPU, this machine's threads
    python -m benchmarks.bench_memory_format --threads 1 --device cuda

Each shape is a model this project trains: the demo (width 32, 8 px digits), the tests' CIFAR model
(width 16, 32 px), the paper's CIFAR ResNet18 (width 64), and the tiny STL-10/ImageNet test models.
Printed per shape: the best of --repeats timed steps for each format (after one warm-up step) and
the ratio NCHW / channels-last (above 1: channels-last is faster).
"""
from __future__ import annotations

import argparse
import time

import torch

from repro.cli import run_cli
from repro.device import DeviceSetup, strided_pointwise_hazard
from repro.models import resnet18

# (label, width, side, batch, CIFAR stem, input channels)
SHAPES = [("demo: digits", 32, 8, 512, True, 1),
          ("tests: CIFAR width 16", 16, 32, 128, True, 3),
          ("paper: CIFAR ResNet18", 64, 32, 128, True, 3),
          ("tests: STL-10 width 8", 8, 96, 32, False, 3),
          ("tests: ImageNet width 8", 8, 224, 32, False, 3)]


def step_seconds(setup: DeviceSetup, width: int, side: int, batch: int, stem: bool, channels: int,
                 repeats: int) -> float:
    torch.manual_seed(0)
    model = resnet18(width=width, cifar_stem=stem, in_channels=channels)
    model = setup.for_model(model).module(model)   # refuses the shapes oneDNN's CPU backward mishandles
    images = setup.images(torch.randn(batch, channels, side, side))
    times = []
    for _ in range(repeats + 1):   # the first is the warm-up
        if setup.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(images).float().square().sum().backward()
        if setup.cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_memory_format", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for label, width, side, batch, stem, channels in SHAPES:
        layer = strided_pointwise_hazard(resnet18(width=width, cifar_stem=stem, in_channels=channels))
        if args.device == "cpu" and layer:
            print(f"  {label:<26} width {width:>2}, {side:>3} px, batch {batch:>3}: channels-last not run on the "
                  f"CPU ({layer}: uxlfoundation/oneDNN#6035; `auto` trains it in NCHW)", flush=True)
            continue
        nchw, nhwc = (step_seconds(DeviceSetup.create(args.device, precision="fp32", channels_last=on),
                                   width, side, batch, stem, channels, args.repeats) for on in (False, True))
        print(f"  {label:<26} width {width:>2}, {side:>3} px, batch {batch:>3}: NCHW {nchw:7.3f} s, "
              f"channels-last {nhwc:7.3f} s, ratio {nchw / nhwc:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
