"""Run folders, atomic writes and checkpoints.

A run folder (`<out_dir>/<name>/`) holds: config.yaml (resolved config), command.txt (every command
line that ran in it), env.json (torch, CUDA, GPU, git commit), metrics.jsonl (append-only),
checkpoint.pt (last completed epoch), and result JSON files. Every file is written to a temporary
name in the same folder and renamed into place, so a crash never leaves a half-written file.
"""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

import yaml

from repro.atomic import atomic_write_bytes, atomic_write_text, write_json  # noqa: F401 (re-exported)
from repro.cli import UserError
from repro.config import Config, ConfigError, config_from_dict, read_yaml, semantic_diff, to_dict

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"checkpoint '{path}' cannot be read ({type(err).__name__}): delete it to "
                        f"restart that run from scratch") from None


def load_run_checkpoint(run_dir: Path) -> dict:
    """RUN/checkpoint.pt, or a one-line error when the run has none yet."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise UserError(f"'{run_dir}' has no {CHECKPOINT}: train it first "
                        f"(python -m repro.train with the same config and name)")
    return load_checkpoint(path)


def environment() -> dict:
    def git_commit() -> str:
        # where git cannot tell (the Docker image has no .git), the commit the image was built
        # from: the Dockerfile sets FROSSL_GIT_COMMIT from its GIT_COMMIT build argument
        fallback = os.environ.get("FROSSL_GIT_COMMIT", "").strip() or "unknown"
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                 cwd=Path(__file__).parent, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return fallback
        return (out.returncode == 0 and out.stdout.strip()) or fallback

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
    }


def prepare_run_dir(cfg: Config) -> Path:
    """Create the run folder, or check that the one present holds this same experiment: equal up to
    repro.config.NON_SEMANTIC keys, so a folder moved to another disk or mounted at another path
    (its saved name/out_dir differ) resumes. The saved config.yaml is left as first written."""
    run_dir = cfg.run_dir
    config_path = run_dir / "config.yaml"
    if config_path.exists():
        try:
            saved = config_from_dict(read_yaml(config_path))
        except ConfigError as err:
            raise UserError(f"run folder '{run_dir}' holds an unreadable config ({err}): use another "
                            f"name=... or delete the folder") from None
        changes = semantic_diff(saved, cfg)
        if changes:
            more = f" and {len(changes) - 1} more" if len(changes) > 1 else ""
            raise UserError(f"run folder '{run_dir}' holds a different experiment ({changes[0]}{more}): "
                            f"pass another name=... (or out_dir=...), or delete the folder to start over")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
        write_json(run_dir / "env.json", environment())
    with open(run_dir / "command.txt", "a") as f:
        f.write(shlex.join([Path(sys.executable).name, *sys.argv]) + "\n")
    return run_dir


def load_run_config(run_dir: Path) -> Config:
    config_path = Path(run_dir) / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"'{run_dir}' is not a run folder (no config.yaml): train it first with "
                        f"python -m repro.train CONFIG name=...")
    return config_from_dict(read_yaml(config_path))
