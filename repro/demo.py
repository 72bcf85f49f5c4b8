"""The CPU demo (`make demo`): FroSSL pretraining on scikit-learn's bundled digits, then a linear
probe of the trained encoder next to the same encoder at its random initialisation.

    python -m repro.demo                      # repro/configs/demo.yaml (its time on 2 cores: docs/measurements.md)
    python -m repro.demo seed=1 optim.epochs=20

It runs a fixed number of epochs (not a time budget), so the same command gives the same numbers
on the same machine. The run folder is runs/demo (config, metrics, checkpoint, eval_*.json).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from repro.checkpoint import write_json
from repro.cli import run_cli
from repro.config import load_config
from repro.evaluate import evaluate_run
from repro.train import train

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def main(argv: list[str]) -> int:
    cfg = load_config(DEMO_CONFIG, argv)
    start = time.perf_counter()
    train(cfg)
    trained = evaluate_run(cfg.run_dir)
    random_init = evaluate_run(cfg.run_dir, random_init=True)
    minutes = (time.perf_counter() - start) / 60
    gain = trained["linear_top1"] - random_init["linear_top1"]
    verdict = "PASS" if gain > 0 else "FAIL"
    print(f"\nFroSSL demo on digits ({cfg.optim.epochs} epochs, {cfg.eval.probe} linear probe, "
          f"{minutes:.1f} min)")
    print(f"  {'encoder':<24}{'linear top-1':>14}{'k-NN top-1':>12}")
    print(f"  {'random initialisation':<24}{random_init['linear_top1']:>14.3f}{random_init['knn_top1']:>12.3f}")
    print(f"  {'FroSSL-pretrained':<24}{trained['linear_top1']:>14.3f}{trained['knn_top1']:>12.3f}")
    print(f"  {verdict}: pretraining {'raised' if gain > 0 else 'did not raise'} linear accuracy by "
          f"{100 * gain:+.1f} points; results in {cfg.run_dir}/demo.json")
    write_json(cfg.run_dir / "demo.json", {"trained": trained, "random_init": random_init,
                                           "gain": gain, "verdict": verdict, "minutes": minutes})
    return 0 if gain > 0 else 1


if __name__ == "__main__":
    run_cli(main)
