"""Stop signals through the whole chain: SIGTERM at `make`'s PID (what `docker stop` with --init and
a scheduler's pre-emption send) reaches the trainer (one process, or torchrun and its ranks) via the
experiments runner; the trainer checkpoints at its step; nothing is left running; the same command
resumes to weights bit-identical to an uninterrupted run. Tiny digits runs on CPU (tests/test_targets.py)."""
import json
import os
import shlex
import signal
import subprocess
import time

import pytest

from repro.experiments.options import Options
from repro.experiments.run import Runner
from repro.experiments.run import STOP, alive, descendants
from repro.faults import final_weights, identical
from tests.conftest import ROOT
from tests.test_targets import TINY, make

SUBSET, EPOCHS = 768, 2           # 768 of the digits' training images, 2 epochs
STEPS_PER_EPOCH = SUBSET // 64     # at batch 64 (drop_last): 12
RUN = f"cifar10-frossl-seed0-e{EPOCHS}-x"  # the run folder's prefix (EPOCHS, OVERRIDES hash)


def table2_args(out, *overrides):
    return ["table2", f"OUT={out}", "PREPARE_DATA=none", "METHODS=frossl", "DATASETS=cifar10", f"EPOCHS={EPOCHS}",
            "PROBE=cached", f"OVERRIDES={' '.join([TINY, f'data.subset={SUBSET}', *overrides])}"]


def make_command(*args):
    return ["make", "--no-print-directory", *args, "SETUP=true"]   # as tests/test_targets.py's make()


def start_and_stop(args, out, sig=signal.SIGTERM, after_step=5):
    """Start `make ARGS` in its own session, wait for a metrics line at `after_step` or later, send
    `sig` to make's PID only; returns (make's returncode, its output, the processes seen below make)."""
    env = {**os.environ, "MAKEFLAGS": "", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(make_command(*args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline, below = time.time() + 240, {}
    while time.time() < deadline:
        below.update(descendants(process.pid))
        metrics = [p / "metrics.jsonl" for p in out.glob(RUN + "*")]
        lines = [json.loads(ln) for m in metrics if m.exists() for ln in m.read_text().splitlines() if ln.strip()]
        if any(r.get("step", 0) >= after_step for r in lines):
            break
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    below.update(descendants(process.pid))
    process.send_signal(sig)
    output, _ = process.communicate(timeout=240)
    return process.returncode, output, below


def run_folder(out):
    folders = sorted(out.glob(RUN + "*"))
    assert len(folders) == 1, folders
    return folders[0]


def reference_weights(output, reference_out):
    """The uninterrupted run: the train command the runner printed (python or torchrun), into another
    folder (cheaper than a second `make table2`: no probe, no check)."""
    line = next(ln for ln in output.splitlines() if " -m repro.train " in ln)
    command = [f"out_dir={reference_out}" if a.startswith("out_dir=") else a for a in shlex.split(line)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_weights(run_folder(reference_out))


def test_sigterm_at_make_checkpoints_mid_epoch_leaves_nothing_and_resumes_identically(tmp_path):
    import torch
    out = tmp_path / "runs"
    code, output, below = start_and_stop(table2_args(out), out)
    # make waits for the runner, which waits for the trainer, then dies of the signal itself: the
    # shell (and `docker run` with --init) reports 128 + 15 = 143; Python sees -15
    assert code == -signal.SIGTERM, output[-3000:]
    assert "SIGTERM: passed to pid" in output and "SIGTERM: target stopped" in output, output[-3000:]
    assert len(below) >= 2, below           # the runner and the trainer
    assert not alive(below), f"left running: {alive(below)}"
    run = run_folder(out)
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 5 <= step < EPOCHS * STEPS_PER_EPOCH and step % STEPS_PER_EPOCH, step   # a step inside an epoch
    assert not (run / "pretrain.json").exists() and not (out / "results").exists()   # stopped before the probe

    again = make(*table2_args(out))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming {run}" in again.stderr and "run 1/1 done" in again.stdout
    assert identical(reference_weights(output, tmp_path / "reference"), final_weights(run))


# slow (about 110 s on 2 cores: three 2-process chains); the default run keeps the same chain with one
# process (the test above)
@pytest.mark.slow
def test_sigterm_at_make_reaches_every_torchrun_rank(tmp_path):
    """GPUS=2 without CUDA: torchrun with 2 gloo processes. SIGTERM at make's PID: rank 0 writes a
    checkpoint, torchrun and both ranks end, nothing is left; the same command then finishes with
    the weights of an uninterrupted 2-process run."""
    import torch
    out = tmp_path / "runs"
    args = [*table2_args(out, "train.log_every=1"), "GPUS=2"]   # a metrics line per step
    code, output, below = start_and_stop(args, out)
    assert code == -signal.SIGTERM, output[-3000:]
    assert len(below) >= 4, below          # the runner, torchrun, 2 ranks
    assert not alive(below), f"left running: {alive(below)}"
    run = run_folder(out)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] >= 5
    again = make(*args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert sorted(p.name for p in run.glob("checkpoint*")) == ["checkpoint.pt"]   # no rank's leftovers
    assert (run / "pretrain.json").exists()
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]
    # one process wrote the log, once per step: resumed, nothing lost, nothing repeated
    assert steps == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    # and the two ranks, stopped and resumed, end where an uninterrupted 2-process run ends
    assert identical(reference_weights(output, tmp_path / "reference"), final_weights(run))


# ---- the runner alone, with a stand-in command (seconds) ------------------------------------------

STUBBORN = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: print('got TERM', flush=True))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")


def test_a_child_that_ignores_the_signal_is_killed_after_the_grace_period(tmp_path, capsys):
    """A step that does not end within stop_grace is SIGKILLed with its group; the target then
    raises Preempted (exit 143 through run_cli) and nothing starts after it."""
    import sys
    import threading

    from repro.cli import Preempted
    runner = Runner(Options(out=tmp_path))
    runner.stop_grace = 1.0
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    started = time.monotonic()
    with STOP:
        timer.start()
        with pytest.raises(Preempted) as stop:
            runner.run([sys.executable, "-c", STUBBORN])
        with pytest.raises(Preempted):   # nothing new starts once a stop signal came
            runner.run([sys.executable, "-c", "print('must not run')"])
    assert stop.value.signum == signal.SIGTERM and time.monotonic() - started < 20
    said = capsys.readouterr().out
    assert "got TERM" in said and "SIGKILL to its group" in said and "must not run\n" not in said


def test_progress_counts_distinct_runs_and_estimates_from_trained_ones():
    from repro.experiments.run import Progress
    progress = Progress(3)
    assert progress.line("a", "start").startswith("run 1/3 start (a): elapsed 0:00:")
    assert progress.line("a", "start").endswith("ETA after the first trained run")
    done = progress.line("a", "done", seconds=100)
    assert done.startswith("run 1/3 done (a)") and "ETA 0:03:20 (2 runs left x 0:01:40, the mean of 1 trained)" in done
    skipped = progress.line("b", "skipped")          # found done: no time of its own
    assert skipped.startswith("run 2/3 skipped (b)") and "ETA 0:01:40 (1 runs left" in skipped
    assert progress.line("a", "done").startswith("run 1/3")   # a run shared by two parts keeps its number


def test_the_eta_counts_each_run_with_its_evaluation_and_not_a_failed_run(tmp_path, monkeypatch, capsys):
    """run_specs times a run from its training's start to its evaluation's end (a probe is part of
    what is left to wait for), and a run that fails (a diverged sweep rate) adds no time: it
    stopped early. A fake clock and a fake runner: 100 s to train, 20 s to evaluate, 5 s to fail."""
    import json

    from repro.experiments import run as run_module
    from repro.experiments.run import Progress, run_specs
    from repro.experiments.state import planned_epochs
    from repro.experiments.table import EXPERIMENTS
    opts = Options(profile="claims", out=tmp_path, seeds=(0,), prepare_data="none", probe="cached")
    specs = run_module.plan_runs(EXPERIMENTS["claims"], opts)[:3]
    failing = specs[1].name
    clock = [0.0]
    monkeypatch.setattr(run_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(run_module, "data_steps", lambda specs, opts: [])

    def fake_run(command, **_):
        name = next(a.split("=", 1)[1] for a in command if a.startswith("name=")) if "repro.train" in command else None
        if name == failing:
            clock[0] += 5
            return 1
        if name:
            spec = next(s for s in specs if s.name == name)
            spec.run_dir(opts).mkdir(parents=True)
            (spec.run_dir(opts) / "pretrain.json").write_text(json.dumps({"epochs": planned_epochs(spec, opts)}))
        clock[0] += 100 if name else 20
        return 0

    runner = Runner(opts, Progress(len(specs)))
    monkeypatch.setattr(runner, "run", fake_run)
    run_specs(specs, opts, runner)
    lines = [line for line in capsys.readouterr().out.splitlines() if " run " in line or line.startswith("run ")]
    assert any(f"run 2/3 failed ({failing})" in line and "the mean of 1 trained" in line
               and "ETA 0:02:00 (1 runs left x 0:02:00" in line for line in lines), lines
    assert any("run 3/3 done" in line and "ETA 0:00:00 (0 runs left x 0:02:00, the mean of 2 trained)" in line
               for line in lines), lines


def test_ctrl_c_in_a_runner_used_alone_ends_its_child(tmp_path, capsys):
    """Outside run_target (no STOP handlers) Ctrl-C is a KeyboardInterrupt in the runner: its
    child, in its own session and so not reached by the terminal, is sent SIGTERM and waited for."""
    import sys
    import threading
    runner = Runner(Options(out=tmp_path))
    marker = tmp_path / "child.pid"
    script = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        runner.run([sys.executable, "-c", script])
    pid = int(marker.read_text())
    assert not os.path.exists(f"/proc/{pid}")   # ended and reaped


@pytest.mark.parametrize("catcher", ["trainer", "runner"])
def test_a_stop_signal_ignored_at_start_stays_ignored(catcher):
    """`nohup make table2 &` ignores SIGHUP (and a script's background job SIGINT): closing the terminal
    must not stop the run. The trainer's and the runner's handlers leave such a signal alone and still
    catch the others."""
    from repro.cli import StopSignals

    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # as nohup starts a process (conftest restores it)
    with (StopSignals() if catcher == "trainer" else STOP) as stop:
        os.kill(os.getpid(), signal.SIGHUP)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert stop.signum is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
