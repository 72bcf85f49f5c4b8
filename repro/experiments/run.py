"""Running a target: its data steps, then each run trained (new), resumed, stopped or skipped,
evaluated, collected and checked. The same code for every record of table.py."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import replace

from repro.cli import UserError
from repro.experiments.commands import (check_command, collect_command, evaluate_command, full_check_command,
                                        report_command, train_command)
from repro.experiments.data_steps import data_steps
from repro.experiments.options import ROOT, Options
from repro.experiments.plan import RunSpec, missing_reason, narrow, plan_runs, registered_methods
from repro.experiments.preflight import preflight
from repro.experiments.results import collect
from repro.experiments.state import eval_state, online_by_epoch, train_state
from repro.experiments.table import EXPERIMENTS, Experiment


class Runner:
    """Prints each command; runs it unless dry-run; remembers failures."""

    poll_seconds = 5.0   # how often a run that must stop at an epoch is looked at

    def __init__(self, opts: Options):
        self.opts = opts
        self.failures: list[str] = []

    def say(self, text: str) -> None:
        print(f"# {text}", flush=True)

    def run(self, command: list[str], *, stop_when=None, critical: bool = False) -> int:
        """critical: the caller stops on a failure (no "continuing" line)."""
        print(shlex.join(command), flush=True)
        if self.opts.dry_run:
            return 0
        if stop_when is None:
            code = subprocess.call(command, cwd=ROOT)
        else:
            code = self._run_until(command, stop_when)
        if code != 0:
            self.failures.append(f"exit {code}: {shlex.join(command)}")
            print(f"# FAILED (exit {code})" + ("" if critical else "; continuing with the next step"), flush=True)
        return code

    def _run_until(self, command: list[str], stop_when) -> int:
        """Run, and end it with SIGTERM (the trainer checkpoints and exits) once stop_when() holds."""
        process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
        try:
            while process.poll() is None:
                if stop_when():
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait()
                    print("# stopped with SIGTERM as planned (checkpoint kept; a later run resumes it)", flush=True)
                    return 0
                time.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
        return process.returncode

    def report_failures(self) -> None:
        if self.failures:
            print("# failed steps:\n" + "\n".join(f"#   {f}" for f in self.failures), flush=True)


def run_specs(specs: list[RunSpec], opts: Options, runner: Runner) -> None:
    """Data steps, then each run in order: trained, resumed, stopped at its epoch or skipped; then
    evaluated (on node 0 after every run has trained, with several machines)."""
    methods = registered_methods()
    for description, command in data_steps(specs, opts):
        runner.say(description)
        if command and runner.run(command, critical=True) != 0:  # never train on missing data
            raise UserError(f"{description} failed (its error is above), nothing was trained: fix it "
                            f"(docs/data.md) or put the data in place by hand, then run the target again")
    evaluate_later: list[tuple[RunSpec, str]] = []
    for spec in specs:
        label = f"{spec.dataset}/{spec.row} seed {spec.seed} ({spec.name})"
        reason = missing_reason(spec, methods)
        if reason:
            runner.say(f"{label}: MISSING ({reason})")
            continue
        state = train_state(spec, opts)
        if state in ("done", "stopped"):
            runner.say(f"{label}: trained ({state}), skipped")
        else:
            runner.say(f"{label}: {'train' if state == 'new' else 'resume'}"
                       + (f" until epoch {spec.stop_at_epoch} is validated" if spec.stop_at_epoch else ""))
            run_dir = spec.run_dir(opts)
            stop = (lambda d=run_dir, e=spec.stop_at_epoch: max(online_by_epoch(d), default=0) >= e) \
                if spec.stop_at_epoch else None
            if runner.run(train_command(spec, opts), stop_when=stop) != 0:
                continue
        if spec.evaluate:
            if opts.nnodes > 1:  # every node trains in lock-step; node 0 evaluates once all are trained
                evaluate_later.append((spec, label))
            else:
                evaluate_run(spec, label, opts, runner)
    if evaluate_later and opts.node_rank == 0:
        runner.say("every run trained: node 0 evaluates them")
        for spec, label in evaluate_later:
            evaluate_run(spec, label, opts, runner)
    elif evaluate_later:
        runner.say(f"node {opts.node_rank}: evaluation runs on node 0")


def evaluate_run(spec: RunSpec, label: str, opts: Options, runner: Runner) -> None:
    if not opts.dry_run and train_state(spec, opts) != "done":
        runner.say(f"{label}: not finished, no evaluation")
    elif eval_state(spec, opts) == "done":
        runner.say(f"{label}: evaluated, skipped")
    else:
        runner.run(evaluate_command(spec, opts))


def run_target(target: str | Experiment, opts: Options) -> int:
    """Run one record; returns the exit status (1 on a FAIL in its check or a failed step)."""
    exp = EXPERIMENTS[target] if isinstance(target, str) else target
    if exp.fixed_setting and (opts.epochs is not None or opts.overrides):
        # Its result keeps the paper's name (the collector judges it by the script's own settings), so
        # `make all EPOCHS=N` does not file a paper-setting result under the EPOCHS variant.
        print(f"# {exp.name}: EPOCHS and OVERRIDES apply to training runs only, not to {exp.name}", flush=True)
        opts = replace(opts, epochs=None, overrides=())
    if exp.parts:
        return run_union(exp, opts)
    if opts.profile not in exp.profiles:
        raise UserError(f"PROFILE={opts.profile}: {exp.name} has only the paper's setting (it is cheap already)")
    runner = Runner(opts)
    runner.say(f"{exp.name}: out={opts.out} gpus={opts.gpus} profile={opts.profile}"
               + (f" nodes={opts.nnodes} node_rank={opts.node_rank} master={opts.master_addr}:{opts.master_port}"
                  if opts.nnodes > 1 else "")
               + (f" variant: {opts.variant} (NOT-COMPARABLE to the paper)" if opts.variant else ""))
    if exp.script is not None:
        if opts.node_rank > 0 and not exp.trains:
            runner.say(f"{exp.name}: one CPU process, run on node 0 (this is node {opts.node_rank})")
            return 0
        if (opts.out / exp.done_file).exists():
            runner.say(f"{exp.name}: done (delete <out>/{exp.done_file.split('/')[0]} to redo it)")
        else:
            runner.run(exp.script(opts))
    if exp.trains:
        specs = plan_runs(exp, opts)
        preflight(specs, opts)  # configs load, batches split, GPUS fits: before anything runs
        run_specs(specs, opts, runner)
    if exp.note:
        runner.say(exp.note)
    if opts.node_rank > 0:
        runner.say(f"node {opts.node_rank} of {opts.nnodes}: training done; node 0 collects and checks")
        runner.report_failures()
        return int(bool(runner.failures))
    for name in exp.result_names:
        if opts.dry_run:
            runner.run(collect_command(opts, name))
        else:
            collect(name, opts)
    rows = list(exp.rows) if exp.check_own_rows else ((list(opts.methods) or None) if exp.rows else None)
    code = runner.run(check_command(opts, list(exp.result_names), rows, stem=f"check_{exp.name}"))
    runner.report_failures()
    return int(bool(code or runner.failures))


def run_union(exp: Experiment, opts: Options) -> int:
    """A union record (`all`): the whole plan checked first, then each part with the options that
    apply to it (its own check at its end), then the full check and the report on node 0."""
    runner = Runner(opts)
    preflight(plan_runs(exp, opts), opts)   # every part's runs, before the first one starts
    code = 0
    for part in exp.parts:
        part_opts = narrow(part, opts)
        if part_opts is None:
            runner.say(f"{part.name}: nothing selected by METHODS/DATASETS/PROFILE, skipped")
            continue
        code |= run_target(part, part_opts)
    if opts.node_rank > 0:
        runner.say(f"node {opts.node_rank}: the full check and the report run on node 0")
        return int(bool(code or runner.failures))
    runner.say("the full check, then the report")
    code |= runner.run(full_check_command(opts)) != 0
    runner.run(report_command(opts))
    return int(bool(code or runner.failures))
