"""`make bench` in CI-sized form, and its analytic FLOP count against the published figure."""
import json

import numpy as np
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
    # with padding 1 the stages run at 32, 16, 8, 4: anchors.md's 1.11 GFLOP per view
    method.backbone.conv1.padding = (1, 1)
    per_view = count_forward_flops(method, views) / 4
    assert per_view == _analytic_forward_flops((32, 16, 8, 4))
    assert abs(per_view / 1.11e9 - 1) < 0.03, per_view


def test_bench_runs_small_and_writes_its_report(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "data" / "train" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "data" / "train" / cls / f"{i}.png")
    out = tmp_path / "bench.json"
    assert main(["--data", str(tmp_path / "data"), "--steps", "2", "--warmup", "1", "--batch", "8",
                 "--width", "8", "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for name in ("project", "baseline"):
        assert report[name]["views_per_s"] > 0 and report[name]["step_s"] > 0
    assert abs(report["speedup"] - report["baseline"]["step_s"] / report["project"]["step_s"]) < 1e-9
    assert report["machine"]["cpu_count"] >= 1 and report["mfu_project"] is None  # no MFU without a GPU
