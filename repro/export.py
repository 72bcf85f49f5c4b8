"""Export a run's trained backbone as a plain torchvision resnet18 state_dict, with a JSON sidecar.

    python -m repro.export runs/cifar10-frossl                # -> RUN/backbone_resnet18.pt and .json
    python -m repro.export runs/cifar10-frossl --out /tmp/frossl-cifar10.pt
    make export RUN=runs/cifar10-frossl

The weights are the `backbone.` entries of RUN/checkpoint.pt with that prefix stripped: the keys of
torchvision.models.resnet18() without `fc`. The sidecar says how to build the network they fit (the
CIFAR stem: conv1 3x3, stride 1, padding 2, no bias, and no max-pool), the input normalisation, and
where the weights come from (method, dataset, epochs, probe top-1, commit, config hash). Loading
them takes two lines beside torchvision's constructor: docs/export.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from repro.checkpoint import load_run_checkpoint, load_run_config, save_checkpoint, write_json
from repro.cli import UserError, run_cli
from repro.data import image_size
from repro.data.augment import mean_std
from repro.models import build_backbone

PREFIX = "backbone."
DEFAULT_NAME = "backbone_resnet18.pt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _probe_top1(run_dir: Path, epoch: int) -> dict[str, float]:
    """Linear-probe top-1 of the evaluations of this checkpoint (eval_full.json, eval_cached.json)."""
    found = {}
    for probe in ("full", "cached"):
        path = run_dir / f"eval_{probe}.json"
        if path.is_file():
            result = json.loads(path.read_text())
            if result.get("checkpoint_epoch") == epoch:
                found[probe] = result["linear_top1"]
    return found


def export_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the backbone of `run_dir`'s last checkpoint to `out` (default RUN/backbone_resnet18.pt)
    and its sidecar beside it (same name, .json). Returns the weights' path."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    model = cfg.model
    if model.backbone != "resnet18" or model.width != 64:
        raise UserError(f"run '{run_dir}' has a {model.backbone} of width {model.width}, not torchvision's "
                        f"resnet18 (width 64): export takes runs trained with model.width=64")
    if not model.cifar_stem and model.in_channels != 3:
        raise UserError(f"run '{run_dir}' has a 7x7 stem on {model.in_channels} channels, which torchvision's "
                        f"resnet18 does not build: export takes 3-channel runs or the CIFAR stem")
    out = Path(out) if out else run_dir / DEFAULT_NAME
    if out.suffix != ".pt" or not out.parent.is_dir():
        raise UserError(f"--out '{out}': give a .pt file in an existing folder")

    checkpoint = load_run_checkpoint(run_dir)
    weights = {key[len(PREFIX):]: value.detach().contiguous() for key, value in checkpoint["method"].items()
               if key.startswith(PREFIX)}
    build_backbone(model).load_state_dict(weights)   # strict: exactly the backbone's keys, or this raises
    save_checkpoint(out, weights)

    env_path = run_dir / "env.json"
    mean, std = mean_std(cfg.data.dataset)
    sidecar = {
        "weights": out.name, "weights_sha256": _sha256(out),
        "architecture": "torchvision.models.resnet18 without fc (features: 512 per image)",
        "stem": "cifar" if model.cifar_stem else "standard", "in_channels": model.in_channels,
        "input": {"image_size": image_size(cfg.data), "mean": list(mean), "std": list(std)},
        "method": cfg.method, "dataset": cfg.data.dataset, "epochs": cfg.optim.epochs,
        "checkpoint_epoch": checkpoint["epoch"], "probe_top1": _probe_top1(run_dir, checkpoint["epoch"]),
        "commit": json.loads(env_path.read_text()).get("git_commit", "unknown") if env_path.is_file() else "unknown",
        "config_sha256": _sha256(run_dir / "config.yaml"), "run": str(run_dir),
    }
    write_json(out.with_suffix(".json"), sidecar)
    print(f"{run_dir.name}: backbone at epoch {checkpoint['epoch']} -> {out} (+ {out.with_suffix('.json').name})",
          file=sys.stderr)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder written by repro.train")
    parser.add_argument("--out", help=f"the weights file (default: RUN/{DEFAULT_NAME}); the sidecar goes beside it")
    args = parser.parse_args(argv)
    export_run(args.run_dir, args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
