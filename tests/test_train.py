"""The trainer end to end on CPU: learning signal on real CIFAR-10, exact resume, bad input."""
import json
import subprocess
import sys

import pytest
import torch

from repro.config import load_config
from repro.evaluate import evaluate_run
from repro.train import Pretrainer, train
from tests.conftest import ROOT, crash_after_first_checkpoint

SMALL_MODEL = ["model.width=16", "model.proj_hidden_dim=256", "model.proj_output_dim=256",
               "data.num_workers=0", "eval.online_eval_every=0", "eval.probe_epochs=5"]


def cifar_config(root, out_dir, *overrides):
    return load_config(ROOT / "repro/configs/cifar10/frossl.yaml",
                       [f"data.root={root}", f"out_dir={out_dir}", "device=cpu", *SMALL_MODEL, *overrides])


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_frossl_lowers_its_loss_on_real_cifar10(cifar10_root, accept_rebuilt_cifar, tmp_path):
    # 2 epochs x 50 steps of batch 64 on 3,200 real images, a width-8 ResNet18 (the loss falls by
    # about 0.5 by step 100; the PIL augmentations, not the model, set the pace of a step here)
    cfg = cifar_config(cifar10_root, tmp_path, "name=learn", "data.subset=3200", "data.batch_size=64",
                       "model.width=8", "optim.epochs=2", "optim.warmup_epochs=1", "train.log_every=10")
    summary = train(cfg)
    records = [r for r in read_metrics(cfg.run_dir) if "loss" in r]
    assert summary["steps"] == 100 and len(records) == 10
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < first - 0.05, (first, last)
    # the run folder holds what a user needs
    for name in ("config.yaml", "env.json", "command.txt", "checkpoint.pt", "pretrain.json"):
        assert (cfg.run_dir / name).exists(), name
    result = evaluate_run(cfg.run_dir, probe="cached")
    assert 0.1 <= result["linear_top1"] <= 1 and (cfg.run_dir / "eval_cached.json").exists()


def _weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["method"]


def test_resume_after_crash_is_bit_identical(cifar10_root, accept_rebuilt_cifar, tmp_path, monkeypatch):
    args = ["data.subset=256", "data.batch_size=64", "optim.epochs=2", "optim.warmup_epochs=1", "model.width=8"]
    straight = cifar_config(cifar10_root, tmp_path, "name=straight", *args)
    train(straight)

    crashing = cifar_config(cifar10_root, tmp_path, "name=crashing", *args)
    crash_after_first_checkpoint(crashing, monkeypatch)
    assert torch.load(crashing.run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1
    train(crashing)  # the same command again: resumes after epoch 1

    a, b = _weights(straight.run_dir), _weights(crashing.run_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    # a finished run is left as it is
    before = (crashing.run_dir / "checkpoint.pt").stat().st_mtime_ns
    train(crashing)
    assert (crashing.run_dir / "checkpoint.pt").stat().st_mtime_ns == before


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "repro.train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("overrides, fragment", [
    (["optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["data.batch_size=0"], "data.batch_size"),
    (["data.batch_size=-8"], "data.batch_size"),
    (["data.dataset=cifar10", "data.root=/nonexistent/data", "data.download=false",
      "data.augmentations=symmetric", "model.in_channels=3"], "cifar-10-batches-py"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, overrides, fragment, capsys, monkeypatch):
    # in this process, through the command's own entry (run_cli); the command as a process: below
    from repro import cli, train as train_module
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_:
        cli.run_cli(train_module.main, ["repro/configs/demo.yaml", f"out_dir={tmp_path}", *overrides])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and fragment in errors[0], lines
    assert not (tmp_path / "demo").exists()  # nothing created for a rejected command


def test_the_train_command_says_bad_input_in_one_line_and_exits_2(tmp_path):
    result = run_cli("repro/configs/demo.yaml", f"out_dir={tmp_path}", "optim.lrr=1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown config key 'optim.lrr'"), result.stderr
    assert not (tmp_path / "demo").exists()


def test_a_different_experiment_in_the_same_folder_is_refused(tmp_path):
    from repro.checkpoint import prepare_run_dir

    first = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path}"])
    prepare_run_dir(first)
    saved = (first.run_dir / "config.yaml").read_text()
    result = run_cli("repro/configs/demo.yaml", f"out_dir={tmp_path}", "optim.lr=0.5")
    assert result.returncode == 2
    assert f"holds a different experiment (optim.lr: {first.optim.lr} -> 0.5)" in result.stderr
    assert (first.run_dir / "config.yaml").read_text() == saved


def test_batch_not_divisible_by_world_size_is_refused(tmp_path):
    import os
    env = {**os.environ, "WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}
    result = subprocess.run([sys.executable, "-m", "repro.train", "repro/configs/demo.yaml", f"out_dir={tmp_path}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert result.returncode == 2
    assert "data.batch_size=256 does not divide over 3 processes" in result.stderr.strip().splitlines()[-1]


def test_corrupt_checkpoint_is_a_clear_error_and_left_alone(tmp_path):
    from repro.checkpoint import prepare_run_dir

    cfg = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path}"])
    prepare_run_dir(cfg)
    (cfg.run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = run_cli("repro/configs/demo.yaml", f"out_dir={tmp_path}")
    assert result.returncode == 2
    assert "cannot be read" in result.stderr and "delete it" in result.stderr
    assert (cfg.run_dir / "checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_trainer_restarts_the_cosine_every_restart_epochs(tmp_path):
    # the CPU demo's digits: 160 training images / batch 32 = 5 steps per epoch; restarts every epoch
    from repro.optim import scale_lr, warmup_cosine_lr

    cfg = load_config(ROOT / "repro/configs/demo.yaml", [
        f"out_dir={tmp_path}", "name=sgdr", "model.width=8", "model.proj_hidden_dim=64", "model.proj_output_dim=64",
        "data.subset=160", "data.batch_size=32", "optim.epochs=3", "optim.warmup_epochs=0",
        "optim.restart_epochs=1", "train.log_every=1"])
    train(cfg)
    records = [r for r in read_metrics(cfg.run_dir) if "lr" in r]
    assert [r["step"] for r in records] == list(range(1, 16))
    base_lr = scale_lr(cfg.optim.lr, cfg.data.batch_size)
    expected = [warmup_cosine_lr(r["step"] - 1, base_lr=base_lr, total_steps=15, warmup_steps=0,
                                 min_lr=cfg.optim.min_lr, restart_steps=5) for r in records]
    assert [r["lr"] for r in records] == pytest.approx(expected, rel=1e-12)
    assert [r["lr"] for r in records][::5] == pytest.approx([base_lr] * 3, rel=1e-12)   # each epoch restarts


TINY_DEMO = ["model.width=8", "model.proj_hidden_dim=64", "model.proj_output_dim=64", "optim.epochs=2",
             "train.log_every=1"]


def test_a_stop_signal_checkpoints_at_the_step_raises_preempted_and_resumes_identically(tmp_path, monkeypatch):
    import os
    import signal as signals

    from repro import train as train_module
    from repro.cli import Preempted

    straight = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path}", "name=straight", *TINY_DEMO])
    train(straight)
    stopped = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path}", "name=stopped", *TINY_DEMO])
    real_set_lr = train_module.set_lr

    def hang_up_at_step_3(optimizer, step, **schedule):
        if step == 3:  # SIGHUP (a closed terminal) arrives during the fourth step
            os.kill(os.getpid(), signals.SIGHUP)
        return real_set_lr(optimizer, step, **schedule)

    monkeypatch.setattr(train_module, "set_lr", hang_up_at_step_3)
    with pytest.raises(Preempted) as stop:
        train(stopped)
    assert stop.value.signum == signals.SIGHUP and "re-run the same command to resume" in str(stop.value)
    assert torch.load(stopped.run_dir / "checkpoint.pt", weights_only=True)["step"] == 4   # mid-epoch (5 per epoch)
    assert signals.getsignal(signals.SIGHUP) is signals.SIG_DFL   # the trainer's handlers are removed
    monkeypatch.setattr(train_module, "set_lr", real_set_lr)
    train(stopped)
    a, b = _weights(straight.run_dir), _weights(stopped.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(stopped.run_dir) if "loss" in r] == list(range(1, 11))


def test_the_cli_turns_preempted_into_exit_128_plus_the_signal(capsys):
    import signal as signals

    from repro.cli import Preempted, run_cli as cli

    def stopped(argv):
        raise Preempted(signals.SIGTERM, "SIGTERM: checkpoint saved; re-run the same command to resume")

    with pytest.raises(SystemExit) as exit_info:
        cli(stopped, [])
    assert exit_info.value.code == 143
    assert capsys.readouterr().err.strip() == "SIGTERM: checkpoint saved; re-run the same command to resume"


def test_a_compile_failure_stops_with_one_line_before_any_eager_forward(tmp_path, monkeypatch):
    from repro.cli import UserError

    class CompileFailed(torch._dynamo.exc.TorchDynamoException):
        pass

    def failing_compile(module):
        def compiled(*args):
            raise CompileFailed("backend exploded\nlong traceback")
        return compiled

    eager_calls = []
    real_forward = Pretrainer.forward
    monkeypatch.setattr(Pretrainer, "forward", lambda self, *a: eager_calls.append(1) or real_forward(self, *a))
    monkeypatch.setattr(torch, "compile", failing_compile)
    cfg = load_config(ROOT / "repro/configs/demo.yaml", [f"out_dir={tmp_path}", "train.compile=true", *TINY_DEMO])
    with pytest.raises(UserError, match=r"torch.compile failed \(CompileFailed: backend exploded\); "
                                        r"run with train.compile=false") as error:
        train(cfg)
    assert "\n" not in str(error.value)
    assert eager_calls == []   # the step was not re-run eagerly (a forward may change a method's state)
    assert not (cfg.run_dir / "checkpoint.pt").exists()
