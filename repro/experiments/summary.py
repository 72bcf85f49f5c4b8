"""What a target will cost, printed by `make -n TARGET` and at the start of every run (the `# plan:`
lines): distinct trainings and probes (a run shared by several targets counted once), GPU-hours
(repro/gpu_check/estimate.py, the project's one estimator: at the rate `make gpu-check` measured
when OUT/gpu-check holds one, else the range of its FLOP-based and anchor-based estimates),
downloads and disk. `make help-costs` prints the Makefile's HELP_COST lines (help_cost_lines).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from repro.experiments.data_steps import planned_data
from repro.experiments.experiment import Experiment
from repro.experiments.options import Options
from repro.experiments.plan import missing_reason, plan_runs, registered_methods
from repro.experiments.state import eval_state, planned_epochs, train_state
from repro.gpu_check.estimate import (EPOCH_FLOPS, Run, anchor_rate, flops_per_second, hours_text, measured_epoch,
                                     range_text, reference_note, reference_rate, runs_seconds)


@dataclass
class PlanSummary:
    target: str
    states: dict[str, str]             # run name -> new | resume | stopped | done | MISSING
    probes: int                        # planned linear probes (runs with evaluate, not MISSING)
    probes_todo: int                   # of which not written yet
    hours_todo: float                  # FLOP-based GPU-hours of what is left (a run to resume counted whole)
    hours_total: float                 # of the whole plan, as if nothing were trained yet
    anchor_todo: float                 # the same two at the published anchor's rate (the range's other end)
    anchor_total: float
    measured: dict | None              # gpu-check's measurement (measured_epoch) and the hours at its rate
    unestimated: list[str]             # datasets without a FLOP count (not in the estimate)
    downloads: list[str]               # one entry per dataset to download, with its archive size
    by_hand: list[str]                 # absent datasets that cannot be downloaded
    ffcv_bytes: int                    # FFCV files to write (raw pixels; 0 for JPEG files, see ffcv_jpeg)
    ffcv_jpeg: list[str]               # datasets whose FFCV file is JPEG (size not estimated)
    cache: str = ""
    processes: list[str] = field(default_factory=list)   # what GPUS x NNODES > 1 changes (process_notes)

    def count(self, *states: str) -> int:
        return sum(state in states for state in self.states.values())


def summarize(exp: Experiment, opts: Options) -> PlanSummary:
    """The plan of a record under `opts`, each distinct run once (plan_runs): its trainings by state,
    its probes, estimated GPU-hours (repro/gpu_check/estimate.py at its reference rate), downloads
    and FFCV bytes (the dataset catalog). Reads run folders, never writes."""
    # imported here: state.py and data_steps.py import this module

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
    hours = {name: (runs_seconds(todo, rate)["hours"], runs_seconds(whole, rate)["hours"])
             for name, rate in (("flop", reference_rate()), ("anchor", anchor_rate()))}
    measured = measured_epoch(Path(opts.out) / "gpu-check" / "gpu_check.json")
    if measured:
        rate = flops_per_second(measured["cifar10_epoch_s"])
        measured = {**measured, "todo": runs_seconds(todo, rate)["hours"], "total": runs_seconds(whole, rate)["hours"]}
    data = planned_data([s for s in specs if states[s.name] != "MISSING"], opts)
    return PlanSummary(exp.name, states, probes, probes_todo, *hours["flop"], *hours["anchor"], measured,
                       sorted(unestimated), data["downloads"], data["by_hand"], data["ffcv_bytes"], data["ffcv_jpeg"],
                       opts.cache, process_notes(specs, states, opts))


def process_notes(specs, states: dict[str, str], opts: Options) -> list[str]:
    """Under GPUS x NNODES > 1: the runs whose loss batch changes with the split (NOT-COMPARABLE,
    plan.per_process_loss_batch), and that the linear probes run as one process."""
    if opts.world_size == 1:
        return []
    changed = [s.name for s in specs if states[s.name] != "MISSING" and "train.loss_batch=" in " ".join(s.standard)]
    notes = []
    if changed:
        notes.append(f"{len(changed)} runs train on {opts.world_size} processes with a per-process loss batch other "
                     f"than the paper's, so their results are NOT-COMPARABLE (folders -lb<N>): {', '.join(changed)}")
    if any(s.evaluate for s in specs):
        notes.append(f"the linear probes run as one process on one GPU (repro.evaluate is not data-parallel): "
                     f"{opts.world_size - 1} of the {opts.world_size} GPUs wait during each probe")
    return notes


def cost_label(summary: PlanSummary) -> str:
    """`make help`'s cost of a target: 'est. 10.5-114 GPU-h, 36 runs' (the range of the whole plan)."""
    return f"est. {range_text(summary.hours_total, summary.anchor_total)} GPU-h, {len(summary.states)} runs"


def help_cost_lines(experiments: Iterable[Experiment]) -> list[str]:
    """The Makefile's HELP_COST_<target> lines of the records with the paper's setting, at the
    default variables (nothing trained yet)."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = Options(out=Path(tmp) / "runs")
        return [f"HELP_COST_{e.name} := " + (cost_label(summarize(e, opts)) if e.trains or e.parts
                                             else "CPU, no training run")
                for e in experiments if "paper" in e.profiles]


def summary_lines(summary: PlanSummary) -> list[str]:
    """The summary as `#` lines (the runner's comment style), first line `plan: <target>: ...`."""
    s = summary
    lines = [f"plan: {s.target}: {len(s.states)} distinct training runs ({s.count('new')} new, "
             f"{s.count('resume')} to resume, {s.count('done', 'stopped')} done, {s.count('MISSING')} MISSING), "
             f"{s.probes} linear probes ({s.probes_todo} to run); a run shared by several targets counts once"]
    estimate = f"{range_text(s.hours_todo, s.anchor_todo)} left ({range_text(s.hours_total, s.anchor_total)} " \
        "for the whole plan)"
    if s.measured:
        m = s.measured
        lines.append(f"plan: GPU-hours: {hours_text(m['todo'])} left ({hours_text(m['total'])} for the whole plan) on "
                     f"one {m['gpu']} at the rate `make gpu-check` measured on {m['date']} (a CIFAR-10 epoch in "
                     f"{m['cifar10_epoch_s']:.1f} s; {m['path']}); the estimates before measuring: {estimate}")
    else:
        lines.append(f"plan: GPU-hours: {estimate}, {reference_note()}")
    if s.unestimated:
        lines.append(f"plan: no FLOP count for {', '.join(s.unestimated)}: their runs are not in the GPU-hours")
    lines.append("plan: downloads: " + ("; ".join(s.downloads) if s.downloads else "none"))
    for item in s.by_hand:
        lines.append(f"plan: by hand: {item}")
    disk = f"~{s.ffcv_bytes / 1e9:.2f} GB of FFCV files into {s.cache}/ffcv" if s.ffcv_bytes else "no FFCV files to write"
    if s.ffcv_jpeg:
        disk += f" (+ {', '.join(s.ffcv_jpeg)} as JPEG: size depends on the images, docs/data.md)"
    lines.append(f"plan: disk: {disk}; plus a checkpoint per run in its run folder")
    lines += [f"plan: processes: {note}" for note in s.processes]
    return [f"# {line}" for line in lines]

