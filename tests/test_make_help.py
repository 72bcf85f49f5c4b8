"""`make help`: every documented target listed once, grouped by task, the paper targets' costs equal
to the plan summary's estimate (repro/experiments/summary.py), the main variables with their values.
No Python environment is needed by `make help` itself (it is the default goal on a fresh machine)."""
import os
import re
import subprocess

import pytest

from repro.experiments.options import Options
from repro.experiments.table import EXPERIMENTS
from repro.experiments.summary import help_cost_lines, summarize
from repro.gpu_check.estimate import range_text
from tests.conftest import ROOT

MAKEFILE = (ROOT / "Makefile").read_text()
GROUPS = ["Reproduce the paper", "Everyday", "Data and benchmarks", "Setup and checks"]


def make_help(*variables: str) -> str:
    result = subprocess.run(["make", "--no-print-directory", "help", *variables], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stderr
    return result.stdout


def documented_phony_targets() -> set[str]:
    """Targets declared .PHONY that carry a `##` comment on their rule line."""
    phony = {name for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.M) for name in line.split()}
    documented = set(re.findall(r"^([A-Za-z0-9_-]+):[^\n]*## ", MAKEFILE, re.M))
    return phony & documented


def test_every_documented_phony_target_is_listed_once():
    listed = re.findall(r"^  make (\S+) ", make_help(), re.M)
    targets = documented_phony_targets() - {"help"}      # the list does not list itself
    assert {"table2", "all", "demo", "test", "data", "gpu-check", "fresh-machine-test", "faults"} <= targets
    assert targets <= set(listed), sorted(targets - set(listed))
    assert len(listed) == len(set(listed)), [t for t in listed if listed.count(t) > 1]


def test_targets_are_grouped_by_task_in_order():
    text = make_help()
    starts = [text.index(f"\n{group}") for group in GROUPS]
    assert starts == sorted(starts)

    def group_of(target: str) -> str:
        at = text.index(f"  make {target} ")
        return [g for g, s in zip(GROUPS, starts) if s < at][-1]

    for target in ("figure2", "table2", "table3", "ablation", "figure3", "figure4", "all"):
        assert group_of(target) == "Reproduce the paper", target
    for target in ("demo", "test", "train", "evaluate", "check", "report"):
        assert group_of(target) == "Everyday", target
    for target in ("data", "bench", "bench-data"):
        assert group_of(target) == "Data and benchmarks", target
    for target in ("setup", "gpu-check", "fresh-machine-test", "faults"):
        assert group_of(target) == "Setup and checks", target


@pytest.mark.parametrize("target", ["table2", "table3", "ablation", "figure3", "figure4", "all"])
def test_each_paper_target_shows_the_plan_summarys_estimate(target, tmp_path):
    """The cost in `make help` is the plan summary's whole-plan range at the default variables: the
    same FLOP-based and anchor-based GPU-hours (as printed) and the same number of distinct runs."""
    line = next(l for l in make_help().splitlines() if l.startswith(f"  make {target} "))
    cost = re.search(r"\[est\. ([0-9.]+)-([0-9.]+) GPU-h, (\d+) runs\]$", line)
    assert cost, line
    summary = summarize(EXPERIMENTS[target], Options(out=tmp_path / "runs"))
    assert f"{cost.group(1)}-{cost.group(2)}" == range_text(summary.hours_total, summary.anchor_total)
    assert float(cost.group(1)) < float(cost.group(2))      # the anchor (fp32, an A100) is the slower end
    assert int(cost.group(3)) == len(summary.states)
    text = make_help()
    assert "35% of an H100 SXM" in text and "11.9 s SimCLR ResNet18" in text and "not measured" in text


def test_the_makefile_cost_lines_are_the_estimators():
    """`make help-costs` (help_cost_lines) writes them: the Makefile holds exactly its output."""
    assert [line for line in MAKEFILE.splitlines() if line.startswith("HELP_COST_")] == help_cost_lines(EXPERIMENTS.values())


def test_main_variables_are_listed_with_their_values():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^  ([A-Z_0-9]+)\s+(\S+)\s", make_help(), re.M)}
    assert rows["GPUS"] == "1" and rows["OUT"] == "runs" and rows["CACHE_DIR"] == "runs/cache"
    assert rows["PROFILE"] == "paper" and rows["SEEDS"] == "0" and rows["METHODS"] == "(empty)"
    moved = {m.group(1): m.group(2) for m in re.finditer(r"^  ([A-Z_0-9]+)\s+(\S+)\s", make_help("OUT=/scratch/r"),
                                                        re.M)}
    assert moved["CACHE_DIR"] == "/scratch/r/cache"      # the cache follows OUT unless set
