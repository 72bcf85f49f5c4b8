"""The command line: `python -m repro.experiments TARGET|collect|record|download ...` (the Make
targets pass their variables as these flags)."""
from __future__ import annotations

import argparse
from dataclasses import Field, fields, replace
from pathlib import Path

from repro.cli import UserError
from repro.experiments.claims import CLAIM_PROFILES, profile_seeds
from repro.experiments.data_steps import download
from repro.experiments.options import ROOT, Options, choices, from_text, variable
from repro.experiments.results import collect
from repro.experiments.run import run_target
from repro.experiments.summary import help_cost_lines
from repro.experiments.table import COLLECTABLE, EXPERIMENTS
from repro.experiments.variants import with_variant

USAGE = """Every paper experiment end to end: prepare data, train what is missing, resume what is
unfinished, skip what is done, evaluate, write results, check them against the paper.

    python -m repro.experiments table2 [--dry-run] [--gpus 4] [--methods frossl,vicreg] ...
    make table2                      # the same, with the Makefile's variables
    make -n table2                   # prints the commands it would run, runs nothing

Targets (one record each in repro/experiments/table.py; expected values and claims in
expected_results/<experiment>.yaml):
{targets}
Sub-commands: `collect EXPERIMENT` (results from the run folders, no training), `record claims
--profile PROFILE` (store a claims profile's measured values as its references), `download DATASET`,
`help-costs` (help-costs.mk: each target's estimated cost for `make help`).

A run is named <dataset>-<row>-seed<S>[suffix] under --out (Figure 3's: figure3-stl10-...), where a
row is a config name (repro/configs/<dataset>/<row>.yaml). A row whose config is not written yet,
or whose method is not registered in repro.methods, is reported MISSING and skipped. Suffixes keep
non-paper runs apart: -e<N> (EPOCHS=N), -x<hash> (OVERRIDES=...); either makes the cells
NOT-COMPARABLE to the paper. --gpus N > 1 launches `torchrun --standalone --nproc_per_node=N -m repro.train` (the
global batch split over the N processes); --nnodes M > 1 runs the same command on every machine
(--node-rank 0..M-1, --master-addr of node 0), node 0 alone evaluating, collecting and checking.
Before anything runs, every planned run's config is loaded with its overrides, its batch must
divide by the number of processes, and (CUDA present, not --dry-run) --gpus must not exceed the
visible devices; without CUDA, --gpus N runs N CPU processes. A real run also checks, before its first
step, every planned run's data, that OUT and the cache folder are writable, the free disk and /dev/shm
(one `error:` line and exit 2 otherwise). SIGTERM, SIGINT or SIGHUP is passed to the running step (the
trainer checkpoints at its step), nothing more starts, and the exit status is 128 + signal; a step
still running 120 s later, or after a second signal, is killed. While a target runs, `# run k/N` lines
give the elapsed time and an ETA. docs/experiments.md has the rest.
"""


def usage() -> str:
    targets = "\n".join(f"  {name:<9} {exp.title}" for name, exp in EXPERIMENTS.items())
    return USAGE.format(targets=targets)


def flag_fields() -> list[Field]:
    """The fields of Options that are flags (made with options.flag)."""
    return [f for f in fields(Options) if "help" in f.metadata]


def parse_options(argv: list[str]) -> tuple[argparse.Namespace, Options]:
    """The parser is made from the Options fields: --<flag> for each, its Make variable as metavar."""
    parser = argparse.ArgumentParser(prog="python -m repro.experiments", description=usage(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=[*EXPERIMENTS, *SUBCOMMANDS])
    parser.add_argument("name", nargs="?", help="collect/record: the experiment; download: the dataset")
    for f in flag_fields():
        name = "--" + (f.metadata["flag"] or f.name).replace("_", "-")
        if f.default is False:
            parser.add_argument(name, dest=f.name, action="store_true", help=f.metadata["help"])
        else:
            listed = f" [{' | '.join(c or '(empty)' for c in choices(f))}]" if choices(f) else ""
            parser.add_argument(name, dest=f.name, default="", metavar=variable(f), help=f.metadata["help"] + listed)
    args = parser.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in flag_fields() if f.default is not False}
    if Path.cwd().resolve() != ROOT:  # commands run in the repository: paths given elsewhere become absolute
        given.update({f.name: str(Path(given[f.name]).resolve()) for f in flag_fields()
                      if f.metadata["path"] and given[f.name].strip()})
    opts = Options(dry_run=args.dry_run, **{f.name: from_text(f, given[f.name]) for f in flag_fields()
                                            if f.name in given and given[f.name].strip()})
    # a record's first profile is its default (claims: the CPU claims profile); `record` and `collect`
    # take the named experiment's
    named = EXPERIMENTS.get(args.target) or EXPERIMENTS.get(args.name or "")
    if not given["profile"].strip():
        opts = replace(opts, profile=named.profiles[0] if named else "paper")
    if not opts.seeds or not given["seeds"].strip():
        opts = replace(opts, seeds=default_seeds(opts.profile))
    if not 0 <= opts.node_rank < opts.nnodes:   # the bounds of each number alone: options.py
        raise UserError(f"NNODES={opts.nnodes} NODE_RANK={opts.node_rank}: NODE_RANK must be one of "
                        f"0..{opts.nnodes - 1} (0 on the machine at MASTER_ADDR)")
    if opts.nnodes > 1 and not opts.master_addr:
        raise UserError(f"NNODES={opts.nnodes} needs MASTER_ADDR: set MASTER_ADDR=<address of the NODE_RANK=0 "
                        f"machine, reachable from every node> on every node")
    return args, opts


def collectable(name: str):
    if name not in COLLECTABLE:
        raise UserError(f"collect {name}: choose {', '.join(COLLECTABLE)}")
    return COLLECTABLE[name]


def default_seeds(profile: str) -> tuple[int, ...]:
    """SEEDS when not given: 0, or a claims profile's own (expected_results/claims.yaml)."""
    return profile_seeds(Options(profile=profile)) if profile in CLAIM_PROFILES else (0,)


def record(name: str, opts: Options) -> None:
    """Store a collected result's measured cells as the references of its profile."""
    recorders = [n for n, e in EXPERIMENTS.items() if e.record_references]
    exp = EXPERIMENTS.get(name)
    if exp is None or exp.for_profile(opts.profile).record_references is None:
        raise UserError(f"record {name}: only {', '.join(recorders)} records measured references: "
                        f"`record {recorders[0]} --profile PROFILE`")
    exp.for_profile(opts.profile).record_references(opts)


def help_costs(name: str, opts: Options) -> None:
    """help-costs.mk, which `make help` includes: each target's cost from the estimator."""
    print("# generated by `make help-costs` (python -m repro.experiments help-costs): do not edit", *help_cost_lines(
        EXPERIMENTS.values()), sep="\n")


SUBCOMMANDS = {"collect": lambda name, opts: collect(collectable(name).for_profile(opts.profile), opts),
               "record": record,
               "download": lambda name, opts: download(name, opts.data_root(name)),
               "help-costs": help_costs}


def main(argv: list[str]) -> int:
    args, opts = parse_options(argv)
    if args.target in SUBCOMMANDS:
        SUBCOMMANDS[args.target](args.name or "", opts)
        return 0
    experiment, opts = with_variant(EXPERIMENTS[args.target].for_profile(opts.profile), opts)
    return (experiment.runner or run_target)(experiment, opts)
