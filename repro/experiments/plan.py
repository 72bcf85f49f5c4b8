"""Planning: which runs an experiment record asks for under the given options, named and
configured, without touching a run folder (no torch needed)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from repro.cli import UserError
from repro.experiments.experiment import Experiment
from repro.experiments.options import CONFIG_DIR, ROOT, Options


@dataclass
class RunSpec:
    experiment: str                  # the record that planned it (runs are shared: see Runs)
    row: str
    dataset: str
    seed: int
    config: Path
    name: str
    standard: list[str]              # overrides that define this run (profile, EPOCHS included)
    reference: list[str]             # the overrides of the setting it is compared with (the paper's,
                                     # or the claims profile's; never EPOCHS or user overrides)
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
    lr = dict(opts.row_lr).get(row)
    if lr is not None:   # a per-row learning rate (the claims-all sweep): part of the setting and of the name
        reference.append(f"optim.lr={lr:g}")
    standard = list(reference) + ([f"optim.epochs={opts.epochs}"] if opts.epochs is not None else [])
    stop = exp.stop_at_epoch if opts.epochs is None else None
    config = config_path(dataset, row)
    split = per_process_loss_batch(config, [*standard, *opts.overrides], opts.world_size)
    standard += [f"train.loss_batch={split}"] if split else []
    return RunSpec(exp.name, row, dataset, seed, config,
                   f"{runs.prefix}{dataset}-{row}{'' if lr is None else f'-lr{lr:g}'}-seed{seed}{opts.suffix}" + (f"-lb{split}" if split else ""),
                   standard, reference, list(opts.overrides), evaluate=exp.evaluate, stop_at_epoch=stop)


def per_process_loss_batch(config: Path, overrides: list[str], world_size: int) -> int:
    """The per-process loss batch a run must train with on `world_size` processes when its config's
    cannot be kept (0: kept): the paper's split of ImageNet's batch (train.loss_batch 56 = 224 over 4)
    on another number of processes. Such a run gets its own folder (-lb<N>) and is NOT-COMPARABLE (its
    train.loss_batch differs)."""
    from repro.config import ConfigError, load_config
    if not config.exists():
        return 0
    try:
        cfg = load_config(config, overrides)
    except ConfigError:
        return 0   # the preflight names the problem
    batch, loss_batch = cfg.data.batch_size, cfg.train.loss_batch
    if batch % world_size:
        return 0   # refused by the preflight
    per_process = batch // world_size
    if loss_batch and loss_batch != per_process:
        return per_process
    return 0


def specs_for(exp: Experiment, opts: Options) -> list[RunSpec]:
    """The runs of one record with training runs, METHODS/DATASETS/SEEDS applied (dataset-major)."""
    if exp.parts:
        return plan_runs(exp, opts)
    if not exp.trains:
        return []
    datasets = pick(opts.datasets, list(exp.datasets), "DATASETS") if exp.takes_datasets else list(exp.datasets)
    rows = pick(opts.methods, list(exp.rows), "METHODS")
    return [run_spec(exp, opts, row, dataset, seed) for dataset in datasets for row in rows for seed in opts.seeds]


def narrow(part: Experiment, opts: Options) -> Options | None:
    """A union's options for one part: METHODS/DATASETS kept where they apply to it (None: nothing
    of it is selected, or its profiles do not include PROFILE)."""
    if opts.profile not in part.profiles:
        return None
    rows = list(part.rows)
    datasets = list(part.datasets) if part.trains else []
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


def registered_methods() -> set[str]:
    """The methods a config may name: one typed loss record each (repro/method_args.py; tests/test_methods.py
    checks that repro.methods has a class for each). Read without importing torch: the planner runs
    before every target and each `make -n`."""
    from repro.method_args import METHOD_ARGS
    return set(METHOD_ARGS)


def missing_reason(spec: RunSpec, methods: set[str]) -> str:
    """Why a planned run cannot train yet ("" if it can): its config or method is not written."""
    if not spec.config.exists():
        return f"config {spec.config.relative_to(ROOT)} not written yet"
    method = (yaml.safe_load(spec.config.read_text()) or {}).get("method")
    if method not in methods:
        return f"method '{method}' not registered in repro/methods/ yet"
    return ""
