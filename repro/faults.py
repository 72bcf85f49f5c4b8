"""Fault injection (`make faults`): kill a small CPU training run at a random moment, re-run the
same command, and check that the final weights equal those of an uninterrupted run, bit for bit.

    python -m repro.faults --runs 5              # SIGKILL and SIGTERM, 5 runs each
    python -m repro.faults --signals KILL --runs 3

SIGKILL gives the run no chance to save: it resumes from the last epoch checkpoint. SIGTERM (what
schedulers send before pre-empting), SIGINT and SIGHUP make the trainer write a checkpoint at the
end of the current step and exit 128 + signal; it resumes mid-epoch. Prints "N/K identical" per signal and exits non-zero unless
every resumed run is identical.
"""
from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from repro.cli import run_cli

DEMO = str(Path(__file__).parent / "configs" / "demo.yaml")
# a few seconds of CPU training: 4 epochs of 5 steps on the digits, small model
TRAIN_ARGS = ["optim.epochs=4", "model.width=8", "model.proj_hidden_dim=256", "model.proj_output_dim=256",
              "train.log_every=1"]


def train_command(out_dir: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "repro.train", DEMO, f"out_dir={out_dir}", f"name={name}", *TRAIN_ARGS]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["method"]


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def largest_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts' floating-point tensors, in float64."""
    if a.keys() != b.keys():
        raise ValueError(f"the state dicts hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def interrupted_run(out_dir: Path, name: str, sig: signal.Signals, delay: float) -> int:
    """Start, send `sig` after `delay` seconds, then re-run the same command to completion.
    Returns the exit code of the interrupted process."""
    process = subprocess.Popen(train_command(out_dir, name), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(sig)
    code = process.wait()
    done = subprocess.run(train_command(out_dir, name), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"resumed run {name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="interrupted runs per signal (K)")
    parser.add_argument("--signals", nargs="+", default=["KILL", "TERM"], choices=["KILL", "TERM", "INT", "HUP"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="frossl-faults-") as tmp:
        out_dir = Path(tmp)
        start = time.perf_counter()
        subprocess.run(train_command(out_dir, "reference"), check=True, capture_output=True)
        duration = time.perf_counter() - start
        reference = final_weights(out_dir / "reference")
        print(f"reference run: {duration:.1f} s; killing at random times in [1 s, {0.9 * duration:.1f} s]")
        all_ok = True
        for name in args.signals:
            sig = getattr(signal, f"SIG{name}")
            same = 0
            for k in range(args.runs):
                delay = rng.uniform(1.0, max(1.5, 0.9 * duration))
                code = interrupted_run(out_dir, f"{name.lower()}{k}", sig, delay)
                ok = identical(reference, final_weights(out_dir / f"{name.lower()}{k}"))
                same += ok
                print(f"  SIG{name} after {delay:4.1f} s (exit {code}): {'identical' if ok else 'DIFFERENT'}")
            print(f"SIG{name}: {same}/{args.runs} identical")
            all_ok &= same == args.runs
    return 0 if all_ok else 1


if __name__ == "__main__":
    run_cli(main)
