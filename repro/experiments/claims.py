"""The CPU claims profile (`make claims`, docs/claims.md): its data, runs and recorded references.

    python -m repro.experiments claims [--profile claims|claims-quick] [--cifar10 ARCHIVE] ...
    python -m repro.experiments record claims --profile claims      # store the measured references

The claims target:
1. prepares CIFAR-10 as an image folder under DATA_DIR/cifar10-images (train/<class>/, test/<class>/):
   unpacked from the JPEG archive given as CIFAR10=..., or written as PNG from torchvision's
   cifar-10-batches-py in DATA_DIR (downloaded first when PREPARE_DATA=auto);
2. trains the record's runs (repro/experiments/table.py CLAIMS) for the profile's seeds, evaluates
   each with the cached probe, and the first row's encoders at their initialisation (--random-init);
3. collects OUT/results/claims[-quick].json and checks it: the claims by the margin rule, the cells
   against the recorded references (repro/check.py).
"""
from __future__ import annotations

import io
import json
import pickle
from dataclasses import replace
from pathlib import Path

import yaml

from repro.cli import UserError
from repro.experiments.options import Options

IMAGE_FOLDER = "cifar10-images"   # under DATA_DIR: the claims runs' data.root
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CLAIM_PROFILES = ("claims", "claims-quick")


def profile_seeds(profile: str) -> tuple[int, ...]:
    """The seeds a claims profile runs (expected_results/claims.yaml profiles.<profile>.seeds)."""
    import repro.experiments.options as options
    spec = yaml.safe_load((options.EXPECTED_DIR / "claims.yaml").read_text())
    return tuple(spec["profiles"][profile]["seeds"])


# ---- data: CIFAR-10 as an image folder ---------------------------------------------------------

def image_folder_from_pickles(batches: Path, folder: Path) -> None:
    """torchvision's cifar-10-batches-py -> folder/<split>/<class>/<index>.png (lossless)."""
    import numpy as np
    from PIL import Image
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        index = 0
        for name in names:
            with open(batches / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for image, label in zip(images, entry["labels"]):
                path = folder / split / CLASSES[label] / f"{index:05d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                path.write_bytes(buffer.getvalue())
                index += 1


def prepare_image_folder(opts: Options) -> Path:
    """DATA_DIR/cifar10-images, made once (a `.complete` marker): from CIFAR10=<archive or image
    folder>, else from DATA_DIR/cifar-10-batches-py."""
    from repro.gpu_check.data import unpack_archive
    folder = Path(opts.data_dir) / IMAGE_FOLDER
    if (folder / ".complete").is_file():
        return folder
    source = Path(opts.cifar10) if opts.cifar10 else None
    if source is not None and source.is_dir() and (source / "train").is_dir() and (source / "test").is_dir():
        return source   # already an image folder: read in place
    if source is not None and source.is_file() and source.name.endswith((".tar.gz", ".tgz", ".tar")):
        unpack_archive(source, folder, {})   # writes its own .complete marker
        return folder
    batches = next((p for p in ([source] if source else []) + [Path(opts.data_dir)]
                    for p in (p / "cifar-10-batches-py", p) if (p / "data_batch_1").is_file()), None)
    if batches is None and opts.prepare_data == "auto" and not opts.cifar10:
        from repro.experiments.data_steps import download
        download("cifar10", opts.data_dir)
        batches = Path(opts.data_dir) / "cifar-10-batches-py"
    if batches is None:
        raise UserError(f"no CIFAR-10 for the claims profile: pass CIFAR10=<the CIFAR-10 JPEG archive .tar.gz or "
                        f"an image folder with train/ and test/>, or put cifar-10-batches-py in "
                        f"DATA_DIR={opts.data_dir} (or PREPARE_DATA=auto to download it)")
    image_folder_from_pickles(batches, folder)
    (folder / ".complete").write_text("")
    return folder


# ---- the claims target ---------------------------------------------------------------------------

def random_init_command(run_dir: Path, opts: Options) -> list[str]:
    return [opts.python, "-m", "repro.evaluate", str(run_dir), "--probe", "cached", "--random-init"]


def run_claims(opts: Options) -> int:
    """Train, evaluate, collect and check the claims record (exit 1 on a FAIL or a failed step); a
    stop signal is passed to the running step and nothing new starts (run.STOP, as every target)."""
    from repro.experiments.run import STOP
    with STOP:
        return _run_claims(opts)


def _run_claims(opts: Options) -> int:
    from repro.experiments.commands import check_command, collect_command
    from repro.experiments.plan import plan_runs
    from repro.experiments.preflight import preflight
    from repro.experiments.results import collect
    from repro.experiments.run import Runner, run_specs
    from repro.experiments.state import train_state
    from repro.experiments.table import CLAIMS, CLAIMS_RANDOM_INIT_ROW
    runner = Runner(opts)
    runner.say(f"claims: profile {opts.profile}, seeds {' '.join(map(str, opts.seeds))}, out={opts.out}, "
               f"data {opts.data_dir} (CIFAR-10 as an image folder; docs/claims.md)")
    if opts.epochs is not None or opts.overrides:
        runner.say("EPOCHS / OVERRIDES change the claims schedule: the runs get their own folders and the "
                   "recorded references do not apply (NOT-COMPARABLE)")
    specs = plan_runs(CLAIMS, opts)
    preflight(specs, opts)
    run_specs(specs, opts, runner)
    for spec in specs:   # the random-initialisation baseline row, from the first row's runs
        if spec.row != CLAIMS_RANDOM_INIT_ROW:
            continue
        run_dir = spec.run_dir(opts)
        done = (run_dir / "eval_cached_random_init.json").exists()
        if opts.dry_run or (train_state(spec, opts) == "done" and not done):
            runner.say(f"random initialisation of {spec.name}: cached probe")
            runner.run(random_init_command(run_dir, opts))
        elif done:
            runner.say(f"random initialisation of {spec.name}: evaluated, skipped")
    if opts.dry_run:
        runner.run(collect_command(opts, "claims"))
    else:
        collect(CLAIMS, opts)
    code = runner.run(check_command(opts, ["claims"], None, stem="check_claims"))
    runner.report_failures()
    return int(bool(code or runner.failures))


# ---- recorded references ---------------------------------------------------------------------------

TOLERANCE_SPREADS = 3.0      # tolerance = max(3 x the recorded seed std, 5% of |value|, 0.5)
TOLERANCE_RELATIVE = 0.05
TOLERANCE_FLOOR = 0.5


def reference_tolerance(value: float, std: float | None) -> float:
    """A recorded cell's tolerance from its measured seed spread: 3 standard deviations (a later
    correct run lands within them with high probability), at least 5% of the value and 0.5 (in the
    metric's units) so that one seed, or three that happened to agree, do not give a zero band."""
    return round(max(TOLERANCE_SPREADS * (std or 0.0), TOLERANCE_RELATIVE * abs(value), TOLERANCE_FLOOR), 3)


def machine() -> str:
    """CPU model and core count (the claims profile is a CPU measurement), e.g. '2 cores of AMD EPYC ...'."""
    import os
    model = "unknown CPU"
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), model)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores of {model}"


def record_claims(opts: Options) -> Path:
    """Store the comparable cells of OUT/results/claims[-quick].json as the profile's measured
    references (expected_results/<profile>/claims.yaml), each with its tolerance from the seed
    spread, and the command, machine, date and commit that produced it."""
    import repro.experiments as package   # its EXPECTED_DIR: tests point it at a copy
    from repro.atomic import atomic_write_text
    if opts.profile not in CLAIM_PROFILES:
        raise UserError(f"record --profile {opts.profile}: choose {' or '.join(CLAIM_PROFILES)}")
    path = opts.results / f"{opts.result_stem('claims')}.json"
    if not path.exists():
        raise UserError(f"record needs a collected claims result ({path}): run `make claims PROFILE={opts.profile}` "
                        f"first")
    result = json.loads(path.read_text())
    if result.get("profile") != opts.profile or result.get("variant"):
        raise UserError(f"{path} is of profile {result.get('profile')!r} variant {result.get('variant')!r}: record "
                        f"only a plain `make claims PROFILE={opts.profile}` result")
    env = result.get("environment", {})
    hardware = machine() if not env.get("gpu") else f"{env.get('gpu_count')}x {env['gpu']}"
    cells = {}
    for name, cell in result["cells"].items():
        value = cell.get("value")
        if not cell.get("comparable") or not isinstance(value, (int, float)):
            continue
        cells[name] = {"value": round(value, 4), "tolerance": reference_tolerance(value, cell.get("std")),
                       "n": cell["n"], "std": None if cell.get("std") is None else round(cell["std"], 4),
                       "command": f"make claims PROFILE={opts.profile}", "ran": result.get("command", ""),
                       "hardware": f"{hardware}, torch {env.get('torch')}", "date": result["created"][:10],
                       "commit": env.get("git_commit"), "runs": cell["runs"]}
    if not cells:
        raise UserError(f"{path} holds no comparable cell: nothing to record")
    out = package.EXPECTED_DIR / opts.profile / "claims.yaml"
    out.parent.mkdir(exist_ok=True)
    header = (f"# claims, PROFILE={opts.profile}: reference values MEASURED by this project (not the paper's),\n"
              f"# recorded by `python -m repro.experiments record claims --profile {opts.profile}` from {path}.\n"
              f"# tolerance = max({TOLERANCE_SPREADS:g} x seed std, {TOLERANCE_RELATIVE:g} x |value|, "
              f"{TOLERANCE_FLOOR:g}) (repro/experiments/claims.py reference_tolerance).\n")
    atomic_write_text(out, header + yaml.safe_dump({"experiment": "claims", "profile": opts.profile,
                                                     "cells": cells}, sort_keys=False))
    print(f"recorded {len(cells)} cells in {out}")
    return out


# ---- the entry of `python -m repro.experiments claims` ------------------------------------------

def run_claims_target(experiment, opts: Options) -> int:
    """The claims target: CIFAR-10 as an image folder (the runs' data.root), then run_claims."""
    if opts.profile not in CLAIM_PROFILES:
        raise UserError(f"make claims PROFILE={opts.profile}: the claims target has the profiles "
                        f"{' and '.join(CLAIM_PROFILES)} (default claims)")
    folder = Path(opts.data_dir) / IMAGE_FOLDER
    if opts.dry_run:
        print(f"# data: CIFAR-10 as an image folder in {folder} (from {opts.cifar10 or opts.data_dir})", flush=True)
    else:
        folder = prepare_image_folder(opts)
    # the folder is the runs' data.root; the generic data steps (torchvision's layout) do not apply
    return run_claims(replace(opts, data_dir=str(folder), prepare_data="none", probe="cached"))
