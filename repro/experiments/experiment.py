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


@dataclass(frozen=True)
class Experiment:
    name: str                            # the Make target and `python -m repro.experiments NAME`
    title: str                           # one line of --help
    rows: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    runs: Runs | None = None             # None: no training runs
    takes_datasets: bool = True          # DATASETS selects among `datasets` (False: fixed, DATASETS ignored)
    stop_at_epoch: int | None = None     # end each run (SIGTERM, clean checkpoint) once this epoch is
                                         # validated; not with EPOCHS
    evaluate: bool = True                # linear probe of each finished run
    profiles: tuple[str, ...] = ("paper",)   # the PROFILE values it accepts; the first is its default
    # PROFILE values that plan another record of this target (claims-all: every method at its swept rate)
    profile_records: Mapping[str, Experiment] = field(default_factory=dict)
    variants: bool = False               # VARIANT=authors trains the rows' authors'-code configs (variants.py)
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
    # (experiment, options) -> exit status, in place of run.py's run_target (train -> evaluate ->
    # collect -> check) when the target needs more (claims: CIFAR-10 as an image folder, a baseline row)
    runner: Callable | None = None
    record_references: Callable | None = None   # options -> path: `record NAME` stores measured references

    def for_profile(self, profile: str) -> Experiment:
        return self.profile_records.get(profile, self)

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
