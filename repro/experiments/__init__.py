"""The paper's experiments as Make targets: one declarative record per table or figure
(table.py), planned (plan.py), checked before starting (preflight.py), run (run.py: data steps
from data_steps.py, commands from commands.py, run state from state.py), collected (collect.py,
results.py) and driven from the command line (cli.py, `python -m repro.experiments --help`).

Names used outside the package are re-exported here.
"""
from repro.cli import UserError
from repro.experiments.cli import main, parse_options
from repro.experiments.collect import comparable
from repro.experiments.commands import evaluate_command, train_command
from repro.experiments.data_steps import data_steps, download
from repro.experiments.options import CONFIG_DIR, EXPECTED_DIR, ROOT, Options
from repro.experiments.plan import RunSpec, config_path, plan_runs, specs_for
from repro.experiments.preflight import check_batch_split, preflight
from repro.experiments.results import collect, record_short
from repro.experiments.run import Runner, run_target
from repro.experiments.state import online_by_epoch, train_state
from repro.experiments.table import (ABLATION, ALL, EXPERIMENTS, FIGURE2, FIGURE3, FIGURE4, TABLE2, TABLE3,
                                     Experiment, Runs)

# the rows and datasets of the records, as lists (tests and the method tests read them)
TABLE_ROWS = list(TABLE2.rows)
TABLE2_DATASETS = list(TABLE2.datasets)
TABLE3_ROWS = list(TABLE3.rows)
ABLATION_ROWS = list(ABLATION.rows)
FIGURE3_ROWS = list(FIGURE3.rows)
FIGURE4_ROWS = list(FIGURE4.rows)

__all__ = ["ABLATION", "ABLATION_ROWS", "ALL", "CONFIG_DIR", "EXPECTED_DIR", "EXPERIMENTS", "Experiment", "FIGURE2",
           "FIGURE3", "FIGURE3_ROWS", "FIGURE4", "FIGURE4_ROWS", "Options", "ROOT", "RunSpec", "Runner", "Runs",
           "TABLE2", "TABLE2_DATASETS", "TABLE3", "TABLE3_ROWS", "TABLE_ROWS", "UserError", "check_batch_split",
           "collect", "comparable", "config_path", "data_steps", "download", "evaluate_command", "main",
           "online_by_epoch", "parse_options", "plan_runs", "preflight", "record_short", "run_target", "specs_for",
           "train_command", "train_state"]
