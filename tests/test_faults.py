"""Crash safety on CPU: SIGTERM mid-epoch (checkpoint at the step, exit 143), SIGKILL (resume from
the last epoch checkpoint), and a 2-process torchrun run; every resumed run ends bit-identical."""
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from repro.faults import final_weights, identical, train_command
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults")
    subprocess.run(train_command(out, "reference"), check=True, capture_output=True, cwd=ROOT, timeout=900)
    return out, final_weights(out / "reference")


def _start_and_signal(command, run_dir, sig, after_step):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline:
        if metrics.exists() and any(json.loads(line).get("step", 0) >= after_step
                                    for line in metrics.read_text().splitlines() if line.strip()):
            break
        if process.poll() is not None:
            pytest.fail(f"training ended before step {after_step}: {process.stderr.read()}")
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr.decode()


def test_sigterm_checkpoints_mid_epoch_and_resumes_identically(reference):
    out, expected = reference
    command = train_command(out, "term")
    code, stderr = _start_and_signal(command, out / "term", signal.SIGTERM, after_step=7)
    assert code == 128 + signal.SIGTERM, stderr
    step = torch.load(out / "term" / "checkpoint.pt", weights_only=True)["step"]
    assert 7 <= step < 20
    assert "re-run the same command to resume" in stderr
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, timeout=900)
    assert identical(expected, final_weights(out / "term"))
    steps = [json.loads(line)["step"] for line in (out / "term" / "metrics.jsonl").read_text().splitlines()
             if "loss" in line]
    assert steps == sorted(set(steps)) == list(range(1, 21))  # nothing lost, nothing repeated


def test_sigkill_resumes_from_the_last_epoch_checkpoint_identically(reference):
    out, expected = reference
    command = train_command(out, "kill")
    code, _ = _start_and_signal(command, out / "kill", signal.SIGKILL, after_step=7)
    assert code == -signal.SIGKILL
    assert torch.load(out / "kill" / "checkpoint.pt", weights_only=True)["step"] in (5, 10, 15)
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, timeout=900)
    assert identical(expected, final_weights(out / "kill"))


def test_two_process_torchrun_run_completes_and_resumes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(ROOT / ".venv" / "bin")) or shutil.which("torchrun")
    # train_command is [python, "-m", "repro.train", CONFIG, ...]: torchrun takes the same "-m" form
    command = [torchrun, "--standalone", "--nproc_per_node=2", *train_command(tmp_path, "ddp")[1:]]
    code, stderr = _start_and_signal(command, tmp_path / "ddp", signal.SIGTERM, after_step=7)
    assert code != 0
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["step"] >= 7
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "ddp"
    assert sorted(p.name for p in run.glob("checkpoint*")) == ["checkpoint.pt"]
    assert (run / "pretrain.json").exists()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert steps == list(range(1, 21))  # one process wrote the log, once per step
