"""python -m repro.report [--results runs/results] [--out FILE.html] [--write-template]"""
from __future__ import annotations

import argparse
import sys

from repro.cli import run_cli
from repro.report import build_report, write_template


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.report", description=__doc__)
    parser.add_argument("--results", default="runs/results", help="results folder (make: $(OUT)/results)")
    parser.add_argument("--out", default=None, help="HTML file (default RESULTS/report.html)")
    parser.add_argument("--write-template", action="store_true", help="regenerate repro/report/report.ipynb")
    args = parser.parse_args(argv)
    if args.write_template:
        print(write_template())
        return 0
    out = build_report(args.results, args.out)
    print(f"report: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
