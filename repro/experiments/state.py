"""Run state, read from a run folder only (no torch): trained, stopped, to resume, evaluated."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from repro.experiments.options import Options
from repro.experiments.plan import RunSpec


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a crash: the trainer trims it on resume
    return out


def online_by_epoch(run_dir: Path) -> dict[int, dict]:
    """epoch -> the metrics record of that epoch's online validation."""
    return {int(r["epoch"]): r for r in read_metrics(run_dir) if "online_top1" in r}


def planned_epochs(spec: RunSpec, opts: Options) -> int:
    epochs = read_yaml(spec.config).get("optim", {}).get("epochs", 1000)
    for item in spec.overrides(opts):
        if item.startswith("optim.epochs="):
            epochs = int(item.split("=", 1)[1])
    return epochs


def train_state(spec: RunSpec, opts: Options) -> str:
    """new | resume | stopped (its stop_at_epoch is validated) | done"""
    run_dir = spec.run_dir(opts)
    pretrain = run_dir / "pretrain.json"
    if pretrain.exists() and json.loads(pretrain.read_text()).get("epochs") == planned_epochs(spec, opts):
        return "done"
    if spec.stop_at_epoch and max(online_by_epoch(run_dir), default=0) >= spec.stop_at_epoch:
        return "stopped"
    return "resume" if (run_dir / "checkpoint.pt").exists() else "new"


def finished(spec: RunSpec, opts: Options) -> bool:
    return train_state(spec, opts) == "done"


def probe_kind(spec: RunSpec, opts: Options) -> str:
    return opts.probe or read_yaml(spec.config).get("eval", {}).get("probe", "full")


def eval_state(spec: RunSpec, opts: Options) -> str:
    """done (the probe of the finished checkpoint is written) | todo"""
    path = spec.run_dir(opts) / f"eval_{probe_kind(spec, opts)}.json"
    if path.exists() and json.loads(path.read_text()).get("checkpoint_epoch") == planned_epochs(spec, opts):
        return "done"
    return "todo"


def seeds_on_disk(opts: Options, spec: RunSpec) -> list[int]:
    """Seeds of this run name found under --out (every seed present counts, not only SEEDS)."""
    prefix = spec.name.split("-seed")[0] + "-seed"
    suffix = spec.name[len(prefix) + len(str(spec.seed)):]   # opts.suffix, and -lb<N> for a per-process loss batch
    seeds = []
    if opts.out.is_dir():
        for path in opts.out.glob(f"{prefix}*"):
            middle = path.name[len(prefix):]
            number = middle[:len(middle) - len(suffix)] if suffix and middle.endswith(suffix) else middle
            if number.isdigit() and path.name == f"{prefix}{number}{suffix}" and (path / "config.yaml").exists():
                seeds.append(int(number))
    return sorted(seeds)
