"""Running a target: its data steps, then each run trained (new), resumed, stopped or skipped,
evaluated, collected and checked. The same code for every record of table.py."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import replace

from repro.cli import Preempted, StopSignals, UserError
from repro.experiments.commands import (check_command, collect_command, evaluate_command, full_check_command,
                                        report_command, train_command)
from repro.experiments.data_steps import data_steps
from repro.experiments.experiment import Experiment
from repro.experiments.options import ROOT, Options
from repro.experiments.plan import RunSpec, missing_reason, narrow, plan_runs, registered_methods
from repro.experiments.preflight import preflight
from repro.experiments.summary import summarize, summary_lines
from repro.experiments.results import collect
from repro.experiments.state import eval_state, online_by_epoch, train_state


STOP_GRACE_SECONDS = 120.0   # after a stop signal, how long a step's processes get before SIGKILL: a
                             # trainer finishes its step, and at an epoch end its online validation,
                             # then writes its checkpoint (ImageNet: a validation pass, ~1 GB written)


def check_stop(what: str) -> None:
    """Raise Preempted (exit 128 + signal) if a stop signal came: nothing new starts after one."""
    if STOP.signum:
        raise Preempted(STOP.signum, f"{signal.Signals(STOP.signum).name}: target stopped {what}; "
                                     f"checkpoints are kept: run the same command again to resume")


# stop signals received by this process (the top of a target: `make` forwards SIGTERM to it, a
# terminal sends SIGINT/SIGHUP to its whole foreground group). Process-wide: a union's parts share it
STOP = StopSignals()


def process_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (parent pid, process group, start time, state) of every process, from /proc (Linux;
    elsewhere {}: only the process groups are signalled)."""
    table = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()   # after "pid (comm)": field 3 on
        except (OSError, IndexError):
            continue   # ended while we read
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[19], fields[0])
    return table


def descendants(pid: int, table: dict | None = None) -> dict[int, str]:
    """Every live process below `pid` (torchrun's ranks, loader workers, ...): pid -> start time (to
    tell a pid that was reused apart)."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for child, (parent, _, _, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if table[child][3] != "Z":
            found[child] = table[child][2]
        todo += children.get(child, [])
    return found


def alive(processes: dict[int, str]) -> dict[int, str]:
    """Those of `processes` (pid -> start time) still running (not ended, not a zombie, pid not reused)."""
    table = process_table()
    return {pid: start for pid, start in processes.items()
            if pid in table and table[pid][2] == start and table[pid][3] != "Z"}


def send(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Runner:
    """Prints each command; runs it unless dry-run; remembers failures. Each command runs in its own
    session (process group); a stop signal is passed to it and the target then ends (STOP)."""

    poll_seconds = 5.0   # how often a run that must stop at an epoch is looked at

    def __init__(self, opts: Options, progress: Progress | None = None):
        self.opts = opts
        self.failures: list[str] = []
        self.progress = progress
        self.stop_grace = STOP_GRACE_SECONDS

    def say(self, text: str) -> None:
        print(f"# {text}", flush=True)

    def run(self, command: list[str], *, stop_when=None, critical: bool = False) -> int:
        """critical: the caller stops on a failure (no "continuing" line). A stop signal, before or
        while the command runs, raises Preempted once the command has ended."""
        print(shlex.join(command), flush=True)
        if self.opts.dry_run:
            return 0
        what = shlex.join(command[1:4])
        check_stop(f"before `{what} ...`")
        code = self._run(command, stop_when)
        check_stop(f"after `{what} ...` ended (exit {code})")
        if code != 0:
            self.failures.append(f"exit {code}: {shlex.join(command)}")
            print(f"# FAILED (exit {code})" + ("" if critical else "; continuing with the next step"), flush=True)
        return code

    def _run(self, command: list[str], stop_when) -> int:
        """Run in a new session. A stop signal goes to the command's own process only (the trainer, or
        torchrun, which passes it to its ranks): a signal to the whole group would also end the data
        loader's worker processes, which the trainer reports as a crash instead of checkpointing.
        A second signal, or `stop_grace` seconds, then SIGKILLs the group and every process below it.
        stop_when(): checked every poll_seconds; once true, SIGTERM as planned (Table 3's epoch)."""
        process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
        forwarded, deadline, planned_stop, next_poll = None, None, False, time.monotonic() + self.poll_seconds
        below: dict[int, str] = {}    # the command's processes, seen while it runs
        while True:
            try:
                code = process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            except BaseException:   # Ctrl-C without STOP's handlers (a Runner used alone), an error
                below.update(descendants(process.pid))
                send([process.pid], signal.SIGTERM)
                try:
                    process.wait(timeout=self.stop_grace)
                except subprocess.TimeoutExpired:
                    kill_group(process.pid)
                    process.wait()
                self.reap(process.pid, below)
                raise
            now = time.monotonic()
            if STOP.signum and forwarded is None:
                forwarded, deadline = STOP.signum, now + self.stop_grace
                below = descendants(process.pid)
                self.say(f"{signal.Signals(forwarded).name}: passed to pid {process.pid}; waiting up to "
                         f"{self.stop_grace:.0f} s for it to checkpoint (a second signal kills it now)")
                send([process.pid], forwarded)
            elif stop_when is not None and not planned_stop and forwarded is None and now >= next_poll:
                next_poll = now + self.poll_seconds
                if stop_when():
                    planned_stop, deadline = True, now + self.stop_grace
                    send([process.pid], signal.SIGTERM)
            if deadline is not None and (STOP.count > 1 or now >= deadline):
                below.update(descendants(process.pid))
                self.say(f"pid {process.pid} still running: SIGKILL to its group and {len(below)} processes below it")
                kill_group(process.pid)
                send(below, signal.SIGKILL)
                deadline = float("inf")
        if forwarded is not None or planned_stop:
            self.reap(process.pid, below)
        if planned_stop and not STOP.signum:
            print("# stopped with SIGTERM as planned (checkpoint kept; a later run resumes it)", flush=True)
            return 0
        return code

    def reap(self, pgid: int, below: dict[int, str]) -> None:
        """After a stopped command ended: what is left of it (its group, the processes seen below it,
        e.g. ranks in their own sessions) gets the grace period, then SIGKILL."""
        kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        while alive(below) and time.monotonic() < deadline and STOP.count < 2:
            time.sleep(0.2)
        kill_group(pgid)
        send(alive(below), signal.SIGKILL)

    def report_failures(self) -> None:
        if self.failures:
            print("# failed steps:\n" + "\n".join(f"#   {f}" for f in self.failures), flush=True)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass   # the group is empty: every process of it has ended


class Progress:
    """The whole target's progress over its distinct training runs: `run 7/42`, elapsed time, and an
    ETA from the runs that trained so far (their mean wall time, training and evaluation, x the runs
    left; skipped runs cost 0, and a failed run's time is not counted: it stopped early)."""

    def __init__(self, total: int):
        self.total = total
        self.start = time.monotonic()
        self.index: dict[str, int] = {}   # run name -> its number (a run shared by parts keeps one)
        self.finished: set[str] = set()
        self.trained_seconds: list[float] = []

    def line(self, name: str, event: str, seconds: float | None = None) -> str:
        number = self.index.setdefault(name, len(self.index) + 1)
        if event != "start":
            self.finished.add(name)
            if seconds is not None:
                self.trained_seconds.append(seconds)
        left = self.total - len(self.finished)
        if self.trained_seconds:
            mean = sum(self.trained_seconds) / len(self.trained_seconds)
            eta = f"ETA {clock(mean * left)} ({left} runs left x {clock(mean)}, the mean of {len(self.trained_seconds)} trained)"
        else:
            eta = "ETA after the first trained run"
        return f"run {number}/{self.total} {event} ({name}): elapsed {clock(time.monotonic() - self.start)}, {eta}"


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
        if opts.dry_run and runner.progress is not None:   # a run shared by several parts: listed once
            if spec.name in runner.progress.index:
                runner.say(f"{label}: listed above (shared with an earlier part), trained once")
                continue
            runner.progress.index[spec.name] = len(runner.progress.index) + 1
        reason = missing_reason(spec, methods)
        if reason:
            runner.say(f"{label}: MISSING ({reason})")
            continue
        state = train_state(spec, opts)
        progress = runner.progress if not opts.dry_run else None
        if state in ("done", "stopped"):
            runner.say(f"{label}: trained ({state}), skipped")
            if progress and spec.name not in progress.finished:
                runner.say(progress.line(spec.name, "skipped"))
        else:
            runner.say(f"{label}: {'train' if state == 'new' else 'resume'}"
                       + (f" until epoch {spec.stop_at_epoch} is validated" if spec.stop_at_epoch else ""))
            run_dir = spec.run_dir(opts)
            stop = (lambda d=run_dir, e=spec.stop_at_epoch: max(online_by_epoch(d), default=0) >= e) \
                if spec.stop_at_epoch else None
            if progress:
                runner.say(progress.line(spec.name, "start"))
            started = time.monotonic()
            code = runner.run(train_command(spec, opts), stop_when=stop)
            if code != 0:
                if progress:   # a run that stopped early says nothing of a whole run's time: no seconds
                    runner.say(progress.line(spec.name, "failed"))
                continue
        if spec.evaluate:
            if opts.nnodes > 1:  # every node trains in lock-step; node 0 evaluates once all are trained
                evaluate_later.append((spec, label))
            else:
                evaluate_run(spec, label, opts, runner)
        if progress and state not in ("done", "stopped"):   # its time: training and evaluation
            runner.say(progress.line(spec.name, "done", time.monotonic() - started))
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


def run_target(exp: Experiment, opts: Options, progress: Progress | None = None) -> int:
    """Run one record; returns the exit status (1 on a FAIL in its check or a failed step). A stop
    signal (SIGTERM, SIGINT, SIGHUP) reaches the step running then, and ends the target with
    Preempted once that step has ended: exit 128 + signal through repro.cli.run_cli."""
    with STOP:
        code = _run_target(exp, opts, progress)
        check_stop("between steps")
    return code


def _run_target(exp: Experiment, opts: Options, progress: Progress | None) -> int:
    if exp.fixed_setting and (opts.epochs is not None or opts.overrides):
        # Its result keeps the paper's name (the collector judges it by the script's own settings), so
        # `make all EPOCHS=N` does not file a paper-setting result under the EPOCHS variant.
        print(f"# {exp.name}: EPOCHS and OVERRIDES apply to training runs only, not to {exp.name}", flush=True)
        opts = replace(opts, epochs=None, overrides=())
    if exp.parts:
        return run_union(exp, opts)
    if opts.profile not in exp.profiles:
        raise UserError(f"PROFILE={opts.profile}: {exp.name} runs only with PROFILE={' or '.join(exp.profiles)}")
    runner = Runner(opts, progress)
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
        if progress is None:    # this record is the whole target: its checks, its plan, its run count
            planned = preflight(specs, opts)  # before anything runs: every check of preflight.py
            say_plan(exp, opts)
            runner.progress = Progress(len(planned))
        run_specs(specs, opts, runner)
    if exp.note:
        runner.say(exp.note)
    if opts.node_rank > 0:
        runner.say(f"node {opts.node_rank} of {opts.nnodes}: training done; node 0 collects and checks")
        runner.report_failures()
        return int(bool(runner.failures))
    for record in exp.result_records:
        if opts.dry_run:
            runner.run(collect_command(opts, record.name))
        else:
            collect(record, opts)
    rows = list(exp.rows) if exp.check_own_rows else ((list(opts.methods) or None) if exp.rows else None)
    code = runner.run(check_command(opts, list(exp.result_names), rows, stem=f"check_{exp.name}"))
    runner.report_failures()
    return int(bool(code or runner.failures))


def say_plan(exp: Experiment, opts: Options) -> None:
    """The `# plan:` lines (distinct trainings and probes, estimated GPU-hours, disk, downloads)."""
    for line in summary_lines(summarize(exp, opts)):
        print(line, flush=True)


def run_union(exp: Experiment, opts: Options) -> int:
    """A union record (`all`): the whole plan checked first, then each part with the options that
    apply to it (its own check at its end), then the full check and the report on node 0."""
    runner = Runner(opts)
    planned = preflight(plan_runs(exp, opts), opts)   # every part's runs, before the first one starts
    say_plan(exp, opts)
    progress = Progress(len(planned))                # each distinct run counted once
    code = 0
    for part in exp.parts:
        part_opts = narrow(part, opts)
        if part_opts is None:
            runner.say(f"{part.name}: nothing selected by METHODS/DATASETS/PROFILE, skipped")
            continue
        code |= _run_target(part, part_opts, progress)
    if opts.node_rank > 0:
        runner.say(f"node {opts.node_rank}: the full check and the report run on node 0")
        return int(bool(code or runner.failures))
    runner.say("the full check, then the report")
    code |= runner.run(full_check_command(opts)) != 0
    runner.run(report_command(opts))
    return int(bool(code or runner.failures))
