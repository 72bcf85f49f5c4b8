"""The paper's experiments as Make targets: one declarative record per table or figure
(experiment.py the record, table.py the records), planned (plan.py), checked before starting
(preflight.py), run (run.py: data steps from data_steps.py, commands from commands.py, run state
from state.py), collected (collect.py, results.py) and driven from the command line (cli.py,
`python -m repro.experiments --help`). Import each name from the module that defines it.
"""
