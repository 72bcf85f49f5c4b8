"""Result files: <OUT>/results/<experiment>[-variant].json (+ the figure) written from the run
folders by the record's collector."""
from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

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
