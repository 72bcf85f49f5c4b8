"""`make bench` in CI-sized form, and its analytic FLOP count against the published figure."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.bench_step import count_forward_flops, main
from repro.config import load_config
from repro.methods import build_method


def _analytic_forward_flops(sizes):
    """Multiply-adds of the CIFAR ResNet18 + FroSSL projector by hand, for stage output sizes
    (stem/layer1, layer2, layer3, layer4), x2 FLOPs."""
    s1, s2, s3, s4 = (s * s for s in sizes)
    macs = 3 * 64 * 9 * s1 + 4 * 64 * 64 * 9 * s1
    for cin, cout, area in [(64, 128, s2), (128, 256, s3), (256, 512, s4)]:
        macs += cin * cout * 9 * area + 3 * cout * cout * 9 * area + cin * cout * area  # + 1x1 shortcut
    macs += 512 * 2048 + 2048 * 2048 + 2048 * 1024
    return 2 * macs


def test_flop_count_equals_the_analytic_count_and_the_anchor():
    method = build_method(load_config(None)).eval()
    views = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    # solo-learn's stem (padding 2) leaves 34 x 34 after conv1: stages at 34, 17, 9, 5
    assert count_forward_flops(method, views) / 4 == _analytic_forward_flops((34, 17, 9, 5))
    # with padding 1 the stages run at 32, 16, 8, 4: docs/sources.md section 6's 1.11 GFLOP per view
    method.backbone.conv1.padding = (1, 1)
    per_view = count_forward_flops(method, views) / 4
    assert per_view == _analytic_forward_flops((32, 16, 8, 4))
    assert abs(per_view / 1.11e9 - 1) < 0.03, per_view


def test_bench_runs_small_on_the_ffcv_path_and_writes_its_report(tmp_path):
    from tests.cifar_fixture import write_torchvision_cifar10

    rng = np.random.default_rng(0)
    splits = {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), [i % 10 for i in range(n)])
              for split, n in (("train", 40), ("test", 10))}
    write_torchvision_cifar10(tmp_path, splits)
    out = tmp_path / "bench.json"
    from torchvision import datasets
    original = datasets.CIFAR10._check_integrity
    assert main(["--root", str(tmp_path), "--steps", "2", "--warmup", "1", "--batch", "8",
                 "--width", "8", "--workers", "1", "--device", "cpu", "--out", str(out)]) == 0
    assert datasets.CIFAR10._check_integrity is original   # the md5 bypass does not leak into the process
    report = json.loads(out.read_text())
    assert report["settings"]["project_loader"] == "FFCVTwoViewLoader"   # the project's fast data path
    assert (tmp_path / "ffcv" / "cifar10_train.beton").is_file()
    for name in ("project", "baseline"):
        assert report[name]["views_per_s"] > 0 and report[name]["step_s"] > 0
    assert abs(report["speedup"] - report["baseline"]["step_s"] / report["project"]["step_s"]) < 1e-9
    assert report["machine"]["cpu_count"] >= 1 and report["mfu_project"] is None  # no MFU without a GPU
    # the FLOP count is the analytic one for width 8, scaled to the batch of 8 x 2 views, x3
    method = build_method(load_config(None, ["model.width=8"])).eval()
    per_view = count_forward_flops(method, [torch.randn(2, 3, 32, 32)] * 2) / 4
    assert report["flops_per_step"] == pytest.approx(3 * per_view * 16)
