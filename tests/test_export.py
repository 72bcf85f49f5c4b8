"""make export / python -m repro.export: the loader in docs/export.md gives back the run's encoder."""
import json
import re
import subprocess
import sys

import pytest
import torch

from repro.checkpoint import load_checkpoint, prepare_run_dir
from repro.cli import UserError
from repro.config import load_config
from repro.export import export_run
from repro.methods import build_method
from repro.train import train
from tests.conftest import ROOT

# the digits demo at torchvision's width: 2 steps of 32 images (CIFAR stem, 1 input channel)
TINY = ["model.width=64", "model.proj_hidden_dim=64", "model.proj_output_dim=64", "optim.epochs=1",
        "data.subset=64", "data.batch_size=32"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    cfg = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path_factory.mktemp('runs')}", *TINY])
    train(cfg)
    return cfg


def docs_loader() -> str:
    """The python block of docs/export.md."""
    return re.search(r"```python\n(.*?)```", (ROOT / "docs/export.md").read_text(), re.S).group(1)


def test_the_documented_loader_gives_the_runs_encoder(trained_run, tmp_path):
    run_dir = trained_run.run_dir
    # evaluations as repro.evaluate writes them: the cached probe of this checkpoint, a stale full one
    (run_dir / "eval_cached.json").write_text(json.dumps({"checkpoint_epoch": 1, "linear_top1": 0.625}))
    (run_dir / "eval_full.json").write_text(json.dumps({"checkpoint_epoch": 0, "linear_top1": 0.5}))
    out = export_run(run_dir, tmp_path / "frossl.pt")
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["probe_top1"] == {"cached": 0.625}
    assert (meta["method"], meta["dataset"], meta["epochs"], meta["checkpoint_epoch"]) == ("frossl", "digits", 1, 1)
    assert meta["stem"] == "cifar" and meta["in_channels"] == 1 and meta["input"]["image_size"] == 8
    assert meta["commit"] == json.loads((run_dir / "env.json").read_text())["git_commit"]

    namespace = {}
    exec(docs_loader().replace("runs/cifar10-frossl/backbone_resnet18", str(out.with_suffix(""))), namespace)
    net = namespace["net"]
    assert type(net).__module__ == "torchvision.models.resnet"

    torch.manual_seed(1)
    method = build_method(trained_run)       # the run's encoder, from its checkpoint
    method.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["method"])
    encoder = method.backbone.eval()
    images = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(images), encoder(images))
        assert not torch.equal(net(images), encoder(images.flip(-1)))   # the comparison can fail


def test_bad_runs_are_one_line_errors_and_write_nothing(trained_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "repro.export", str(tmp_path)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "is not a run folder" in lines[0]

    with pytest.raises(UserError, match="give a .pt file in an existing folder"):
        export_run(trained_run.run_dir, tmp_path / "missing" / "x.pt")
    narrow = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path}", "name=narrow"])
    prepare_run_dir(narrow)
    with pytest.raises(UserError, match="width 32, not torchvision's resnet18"):
        export_run(narrow.run_dir)
    wide = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path}", "name=untrained", *TINY])
    prepare_run_dir(wide)
    with pytest.raises(UserError, match="has no checkpoint.pt: train it first"):
        export_run(wide.run_dir)
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("backbone*"))
