"""Checks before a target prepares, trains or writes anything; each failure is one UserError line
(exit 2) naming the problem and the fix. Runs whose config or method is not written yet are
MISSING, not errors."""
from __future__ import annotations

from repro.cli import UserError
from repro.experiments.options import ROOT, Options
from repro.experiments.plan import RunSpec, missing_reason, registered_methods


def planned_config(spec: RunSpec, opts: Options):
    """The config a run will train with (its file plus every override), as the trainer will load it;
    a bad key or value is the trainer's one-line ConfigError, naming the run and what to fix."""
    from repro.config import ConfigError, load_config
    try:
        return load_config(spec.config, spec.overrides(opts))
    except ConfigError as err:
        culprit = str(spec.config.relative_to(ROOT)) if spec.config.is_relative_to(ROOT) else str(spec.config)
        if spec.user:
            try:
                load_config(spec.config, [o for o in spec.overrides(opts) if o not in spec.user])
                culprit = "OVERRIDES"
            except ConfigError:
                pass
        raise UserError(f"{err} (run {spec.name}): fix {culprit}; nothing was started") from None


def check_batch_split(specs: list[RunSpec], opts: Options) -> None:
    """Every run's global batch (data.batch_size, overrides included) divides over its processes."""
    for spec in specs:
        if not spec.config.exists():
            continue
        batch = planned_config(spec, opts).data.batch_size
        if batch % opts.world_size == 0:
            continue
        if opts.nnodes > 1:
            what = f"NNODES x GPUS = {opts.nnodes} x {opts.gpus} = {opts.world_size}"
            choices = [g for g in range(1, 9) if batch % (g * opts.nnodes) == 0]
        else:
            what, choices = f"GPUS={opts.gpus}", [g for g in range(1, 9) if batch % g == 0]
        raise UserError(f"{what} does not divide the global batch of {batch} of run {spec.name} "
                        f"({spec.config.name}; the paper: 4 GPUs x 56 = 224): choose GPUS in {choices}"
                        + (f" with NNODES={opts.nnodes}" if opts.nnodes > 1 else "")
                        + f", or a data.batch_size divisible by {opts.world_size}")


def check_devices(configs: list, opts: Options) -> None:
    """GPUS is what this machine runs per run: not more than its visible CUDA devices (CUDA present);
    without CUDA (or with device=cpu) GPUS > 1 means that many CPU processes (gloo)."""
    import torch
    on_cpu = bool(configs) and all(cfg.device == "cpu" for cfg in configs)
    if torch.cuda.is_available() and not on_cpu:
        visible = torch.cuda.device_count()
        if opts.gpus > visible:
            raise UserError(f"GPUS={opts.gpus} but this machine has {visible} visible CUDA device(s): set "
                            f"GPUS={visible} or less (CUDA_VISIBLE_DEVICES limits what is visible)")
    elif opts.gpus > 1:
        why = "the runs have device=cpu" if on_cpu else "no CUDA device on this machine"
        print(f"# {why}: GPUS={opts.gpus} runs {opts.gpus} CPU processes per run (gloo), not GPUs", flush=True)


def preflight(specs: list[RunSpec], opts: Options) -> None:
    """Before anything is prepared, trained or written: every planned run's config loads with its
    overrides, its global batch divides by the number of processes, and (not in --dry-run) GPUS
    fits the visible CUDA devices. `specs`: the whole target's distinct runs (plan.plan_runs)."""
    methods = registered_methods()
    planned = [s for s in specs if not missing_reason(s, methods)]
    configs = [planned_config(spec, opts) for spec in planned]
    check_batch_split(planned, opts)
    if not opts.dry_run and planned:
        check_devices(configs, opts)
