"""The record of one experiment (a table or figure of the paper): what it trains, collects and
checks. The records themselves are in table.py; planning, running and collecting read them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping


@dataclass(frozen=True)
class Runs:
    """How an experiment's training runs are named and configured."""
    prefix: str = ""                     # run folder: <prefix><dataset>-<row>-seed<S><suffix>
    # the protocol's overrides of every run (the paper's setting it is compared with); "{spectra_every}"
    # is filled in from the options
    overrides: tuple[str, ...] = ()
    per_dataset: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # extra overrides per dataset
    # expected_results/<name>.yaml files whose profile (PROFILE=short) sets a dataset's epochs; first hit wins
    profile_epochs_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    name: str                            # the Make target and `python -m repro.experiments NAME`
    title: str                           # one line of --help
    rows: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()       # PROFILE=short may narrow them (the profile's `datasets`)
    runs: Runs | None = None             # None: no training runs
    takes_datasets: bool = True          # DATASETS selects among `datasets` (False: fixed, DATASETS ignored)
    stop_at_epoch: int | None = None     # end each run (SIGTERM, clean checkpoint) once this epoch is
                                         # validated; not with EPOCHS
    evaluate: bool = True                # linear probe of each finished run
    profiles: tuple[str, ...] = ("paper", "short")
    results: tuple[Experiment, ...] = () # the records whose result files it writes and checks; (): itself
    collect: Callable | None = None      # (experiment, options) -> content of results/<name>.json
    plot: Callable | None = None         # (content, png path) -> png path, when the content has curves
    copy_figure: str = ""                # or: a PNG the script wrote, relative to OUT, copied to results/
    check_own_rows: bool = False         # its check covers all of `rows` whatever METHODS selects
    script: Callable | None = None       # options -> command, run (on node 0) instead of training runs
    done_file: str = ""                  # the script's output under OUT: present means done
    note: str = ""                       # said once its runs are through
    parts: tuple[Experiment, ...] = ()   # a union: these in turn (each run planned once), then the
                                         # full check and the report

    @property
    def result_records(self) -> tuple[Experiment, ...]:
        return self.results or (self,)

    @property
    def result_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.result_records)

    @property
    def trains(self) -> bool:
        return self.runs is not None

    @property
    def fixed_setting(self) -> bool:
        """EPOCHS and OVERRIDES change training runs: an experiment without any ignores them."""
        return self.runs is None and not self.parts
