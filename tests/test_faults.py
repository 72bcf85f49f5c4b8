"""Crash safety on CPU: SIGTERM mid-epoch (checkpoint at the step, exit 143) and SIGKILL (resume from
the last epoch checkpoint); every resumed run ends bit-identical. A 2-process torchrun run stopped and
resumed: tests/test_signals.py (SIGTERM at make's PID)."""
import json
import signal
import subprocess
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


# slow (make test-slow): the default run stops a trainer with a signal mid-epoch and resumes it bit for bit
# through make (tests/test_signals.py) and in-process (tests/test_train.py); this one is the trainer's own CLI
@pytest.mark.slow
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


def test_largest_difference_reads_every_float_tensor_and_refuses_other_keys():
    from repro.faults import largest_difference
    a = {"w": torch.zeros(3), "b": torch.zeros(2), "steps": torch.tensor(7)}
    b = {"w": torch.tensor([0.0, -0.5, 0.25]), "b": torch.tensor([0.0, 2.0]), "steps": torch.tensor(9)}
    assert largest_difference(a, b) == 2.0          # the larger tensor's difference, its sign dropped
    assert largest_difference(a, a) == 0.0
    with pytest.raises(ValueError, match="different tensors"):
        largest_difference(a, {"w": a["w"]})
