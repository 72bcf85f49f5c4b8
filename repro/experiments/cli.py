"""The command line: `python -m repro.experiments TARGET|collect|record|download ...` (the Make
targets pass their variables as these flags)."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from repro.cli import UserError
from repro.experiments.claims import CLAIM_PROFILES, collect_profile, profile_seeds, record_claims, run_claims_target
from repro.experiments.data_steps import download
from repro.experiments.options import CONFIG_VARIANTS, PROFILES, ROOT, Options, words
from repro.experiments.results import collect, record_short
from repro.experiments.run import run_target
from repro.experiments.table import EXPERIMENTS
from repro.experiments.variants import with_variant

USAGE = """Every paper experiment end to end: prepare data, train what is missing, resume what is
unfinished, skip what is done, evaluate, write results, check them against the paper.

    python -m repro.experiments table2 [--dry-run] [--gpus 4] [--methods frossl,vicreg] ...
    make table2                      # the same, with the Makefile's variables
    make -n table2                   # prints the commands it would run, runs nothing

Targets (one record each in repro/experiments/table.py; expected values and claims in
expected_results/<experiment>.yaml):
{targets}
Sub-commands: `collect EXPERIMENT` (results from the run folders, no training), `record EXPERIMENT
--profile short` (store measured short-profile values as the reference), `download DATASET`.

A run is named <dataset>-<row>-seed<S>[suffix] under --out (Figure 3's: figure3-stl10-...), where a
row is a config name (repro/configs/<dataset>/<row>.yaml). A row whose config is not written yet,
or whose method is not registered in repro.methods, is reported MISSING and skipped. Suffixes keep
non-paper runs apart: -short (PROFILE=short), -e<N> (EPOCHS=N), -x<hash> (OVERRIDES=...); any of
those makes the cells NOT-COMPARABLE to the paper (PROFILE=short cells compare with measured short
references). --gpus N > 1 launches `torchrun --standalone --nproc_per_node=N -m repro.train` (the
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


def parse_options(argv: list[str]) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(prog="python -m repro.experiments", description=usage(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=[*EXPERIMENTS, "collect", "record", "download"])
    parser.add_argument("name", nargs="?", help="collect/record: the experiment; download: the dataset")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--gpus", default="1", help="processes per run (torchrun when > 1)")
    parser.add_argument("--out", default="runs", help="folder of the run folders; results in OUT/results")
    parser.add_argument("--data-dir", default="data", help="datasets (data.root of every run)")
    parser.add_argument("--imagenet-dir", default="", help="ImageNet image folder (default DATA_DIR/imagenet)")
    parser.add_argument("--cifar10", default="",
                        help="Figure 2's CIFAR-10 (default DATA_DIR; a .tar.gz of the image folder works)")
    parser.add_argument("--methods", default="", help="rows (config names), comma or space separated; default: all")
    parser.add_argument("--datasets", default="", help="datasets; default: the experiment's")
    parser.add_argument("--seeds", default="", help="seeds, e.g. '0 1 2' (default 0; the claims profiles: their own)")
    parser.add_argument("--epochs", default="", help="override every run's epochs (NOT-COMPARABLE)")
    parser.add_argument("--profile", default="", choices=["", *PROFILES],
                        help="the budget: paper, short, or the CPU claims profiles (default: the target's first)")
    parser.add_argument("--variant", default="paper", choices=CONFIG_VARIANTS,
                        help="authors: rows with an authors'-code config train it (Table 2's FroSSL row)")
    parser.add_argument("--cache-dir", default="", help="derived files (FFCV); default OUT/cache")
    parser.add_argument("--probe", default="", choices=["", "full", "cached"], help="linear probe (default: the config's)")
    parser.add_argument("--overrides", default="", help="extra key=value config overrides for every run (NOT-COMPARABLE)")
    parser.add_argument("--prepare-data", default="auto", choices=["auto", "none"],
                        help="auto: download missing datasets, write FFCV files when ffcv is installed")
    parser.add_argument("--spectra-every", default="10", help="Figure 3: steps between eigenvalue records")
    parser.add_argument("--nnodes", default="1", help="machines per run (torchrun --nnodes); > 1 needs --master-addr")
    parser.add_argument("--node-rank", default="0", help="this machine, 0..NNODES-1 (0 evaluates, collects, checks)")
    parser.add_argument("--master-addr", default="", help="address of the NODE_RANK=0 machine (NNODES > 1)")
    parser.add_argument("--master-port", default="29500", help="a free TCP port on the NODE_RANK=0 machine")
    parser.add_argument("--rdzv-timeout", default="600", help="seconds the nodes wait for each other at a rendezvous")
    args = parser.parse_args(argv)
    try:
        gpus = int(args.gpus or 1)
        seeds = tuple(int(s) for s in words(args.seeds))
        epochs = int(args.epochs) if str(args.epochs).strip() else None
        spectra_every = int(args.spectra_every)
    except ValueError as err:
        raise UserError(f"GPUS, SEEDS, EPOCHS and the spectra interval must be integers ({err})") from None
    if gpus < 1 or (epochs is not None and epochs < 1):
        raise UserError("GPUS and EPOCHS must be >= 1")
    try:
        nnodes, node_rank = int(args.nnodes or 1), int(args.node_rank or 0)
        master_port = int(args.master_port or 29500)
        rdzv_timeout = int(args.rdzv_timeout or 600)
    except ValueError as err:
        raise UserError(f"NNODES, NODE_RANK, MASTER_PORT and RDZV_TIMEOUT must be integers ({err}): e.g. NNODES=2 "
                        f"NODE_RANK=0 MASTER_PORT=29500 RDZV_TIMEOUT=600") from None
    master_addr = (args.master_addr or "").strip()
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise UserError(f"NNODES={nnodes} NODE_RANK={node_rank}: NNODES must be >= 1 and NODE_RANK one of "
                        f"0..{max(nnodes, 1) - 1} (0 on the machine at MASTER_ADDR)")
    if nnodes > 1 and not master_addr:
        raise UserError(f"NNODES={nnodes} needs MASTER_ADDR: set MASTER_ADDR=<address of the NODE_RANK=0 machine, "
                        f"reachable from every node> on every node")
    if rdzv_timeout < 1:
        raise UserError(f"RDZV_TIMEOUT={rdzv_timeout}: the seconds the nodes wait for each other must be >= 1 (default 600)")
    if not 0 < master_port < 65536:
        raise UserError(f"MASTER_PORT={master_port}: choose a free TCP port in 1..65535 (default 29500)")
    # a record's first profile is its default (claims: the CPU claims profile); `record` and `collect`
    # take the named experiment's
    named = EXPERIMENTS.get(args.target) or EXPERIMENTS.get(args.name or "")
    profile = args.profile or (named.profiles[0] if named else "paper")
    if Path.cwd().resolve() != ROOT:  # commands run in the repository: paths given elsewhere become absolute
        for key in ("out", "data_dir", "imagenet_dir", "cifar10", "cache_dir"):
            if getattr(args, key):
                setattr(args, key, str(Path(getattr(args, key)).resolve()))
    opts = Options(out=Path(args.out), data_dir=args.data_dir, imagenet_dir=args.imagenet_dir, cifar10=args.cifar10,
                   gpus=gpus, methods=tuple(words(args.methods)), datasets=tuple(words(args.datasets)),
                   seeds=seeds or default_seeds(profile), epochs=epochs, profile=profile, probe=args.probe,
                   config_variant=args.variant, cache_dir=args.cache_dir,
                   overrides=tuple(shlex.split(args.overrides)), prepare_data=args.prepare_data,
                   spectra_every=spectra_every, dry_run=args.dry_run, nnodes=nnodes, node_rank=node_rank,
                   master_addr=master_addr, master_port=master_port, rdzv_timeout=rdzv_timeout)
    return args, opts


def default_seeds(profile: str) -> tuple[int, ...]:
    """SEEDS when not given: 0, or a claims profile's own (expected_results/claims.yaml)."""
    return profile_seeds(profile) if profile in CLAIM_PROFILES else (0,)


def record(name: str, opts: Options) -> None:
    """Measured references: a claims profile's (expected_results/<profile>/claims.yaml), else PROFILE=short's."""
    if opts.profile in CLAIM_PROFILES:
        record_claims(opts)
    else:
        record_short(name, opts)


SUBCOMMANDS = {"collect": lambda name, opts: collect_profile(opts) if name == "claims" and opts.profile in CLAIM_PROFILES
               else collect(name, opts),
               "record": record,
               "download": lambda name, opts: download(name, opts.data_root(name))}
# records whose target needs more than run_target's train -> evaluate -> collect -> check: the claims
# profile first makes CIFAR-10 an image folder and adds a random-initialisation baseline row
OWN_RUNNERS = {"claims": run_claims_target}


def main(argv: list[str]) -> int:
    args, opts = parse_options(argv)
    if args.target in SUBCOMMANDS:
        SUBCOMMANDS[args.target](args.name or "", opts)
        return 0
    experiment, opts = with_variant(EXPERIMENTS[args.target], opts)
    return OWN_RUNNERS.get(experiment.name, run_target)(experiment, opts)
