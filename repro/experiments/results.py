"""Result files: <OUT>/results/<experiment>[-variant].json (+ the figure) written from the run
folders by the record's collector, and the short-profile references recorded from them."""
from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from repro.cli import UserError
from repro.experiments.experiment import Experiment
from repro.experiments.options import Options


def collect(exp: Experiment, opts: Options) -> Path:
    """Write <out>/results/<experiment>[-variant].json (and the figure's PNG) from the run folders."""
    from repro.atomic import atomic_write_bytes, atomic_write_text
    from repro.checkpoint import environment
    content = exp.collect(exp, opts)
    opts.results.mkdir(parents=True, exist_ok=True)
    stem = opts.result_stem(exp.name)
    result = {"experiment": exp.name, "profile": opts.profile, "variant": opts.variant,
              "epochs_override": opts.epochs, "overrides": list(opts.overrides),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": shlex.join([Path(sys.executable).name, "-m", "repro.experiments", *sys.argv[1:]]),
              "environment": environment(), **content}
    figure = opts.results / f"{stem}.png"
    if exp.copy_figure and (opts.out / exp.copy_figure).exists():
        png = (opts.out / exp.copy_figure).read_bytes()
        atomic_write_bytes(figure, lambda f: f.write(png))
        result["figure"] = figure.name
    elif exp.plot is not None and content.get("curves"):
        result["figure"] = exp.plot(content, figure).name
    path = opts.results / f"{stem}.json"
    # atomic: a crash mid-write keeps the previous result file, never half of one
    atomic_write_text(path, json.dumps(result, indent=1, default=str) + "\n")
    print(f"# results: {path}", flush=True)
    return path


def record_short(experiment: str, opts: Options) -> Path:
    """Store the comparable short-profile cells of a collected result as the short reference
    (expected_results/short/<experiment>.yaml), with the command, hardware and date."""
    import repro.experiments as package   # its EXPECTED_DIR: tests point it at a copy
    from repro.atomic import atomic_write_text
    expected_dir = package.EXPECTED_DIR
    path = opts.results / f"{experiment}-short.json"
    if opts.profile != "short" or not path.exists():
        raise UserError(f"record needs a collected short-profile result ({path}): run "
                        f"`make {experiment} PROFILE=short` first")
    result = json.loads(path.read_text())
    env = result.get("environment", {})
    hardware = f"{env.get('gpu_count', 0)}x {env.get('gpu') or 'CPU'}, torch {env.get('torch')}, CUDA {env.get('cuda')}"
    spec = yaml.safe_load((expected_dir / f"{experiment}.yaml").read_text())
    tolerance = (spec.get("tolerance") or {}).get("default")
    cells = {cell: {"value": round(c["value"], 2), "tolerance": tolerance, "n": c["n"],
                    "command": f"make {experiment} PROFILE=short", "hardware": hardware,
                    "date": result["created"][:10], "commit": env.get("git_commit"), "runs": c["runs"]}
             for cell, c in result["cells"].items() if c["comparable"] and isinstance(c["value"], float)}
    if not cells:
        raise UserError(f"{path} holds no comparable short-profile cell: nothing to record")
    out = expected_dir / "short" / f"{experiment}.yaml"
    out.parent.mkdir(exist_ok=True)
    header = (f"# {experiment}, PROFILE=short: reference values MEASURED by this project (not the paper's),\n"
              f"# recorded by `python -m repro.experiments record {experiment} --profile short` from {path}.\n")
    atomic_write_text(out, header + yaml.safe_dump({"experiment": experiment, "profile": "short", "cells": cells},
                                                   sort_keys=False))
    print(f"recorded {len(cells)} cells in {out}")
    return out
