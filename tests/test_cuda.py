"""CUDA-only checks (`pytest -m cuda`; `make gpu-check` runs them first on a GPU machine): bf16
autocast, channels-last, cudnn.benchmark through a real training run, the FFCV loader with its colour
augmentation on the GPU, and NCCL process groups. Without CUDA every test skips with the reason."""
from __future__ import annotations

import math
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from repro.config import load_config

from tests.conftest import ROOT

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU: torch.cuda.is_available() is False")]

CONFIG = ROOT / "repro" / "configs" / "cifar10" / "frossl.yaml"
TINY = ["device=cuda", "model.width=16", "model.proj_hidden_dim=128", "model.proj_output_dim=64"]


def tiny_method():
    from repro.device import DeviceSetup
    from repro.methods import build_method

    cfg = load_config(CONFIG, TINY)
    setup = DeviceSetup.from_config(cfg)
    torch.manual_seed(0)
    return setup, setup.module(build_method(cfg))


def test_the_config_defaults_turn_on_bf16_and_channels_last_on_cuda():
    from repro.device import DeviceSetup

    setup = DeviceSetup.from_config(load_config(CONFIG, TINY))
    assert setup.device.type == "cuda" and setup.bf16 and setup.channels_last


def test_bf16_autocast_step_is_finite_and_close_to_fp32():
    setup, method = tiny_method()
    views, _ = setup.batch([torch.rand(64, 3, 32, 32) for _ in range(2)], torch.zeros(64, dtype=torch.long))
    with setup.autocast():
        loss, _, features = method(views)
    assert features[0].dtype == torch.bfloat16          # the backbone ran in bf16
    assert loss.dtype == torch.float32                  # the loss's norm math stays fp32
    loss.backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        reference, _, _ = method(views)                 # fp32, the same weights and images
    assert math.isfinite(loss.item())
    assert abs(loss.item() - reference.item()) <= 0.05 * abs(reference.item()) + 0.05


def test_channels_last_weights_and_images_give_the_nchw_result():
    setup, method = tiny_method()
    conv = next(m for m in method.backbone.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(8, 3, 32, 32)
    fast = setup.images(images)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    method.eval()
    with torch.no_grad():
        out_nhwc = method.backbone(fast).float()
        out_nchw = method.backbone(images.to(setup.device)).float()
    assert (out_nhwc - out_nchw).abs().max() <= 1e-2 * out_nchw.abs().max()


def test_a_cuda_training_run_sets_cudnn_benchmark_and_stays_finite(tmp_path):
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn, which is not installed")
    from repro.train import train

    torch.backends.cudnn.benchmark = False
    cfg = load_config(ROOT / "repro" / "configs" / "demo.yaml", [
        "device=cuda", "optim.epochs=2", "model.width=8", "data.batch_size=128", f"out_dir={tmp_path}",
        "name=cuda-run", "train.log_every=2"])
    summary = train(cfg)
    assert torch.backends.cudnn.benchmark
    losses = [line for line in (tmp_path / "cuda-run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses and all("NaN" not in line and "Infinity" not in line for line in losses)
    assert 0.0 <= summary["online_top1"] <= 1.0


def test_ffcv_loader_augments_on_the_gpu(tmp_path):
    pytest.importorskip("ffcv", reason="ffcv is not installed: runs use the torchvision loader instead")
    from PIL import Image

    from repro.data import build_loader

    generator = torch.Generator().manual_seed(0)
    for c in range(2):
        (tmp_path / "train" / f"class{c}").mkdir(parents=True)
        for i in range(16):
            pixels = torch.randint(0, 256, (32, 32, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "train" / f"class{c}" / f"{i}.png")
    converted = subprocess.run([sys.executable, "-m", "data_prep.write_imagefolder", "--root", str(tmp_path),
                                "--splits", "train"], cwd=ROOT, capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr
    cfg = load_config(CONFIG, ["data.dataset=imagefolder", f"data.root={tmp_path}", "data.image_size=32",
                               "data.loader=ffcv", "data.batch_size=8", "data.num_workers=2"])
    loader = build_loader(cfg.data, split="train", views="two", shuffle=True, drop_last=True, seed=0,
                          device=torch.device("cuda"))   # the training device: augmentation runs there
    views, labels = next(iter(loader.epoch(0)))
    assert len(views) == 2 and labels.shape == (8,)
    for v in views:
        assert v.device.type == "cuda" and v.shape == (8, 3, 32, 32) and v.dtype.is_floating_point
        assert torch.isfinite(v).all()
        assert v.min() < 0 < v.max()                    # normalised, not raw 0..255 pixels
    assert not torch.equal(views[0], views[1])          # two independent augmentations


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NCCL_SCRIPT = textwrap.dedent("""
    import os, torch, torch.distributed as dist
    rank = int(os.environ["RANK"])
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl")
    x = torch.full((4,), float(rank + 1), device="cuda")
    dist.all_reduce(x)
    torch.cuda.synchronize()
    print("SUM", rank, x.tolist())
    dist.destroy_process_group()
""")


@pytest.mark.parametrize("processes", [1, 2])
def test_nccl_process_group_all_reduce(tmp_path, processes):
    import torch.distributed as dist

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL backend")
    if torch.cuda.device_count() < processes:
        pytest.skip(f"{processes} processes need {processes} GPUs; {torch.cuda.device_count()} visible")
    script = tmp_path / "nccl_check.py"
    script.write_text(NCCL_SCRIPT)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                             "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = float(sum(range(1, processes + 1)))
    sums = [line for line in result.stdout.splitlines() if line.startswith("SUM")]
    assert len(sums) == processes
    assert all(line.endswith(str([expected] * 4)) for line in sums)
