"""python -m repro.experiments TARGET ... (usage: repro/experiments/cli.py, --help)"""
from repro.cli import run_cli
from repro.experiments.cli import main

if __name__ == "__main__":
    run_cli(main)
