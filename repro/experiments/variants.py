"""VARIANT: rows that also have an authors'-code config (docs/deviations.md). With
VARIANT=authors, a record with `variants` set (Table 2) trains repro/configs/<dataset>/<row>_authors.yaml in
place of <row>.yaml, and its cells are compared with the paper's <row> cells. Read by the command
line (which rows to plan) and by the collectors (which paper cell a run fills).
"""
from __future__ import annotations

from dataclasses import replace

from repro.experiments.options import CONFIG_DIR

AUTHORS_ROWS = {"frossl": "frossl_authors"}   # paper row -> its authors'-code row


def rows_for(exp, variant: str) -> tuple[str, ...]:
    """The record's rows under VARIANT: with `authors`, each row of AUTHORS_ROWS that has an authors'
    config for one of the record's datasets is replaced by it (Table 2 only: a record sharing runs
    with other records keeps its rows, so they are never trained twice under two names)."""
    if variant == "paper" or not exp.variants:
        return exp.rows
    return tuple(AUTHORS_ROWS[r] if r in AUTHORS_ROWS and any((CONFIG_DIR / d / f"{AUTHORS_ROWS[r]}.yaml").exists()
                                                             for d in exp.datasets) else r for r in exp.rows)


def with_variant(exp, opts):
    """The record and options under VARIANT: the record's rows become their variant configs, and
    METHODS naming a paper row select its variant row."""
    rows = rows_for(exp, opts.config_variant)
    if rows == exp.rows:
        return exp, opts
    methods = tuple(dict(zip(exp.rows, rows)).get(m, m) for m in opts.methods)
    # its result file is still collected by the declared record (variant rows fill the paper's cells)
    return replace(exp, rows=rows, results=exp.result_records), replace(opts, methods=methods)


def paper_row(row: str) -> str:
    """The paper's row a variant row is compared with (frossl_authors -> frossl)."""
    return next((paper for paper, variant in AUTHORS_ROWS.items() if variant == row), row)
