"""The command lines a target runs: training (plain or torchrun), evaluation, Figure 2's script,
collection and the check. Each is a list of arguments, printed before it runs."""
from __future__ import annotations

import shlex
from dataclasses import fields
from pathlib import Path

from repro.experiments.options import ROOT, Options
from repro.experiments.plan import RunSpec
from repro.experiments.state import probe_kind


def train_command(spec: RunSpec, opts: Options) -> list[str]:
    args = ["-m", "repro.train", str(spec.config.relative_to(ROOT)), *spec.overrides(opts)]
    if opts.world_size > 1:
        torchrun = Path(opts.python).parent / "torchrun"
        launcher = [str(torchrun)] if torchrun.exists() else [opts.python, "-m", "torch.distributed.run"]
        if opts.nnodes > 1:  # static rendezvous at node 0's address; the same command on every machine
            rendezvous = [f"--nnodes={opts.nnodes}", f"--node_rank={opts.node_rank}",
                          f"--master_addr={opts.master_addr}", f"--master_port={opts.master_port}",
                          f"--rdzv_conf=timeout={opts.rdzv_timeout}"]
        else:
            rendezvous = ["--standalone"]
        return [*launcher, *rendezvous, f"--nproc_per_node={opts.gpus}", *args]
    return [opts.python, *args]


def evaluate_command(spec: RunSpec, opts: Options) -> list[str]:
    return [opts.python, "-m", "repro.evaluate", str(spec.run_dir(opts)), "--probe", probe_kind(spec, opts)]


def figure2_command(opts: Options) -> list[str]:
    data = opts.cifar10 or opts.data_dir
    command = [opts.python, "-m", "repro.linear_regime", "--data", data, "--out", str(opts.out / "figure2")]
    if not opts.cifar10 and opts.prepare_data == "auto":
        command.append("--download")
    return command


def check_command(opts: Options, experiments: list[str], rows: list[str] | None = None,
                  stem: str = "check") -> list[str]:
    command = [opts.python, "-m", "repro.check", "--results", str(opts.results), "--only", ",".join(experiments),
               "--variant", opts.variant, "--profile", opts.profile, "--save-as", stem]
    if rows:
        command += ["--rows", ",".join(rows)]
    return command


def full_check_command(opts: Options) -> list[str]:
    return [opts.python, "-m", "repro.check", "--results", str(opts.results)]


def report_command(opts: Options) -> list[str]:
    return [opts.python, "-m", "repro.report", "--results", str(opts.results)]


def collect_command(opts: Options, experiment: str) -> list[str]:
    return [opts.python, "-m", "repro.experiments", "collect", experiment, *option_args(opts)]


def option_args(opts: Options) -> list[str]:
    """The options again as command-line flags (for a printed `collect` line under --dry-run): the
    seeds and the profile (their defaults are the target's) and every other flag not at its default."""
    args = []
    for f in fields(Options):
        value = getattr(opts, f.name)
        if "help" in f.metadata and f.default is not False and (value != f.default or f.name in ("seeds", "profile")):
            text = shlex.join(value) if f.name == "overrides" else \
                " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
            args += ["--" + (f.metadata["flag"] or f.name).replace("_", "-"), text]
    return args
