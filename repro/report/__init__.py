"""The report: repro/report/report.ipynb executed headless (nbconvert) into one HTML file.

    python -m repro.report --results runs/results          # -> runs/results/report.html (+ .ipynb)
    make report

The notebook renders whatever results exist (paper value next to the measured one, the check's
verdicts, the figures, the environment) and says plainly what is missing. Its cells only call
repro/report/render.py; `python -m repro.report --write-template` regenerates the notebook file.
repro/report/plots.py draws Figures 3 and 4 when `repro.experiments` collects their results.
"""
from __future__ import annotations

import os
from pathlib import Path

NOTEBOOK = Path(__file__).with_name("report.ipynb")
ROOT = Path(__file__).resolve().parents[2]


def make_notebook():
    """The report notebook (unexecuted). Cells call repro.report.render with REPRO_RESULTS."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    from repro.report.render import SECOND_REFERENCES_TEXT, experiments_in_order, expected_title

    cells = [
        new_markdown_cell("# FroSSL reproduction report\n\n"
                          "Each section puts the paper's value next to the measured one, with the verdict of "
                          "`make check` (tolerances and rationales in `expected_results/`). Rendered by "
                          "`make report`; how to read the check table: `docs/check.md`."),
        new_code_cell("import os\nfrom repro.report import render\n"
                      "RESULTS = os.environ.get('REPRO_RESULTS', 'runs/results')\nrender.header(RESULTS)"),
        new_markdown_cell("## Summary"),
        new_code_cell("render.summary(RESULTS)"),
        new_code_cell("render.check_table(RESULTS)"),
        new_markdown_cell(SECOND_REFERENCES_TEXT),
        new_code_cell("render.second_references(RESULTS)"),
    ]
    for experiment in experiments_in_order():
        cells.append(new_markdown_cell(f"## {expected_title(experiment)}"))
        cells.append(new_code_cell(f"render.section({experiment!r}, RESULTS)"))
    cells += [new_markdown_cell("## What is missing"), new_code_cell("render.missing(RESULTS)"),
              new_markdown_cell("## Environment"), new_code_cell("render.environment(RESULTS)")]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def write_template(path: Path = NOTEBOOK) -> Path:
    import nbformat
    nbformat.write(make_notebook(), str(path))
    return path


def build_report(results_dir: str | Path, out: str | Path | None = None, *, timeout: int = 600) -> Path:
    """Execute the notebook against `results_dir` and export one self-contained HTML file."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    results_dir = Path(results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    out = Path(out) if out else results_dir / "report.html"
    notebook = nbformat.read(str(NOTEBOOK), as_version=4) if NOTEBOOK.exists() else make_notebook()
    previous = os.environ.get("REPRO_RESULTS")
    os.environ["REPRO_RESULTS"] = str(results_dir)  # the kernel inherits it
    try:
        ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
            notebook, {"metadata": {"path": str(ROOT)}})
    finally:
        if previous is None:
            os.environ.pop("REPRO_RESULTS", None)
        else:
            os.environ["REPRO_RESULTS"] = previous
    from repro.atomic import atomic_write_text  # a crash mid-write keeps the previous report
    atomic_write_text(out.with_suffix(".ipynb"), nbformat.writes(notebook))
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(notebook)
    atomic_write_text(out, body)
    return out
