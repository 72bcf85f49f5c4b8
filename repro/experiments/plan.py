"""Planning: which runs an experiment record asks for under the given options, named and
configured, without touching a run folder (no torch needed)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from repro.cli import UserError
from repro.experiments import options
from repro.experiments.options import CONFIG_DIR, ROOT, Options

if TYPE_CHECKING:
    from repro.experiments.table import Experiment


@dataclass
class RunSpec:
    experiment: str                  # the record that planned it (runs are shared: see Runs)
    row: str
    dataset: str
    seed: int
    config: Path
    name: str
    standard: list[str]              # overrides that define this run (profile, EPOCHS included)
    reference: list[str]             # the overrides of the setting it is compared with: the paper's,
                                     # or the short profile's (never EPOCHS or user overrides)
    user: list[str] = field(default_factory=list)
    evaluate: bool = True
    stop_at_epoch: int | None = None

    def run_dir(self, opts: Options) -> Path:
        return opts.out / self.name

    def overrides(self, opts: Options) -> list[str]:
        return [f"name={self.name}", f"out_dir={opts.out}", f"data.root={opts.data_root(self.dataset)}",
                f"data.cache_dir={opts.cache}", f"seed={self.seed}", *self.standard, *self.user]


def config_path(dataset: str, row: str) -> Path:
    return CONFIG_DIR / dataset / f"{row}.yaml"


def _profile(experiment: str, profile: str) -> dict | None:
    """The named profile of expected_results/<experiment>.yaml (None: the file has no such profile)."""
    spec = yaml.safe_load((options.EXPECTED_DIR / f"{experiment}.yaml").read_text())
    return (spec.get("profiles") or {}).get(profile)


def profile_epochs(experiment: str, dataset: str, profile: str) -> int | None:
    if profile == "paper":
        return None
    prof = _profile(experiment, profile)
    if prof is None:
        raise UserError(f"PROFILE={profile}: {experiment} has no such profile (expected_results/{experiment}.yaml)")
    return (prof.get("epochs") or {}).get(dataset)


def profile_datasets(experiment: str, profile: str) -> list[str] | None:
    if profile == "paper":
        return None
    return list((_profile(experiment, profile) or {}).get("datasets", []))


def experiment_datasets(exp: Experiment, profile: str) -> list[str]:
    """The record's datasets, as its profile narrows them (Table 2's short profile: CIFAR-10 only)."""
    return profile_datasets(exp.result_names[0], profile) or list(exp.datasets)


def pick(requested: tuple[str, ...], allowed: list[str], what: str) -> list[str]:
    if not requested:
        return list(allowed)
    unknown = [r for r in requested if r not in allowed]
    if unknown:
        raise UserError(f"{what} {', '.join(unknown)} not in this experiment (choose from {', '.join(allowed)})")
    return [r for r in allowed if r in requested]


def run_spec(exp: Experiment, opts: Options, row: str, dataset: str, seed: int) -> RunSpec:
    """One run of the record: its folder name, config and overrides."""
    runs = exp.runs
    reference = [o.format(spectra_every=opts.spectra_every) for o in runs.overrides]
    reference += runs.per_dataset.get(dataset, ())
    for source in runs.profile_epochs_from:   # a profile's epochs for this dataset, from the first file that has them
        epochs = profile_epochs(source, dataset, opts.profile)
        if epochs is not None:
            reference.append(f"optim.epochs={epochs}")
            break
    standard = list(reference) + ([f"optim.epochs={opts.epochs}"] if opts.epochs is not None else [])
    stop = exp.stop_at_epoch if opts.epochs is None else None
    return RunSpec(exp.name, row, dataset, seed, config_path(dataset, row),
                   f"{runs.prefix}{dataset}-{row}-seed{seed}{opts.suffix}", standard, reference,
                   list(opts.overrides), evaluate=exp.evaluate, stop_at_epoch=stop)


def specs_for(exp: Experiment, opts: Options) -> list[RunSpec]:
    """The runs of one record with training runs, METHODS/DATASETS/SEEDS applied (dataset-major)."""
    if exp.parts:
        return plan_runs(exp, opts)
    if not exp.trains:
        return []
    datasets = experiment_datasets(exp, opts.profile)
    if exp.takes_datasets:
        datasets = pick(opts.datasets, datasets, "DATASETS")
    rows = pick(opts.methods, list(exp.rows), "METHODS")
    return [run_spec(exp, opts, row, dataset, seed) for dataset in datasets for row in rows for seed in opts.seeds]


def narrow(part: Experiment, opts: Options) -> Options | None:
    """A union's options for one part: METHODS/DATASETS kept where they apply to it (None: nothing
    of it is selected, or its profiles do not include PROFILE)."""
    if opts.profile not in part.profiles:
        return None
    rows = list(part.rows)
    datasets = experiment_datasets(part, opts.profile) if part.trains else []
    methods = tuple(m for m in opts.methods if not rows or m in rows)
    chosen = tuple(d for d in opts.datasets if not datasets or d in datasets)
    if (opts.methods and rows and not methods) or (opts.datasets and datasets and not chosen):
        return None
    return replace(opts, methods=methods, datasets=chosen if part.takes_datasets else ())


def plan_runs(exp: Experiment, opts: Options) -> list[RunSpec]:
    """Every distinct run of a record (a union: of its parts, each shared run once, first planner wins)."""
    if not exp.parts:
        return specs_for(exp, opts)
    distinct: dict[str, RunSpec] = {}
    for part in exp.parts:
        part_opts = narrow(part, opts)
        if part_opts is not None and part.trains:
            for spec in specs_for(part, part_opts):
                distinct.setdefault(spec.name, spec)
    return list(distinct.values())


def registered_methods() -> set[str] | None:
    try:
        from repro.methods import METHODS
    except Exception:  # noqa: BLE001 - the planner must work even if the package is half-written
        return None
    return set(METHODS)


def missing_reason(spec: RunSpec, methods: set[str] | None) -> str:
    """Why a planned run cannot train yet ("" if it can): its config or method is not written."""
    if not spec.config.exists():
        return f"config {spec.config.relative_to(ROOT)} not written yet"
    method = (yaml.safe_load(spec.config.read_text()) or {}).get("method")
    if methods is not None and method not in methods:
        return f"method '{method}' not registered in repro/methods/ yet"
    return ""


# ---- the plan summary: what a target will cost, printed by `make -n TARGET` and before a real run ----

@dataclass
class PlanSummary:
    target: str
    states: dict[str, str]             # run name -> new | resume | stopped | done | MISSING
    probes: int                        # planned linear probes (runs with evaluate, not MISSING)
    probes_todo: int                   # of which not written yet
    hours_todo: float                  # estimated GPU-hours of what is left (a run to resume counted whole)
    hours_total: float                 # of the whole plan, as if nothing were trained yet
    unestimated: list[str]             # datasets without a FLOP count (not in the estimate)
    downloads: list[str]               # one entry per dataset to download, with its archive size
    by_hand: list[str]                 # absent datasets that cannot be downloaded
    ffcv_bytes: int                    # FFCV files to write (raw pixels; 0 for JPEG files, see ffcv_jpeg)
    ffcv_jpeg: list[str]               # datasets whose FFCV file is JPEG (size not estimated)
    cache: str = ""

    def count(self, *states: str) -> int:
        return sum(state in states for state in self.states.values())


def summarize(exp: Experiment, opts: Options) -> PlanSummary:
    """The plan of a record under `opts`, each distinct run once (plan_runs): its trainings by state,
    its probes, estimated GPU-hours (repro/gpu_check/estimate.py at its reference rate), downloads
    and FFCV bytes (the dataset catalog). Reads run folders, never writes."""
    # imported here: state.py and data_steps.py import this module
    from repro.experiments.data_steps import planned_data
    from repro.experiments.state import eval_state, planned_epochs, train_state
    from repro.gpu_check.estimate import EPOCH_FLOPS, Run, reference_rate, runs_seconds

    specs = plan_runs(exp, opts)
    methods = registered_methods()
    states, todo, whole, unestimated = {}, [], [], set()
    probes = probes_todo = 0
    for spec in specs:
        if missing_reason(spec, methods):
            states[spec.name] = "MISSING"
            continue
        states[spec.name] = state = train_state(spec, opts)
        epochs = planned_epochs(spec, opts)
        if spec.stop_at_epoch:
            epochs = min(epochs, spec.stop_at_epoch)
        if spec.evaluate:
            probes += 1
            probes_todo += eval_state(spec, opts) != "done"
        if spec.dataset not in EPOCH_FLOPS:
            unestimated.add(spec.dataset)
            continue
        run = Run(1, spec.dataset, epochs, spec.evaluate)
        whole.append(run)
        if state in ("new", "resume"):
            todo.append(run)
        elif spec.evaluate and eval_state(spec, opts) != "done":
            todo.append(replace(run, epochs=0))      # trained: only its probe is left
    rate = reference_rate()
    data = planned_data([s for s in specs if states[s.name] != "MISSING"], opts)
    return PlanSummary(exp.name, states, probes, probes_todo, runs_seconds(todo, rate)["hours"],
                       runs_seconds(whole, rate)["hours"], sorted(unestimated), data["downloads"], data["by_hand"],
                       data["ffcv_bytes"], data["ffcv_jpeg"], opts.cache)


def gpu_hours(hours: float) -> str:
    """Hours to the precision an estimate has: 10.5, 0.86, 0.01 (two significant digits below 1)."""
    return f"{hours:.1f}" if hours >= 1 else f"{hours:.2g}"


def summary_lines(summary: PlanSummary) -> list[str]:
    """The summary as `#` lines (the runner's comment style), first line `plan: <target>: ...`."""
    from repro.gpu_check.estimate import reference_note

    s = summary
    lines = [f"plan: {s.target}: {len(s.states)} distinct training runs ({s.count('new')} new, "
             f"{s.count('resume')} to resume, {s.count('done', 'stopped')} done, {s.count('MISSING')} MISSING), "
             f"{s.probes} linear probes ({s.probes_todo} to run); a run shared by several targets counts once"]
    lines.append(f"plan: GPU-hours: {gpu_hours(s.hours_todo)} left ({gpu_hours(s.hours_total)} for the whole plan), "
                 + reference_note())
    if s.unestimated:
        lines.append(f"plan: no FLOP count for {', '.join(s.unestimated)}: their runs are not in the GPU-hours")
    lines.append("plan: downloads: " + ("; ".join(s.downloads) if s.downloads else "none"))
    for item in s.by_hand:
        lines.append(f"plan: by hand: {item}")
    disk = f"~{s.ffcv_bytes / 1e9:.2f} GB of FFCV files into {s.cache}/ffcv" if s.ffcv_bytes else "no FFCV files to write"
    if s.ffcv_jpeg:
        disk += f" (+ {', '.join(s.ffcv_jpeg)} as JPEG: size depends on the images, docs/data.md)"
    lines.append(f"plan: disk: {disk}; plus a checkpoint per run in its run folder")
    return [f"# {line}" for line in lines]
