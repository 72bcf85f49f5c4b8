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
from typing import get_args

import yaml

from repro.cli import UserError
from repro.experiments.options import Options, Profile

IMAGE_FOLDER = "cifar10-images"   # under DATA_DIR: the claims runs' data.root
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CLAIM_PROFILES = tuple(p for p in get_args(Profile) if p != "paper")
DIVERGED = "diverged.json"   # repro.train.DIVERGED (not imported: planning runs without torch)
MINUTES_PER_RUN = 3.5        # one run of the schedule with its probe on 2 idle cores (docs/claims.md, measured)
# what a recorded run folder keeps (expected_results/<profile>/runs/<run>/): everything the target collects
# from and the run's provenance; not its checkpoint (51 MB) or TensorBoard copy of metrics.jsonl
EVIDENCE = ("command.txt", "config.yaml", "env.json", "metrics.jsonl", "spectra.jsonl", "pretrain.json",
            "eval_cached.json", "eval_cached_random_init.json", DIVERGED)


def profile_spec(opts: Options) -> dict:
    """expected_results/claims.yaml profiles.<PROFILE>: its seeds and, for claims-all, `lr_sweep`."""
    spec = yaml.safe_load((opts.expected_dir / "claims.yaml").read_text())
    return spec["profiles"][opts.profile]


def profile_seeds(opts: Options) -> tuple[int, ...]:
    """The seeds a claims profile runs (expected_results/claims.yaml profiles.<PROFILE>.seeds)."""
    return tuple(profile_spec(opts)["seeds"])


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


def run_claims(exp, opts: Options) -> int:
    """Train, evaluate, collect and check the claims record (exit 1 on a FAIL or a failed step); a
    stop signal is passed to the running step and nothing new starts (run.STOP, as every target)."""
    from repro.experiments.run import STOP
    with STOP:
        return _run_claims(exp, opts)


def _run_claims(exp, opts: Options) -> int:
    from repro.experiments.commands import check_command, collect_command
    from repro.experiments.plan import plan_runs
    from repro.experiments.preflight import preflight
    from repro.experiments.results import collect
    from repro.experiments.run import Progress, Runner, run_specs
    from repro.experiments.state import train_state
    runner = Runner(opts)
    runner.say(f"claims: profile {opts.profile}, seeds {' '.join(map(str, opts.seeds))}, out={opts.out}, "
               f"data {opts.data_dir} (CIFAR-10 as an image folder; docs/claims.md)")
    if opts.epochs is not None or opts.overrides:
        runner.say("EPOCHS / OVERRIDES change the claims schedule: the runs get their own folders and the "
                   "recorded references do not apply (NOT-COMPARABLE)")
    lrs = tuple(profile_spec(opts).get("lr_sweep", ()))
    if lrs:   # claims-all: the seed-0 sweep first, then every seed of each row at its chosen rate
        sweep = sweep_specs(exp, opts, lrs)
        pending = plan_runs(exp, replace(opts, seeds=opts.seeds[1:])) if opts.dry_run else []
        say_estimate(runner, sweep, len(pending), opts)
        preflight(sweep, opts)
        for spec in sweep:
            if (spec.run_dir(opts) / DIVERGED).exists():
                runner.say(f"{spec.name}: its loss went non-finite ({DIVERGED}), not retried")
        to_run = [s for s in sweep if not (s.run_dir(opts) / DIVERGED).exists()]
        # `# run k/N` over the sweep and the seeds to come (a sweep run reused as seed 0 counts once)
        runner.progress = Progress(len(to_run) + len(opts.seeds[1:]) * len({s.row for s in sweep}))
        run_specs(to_run, opts, runner)
        # a rate under which the loss goes non-finite is a result of the sweep (recorded), not a failure
        diverged = [s.name for s in sweep if (s.run_dir(opts) / DIVERGED).exists()]
        runner.failures = [f for f in runner.failures if not any(f"name={name} " in f for name in diverged)]
        choice = sweep_choice(sweep, opts)
        if not opts.dry_run:
            write_sweep(choice, opts, lrs)
        opts = with_chosen_rates(opts, choice)
        for row, c in choice.items():
            runner.say(f"sweep {row}: " + (f"lr {c['chosen']:g} ({c['why']})" if c["chosen"] is not None else c["why"]))
        specs = [s for s in plan_runs(exp, opts) if s.row in dict(opts.row_lr)]
        if opts.dry_run and len(opts.row_lr) < len(choice):
            runner.say(f"then seeds {' '.join(map(str, opts.seeds[1:]))} of each row still sweeping at its "
                       f"chosen learning rate (planned once its sweep is evaluated)")
    else:
        specs = plan_runs(exp, opts)
    planned = preflight(specs, opts)
    runner.progress = runner.progress or Progress(len(planned))
    run_specs(specs, opts, runner)
    for spec in specs:   # the random-initialisation baseline row, from the first row's runs
        if spec.row != exp.rows[0]:
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
        path = collect(exp, opts)
        runner.say(learns_table(json.loads(path.read_text())))
    code = runner.run(check_command(opts, ["claims"], None, stem="check_claims"))
    runner.report_failures()
    return int(bool(code or runner.failures))


# ---- claims-all: the learning-rate sweep ------------------------------------------------------------

def sweep_specs(exp, opts: Options, lrs: tuple[float, ...]) -> list:
    """Every row at every swept rate on the profile's first seed, row after row (a partial sweep
    finishes whole rows); METHODS applies."""
    from repro.experiments.plan import plan_runs
    specs = [s for lr in lrs for s in plan_runs(exp, replace(opts, seeds=opts.seeds[:1],
                                                              row_lr=tuple((r, lr) for r in exp.rows)))]
    return sorted(specs, key=lambda s: exp.rows.index(s.row))   # stable: each row's rates in order


def sweep_choice(specs: list, opts: Options) -> dict[str, dict]:
    """The choice rule (docs/claims.md): per row, the swept rate whose run finished with a finite loss
    and has the highest cached-probe top-1 (a tie: the smaller rate); none while any of the row's runs
    is neither finished and evaluated nor diverged, or when every one diverged."""
    from repro.experiments.state import finished, planned_epochs
    out: dict[str, dict] = {}
    for spec in specs:
        lr = next(float(o.split("=", 1)[1]) for o in reversed(spec.reference) if o.startswith("optim.lr="))
        entry = {"lr": lr, "run": spec.name, "probe_top1": None, "knn_top1": None}
        run_dir = spec.run_dir(opts)
        if (run_dir / DIVERGED).exists():
            entry["status"] = "diverged: " + json.loads((run_dir / DIVERGED).read_text())["message"].split(":")[0]
        elif finished(spec, opts) and (run_dir / "eval_cached.json").exists():
            result = json.loads((run_dir / "eval_cached.json").read_text())
            if result.get("checkpoint_epoch") == planned_epochs(spec, opts):
                entry.update(status="finished", probe_top1=100 * result["linear_top1"],
                             knn_top1=100 * result["knn_top1"])
        entry.setdefault("status", "not finished")
        out.setdefault(spec.row, {"runs": []})["runs"].append(entry)
    for row, c in out.items():
        done = [e for e in c["runs"] if e["status"] == "finished"]
        if any(e["status"] == "not finished" for e in c["runs"]):
            c.update(chosen=None, why="sweep not finished")
        elif not done:
            c.update(chosen=None, why="the loss went non-finite at every swept rate: no run to compare")
        else:
            best = max(done, key=lambda e: (e["probe_top1"], -e["lr"]))
            c.update(chosen=best["lr"], why=f"best cached-probe top-1 {best['probe_top1']:.2f} of "
                                            f"{len(done)} finite runs")
    return out


def with_chosen_rates(opts: Options, choice: dict[str, dict]) -> Options:
    return replace(opts, row_lr=tuple((row, c["chosen"]) for row, c in choice.items() if c["chosen"] is not None))


def collect_at_chosen_rates(exp, opts: Options) -> dict:
    """claims-all's collector: the claims cells of each row's runs at the rate its sweep chose."""
    from repro.experiments.collect import collect_claims
    lrs = tuple(profile_spec(opts)["lr_sweep"])
    return collect_claims(exp, with_chosen_rates(opts, sweep_choice(sweep_specs(exp, opts, lrs), opts)))


def write_sweep(choice: dict, opts: Options, lrs: tuple[float, ...]) -> Path:
    """OUT/results/<stem>-sweep.json: every sweep run's rate, status, probe and k-NN, and each row's choice."""
    from datetime import datetime, timezone

    import shlex
    import sys

    from repro.atomic import atomic_write_text
    from repro.checkpoint import environment
    opts.results.mkdir(parents=True, exist_ok=True)
    path = opts.results / f"{opts.result_stem('claims')}-sweep.json"
    atomic_write_text(path, json.dumps(
        {"experiment": "claims", "profile": opts.profile, "variant": opts.variant, "lr_sweep": list(lrs),
         "seed": opts.seeds[0], "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "command": shlex.join([Path(sys.executable).name, "-m", "repro.experiments", *sys.argv[1:]]),
         "environment": environment(), "rule": SWEEP_RULE, "rows": choice}, indent=1) + "\n")
    return path


SWEEP_RULE = ("per row, the swept learning rate whose seed-0 run finished with a finite loss and has the highest "
              "cached-probe top-1 (a tie: the smaller rate)")


def say_estimate(runner, sweep: list, seed_runs: int, opts: Options) -> None:
    """The plan's size and time (MINUTES_PER_RUN per run; runs done on disk cost nothing)."""
    from repro.experiments.state import finished
    todo = sum(not finished(s, opts) and not (s.run_dir(opts) / DIVERGED).exists() for s in sweep)
    runs = todo + seed_runs
    runner.say(f"claims-all plan: {len(sweep)} sweep runs ({todo} to train), then {seed_runs} runs of seeds "
               f"{' '.join(map(str, opts.seeds[1:]))} at the chosen rates, {len(opts.seeds)} random-init probes; "
               f"about {runs * MINUTES_PER_RUN / 60:.1f} h on 2 idle CPU cores ({MINUTES_PER_RUN:g} min a run, "
               f"docs/claims.md; finished runs are skipped)")


def learns_table(result: dict) -> str:
    """'Does every method learn': each row's probe and k-NN top-1 (mean +- std over seeds) against the
    random encoder's, with the margin rule's verdict (repro/check.py margin_verdict, floor 1 point)."""
    from repro.check import margin_verdict
    cells = result["cells"]

    def show(cell: dict | None) -> str:
        if cell is None or not isinstance(cell.get("value"), (int, float)):
            return "-"
        return f"{cell['value']:.1f}" + (f" ± {cell['std']:.1f}" if cell.get("std") is not None else "")

    lines = ["does every method learn (x100; margin rule vs the random encoder, floor 1.0):",
             f"  {'row':<14} {'lr':>5}  {'probe top-1':<13} {'k-NN top-1':<13} verdict"]
    rates = result.get("learning_rates", {})
    for row in [r for r in dict.fromkeys(c.split("/")[1] for c in cells) if r != "random_init"] + ["random_init"]:
        probe, knn = cells.get(f"probe_top1/{row}"), cells.get(f"knn_top1/{row}")
        verdicts = []
        for metric, cell in (("probe", probe), ("k-NN", knn)):
            base = cells.get(f"{metric.replace('-', '').lower()}_top1/random_init")
            if row != "random_init" and cell and base and isinstance(cell.get("value"), (int, float)):
                verdicts.append(f"{metric} {margin_verdict(cell, base, 'higher', 1.0)[0]}")
        verdict = "(baseline)" if row == "random_init" else ", ".join(verdicts) or "MISSING (no finished run)"
        lr = f"{rates[row]:g}" if row in rates else "-"
        lines.append(f"  {row:<14} {lr:>5}  {show(probe):<13} {show(knn):<13} {verdict}")
    return "\n".join(lines)


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
    spread, and the command, machine, date and commit that produced it; the sweep beside it
    (claims-all: sweep.yaml) and every run either names, as evidence (runs/, keep_evidence)."""
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
                       "commit": env.get("git_commit"),
                       "runs": [f"runs/{Path(run).name}" for run in cell["runs"]]}   # the kept evidence, beside it
    if not cells:
        raise UserError(f"{path} holds no comparable cell: nothing to record")
    sweep = read_sweep(opts, result) if profile_spec(opts).get("lr_sweep") else None
    names = {Path(run).name for cell in cells.values() for run in cell["runs"]}
    if sweep is not None:
        names |= {entry["run"] for c in sweep["rows"].values() for entry in c["runs"]}
    runs = [opts.out / name for name in sorted(names)]
    absent = [str(d) for d in runs if not (d / "config.yaml").exists()]
    if absent:   # checked before anything is written: the evidence is part of the record
        raise UserError(f"the record's runs {', '.join(absent)} are not on disk (no config.yaml): record with --out "
                        f"the folder they were trained in")
    out = opts.expected_dir / opts.profile / "claims.yaml"
    out.parent.mkdir(exist_ok=True)
    header = (f"# claims, PROFILE={opts.profile}: reference values MEASURED by this project (not the paper's),\n"
              f"# recorded by `python -m repro.experiments record claims --profile {opts.profile}` from {path}.\n"
              f"# tolerance = max({TOLERANCE_SPREADS:g} x seed std, {TOLERANCE_RELATIVE:g} x |value|, "
              f"{TOLERANCE_FLOOR:g}) (repro/experiments/claims.py reference_tolerance).\n")
    atomic_write_text(out, header + yaml.safe_dump({"experiment": "claims", "profile": opts.profile,
                                                     "cells": cells}, sort_keys=False))
    print(f"recorded {len(cells)} cells in {out}")
    if sweep is not None:
        env = sweep.get("environment", {})
        record = {"experiment": "claims", "profile": opts.profile, "rule": sweep["rule"], "lr_sweep": sweep["lr_sweep"],
                  "seed": sweep["seed"], "command": f"make claims PROFILE={opts.profile}", "ran": sweep.get("command", ""),
                  "hardware": f"{machine() if not env.get('gpu') else env['gpu']}, torch {env.get('torch')}",
                  "date": sweep["created"][:10], "commit": env.get("git_commit"), "rows": sweep["rows"]}
        sweep_out = out.parent / "sweep.yaml"
        atomic_write_text(sweep_out, f"# claims, PROFILE={opts.profile}: the learning-rate sweep MEASURED by this project, "
                                     f"recorded with the references beside it\n# by `python -m repro.experiments record "
                                     f"claims --profile {opts.profile}`.\n" + yaml.safe_dump(record, sort_keys=False))
        print(f"recorded the sweep of {len(sweep['rows'])} rows in {sweep_out}")
    kept = keep_evidence(runs, out.parent / "runs")
    print(f"kept the evidence of {kept} runs in {out.parent / 'runs'}")
    return out


def keep_evidence(run_dirs: list[Path], dest: Path) -> int:
    """Copy each run folder's EVIDENCE files into dest/<run>/, dest replaced as a whole: the record's
    runs as the target reads them (a finished, evaluated run needs no checkpoint), so a copy of dest
    as OUT re-collects and re-checks the record without training, and a recording spread over
    machines resumes from it (docs/claims.md)."""
    import shutil
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for run_dir in run_dirs:
        (staging / run_dir.name).mkdir(parents=True)
        for name in EVIDENCE:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, staging / run_dir.name / name)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return len(run_dirs)


def read_sweep(opts: Options, result: dict) -> dict:
    """The profile's sweep file, which must have chosen the rates the collected result trained at."""
    path = opts.results / f"{opts.result_stem('claims')}-sweep.json"
    if not path.exists():
        raise UserError(f"record --profile {opts.profile} needs the sweep's result ({path}): run "
                        f"`make claims PROFILE={opts.profile}` first")
    sweep = json.loads(path.read_text())
    chosen = {row: c["chosen"] for row, c in sweep["rows"].items() if c.get("chosen") is not None}
    if chosen != result.get("learning_rates", {}):
        raise UserError(f"{path} chose {chosen} but the collected result trained at {result.get('learning_rates')}: "
                        f"run `make claims PROFILE={opts.profile}` again to finish and collect it")
    return sweep


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
    return run_claims(experiment, replace(opts, data_dir=str(folder), prepare_data="none", probe="cached"))
