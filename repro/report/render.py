"""HTML pieces of the report (repro/report/report.ipynb calls these; each returns an HTML object).

Everything is read from the results folder (result JSON files written by `repro.experiments`,
figures beside them) and from expected_results/*.yaml; nothing is recomputed here except the
check itself (repro.check), so the report always agrees with `make check`.
"""
from __future__ import annotations

import base64
import html
import json
import math
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import yaml

from repro.check import EXPECTED_DIR, ORDER, Row, load_expected, load_results, run_check

ROOT = Path(__file__).resolve().parents[2]
TARGET_OF = {"table2": "make table2", "table3": "make table3", "figure2": "make figure2",
             "figure3": "make figure3", "figure4": "make figure4 GPUS=4",
             "claims": "make claims CIFAR10=<cifar10-jpeg.tar.gz> (or PROFILE=claims-quick)"}
COLOURS = {"PASS": "#d4edda", "FAIL": "#f8d7da", "MISSING": "#eeeeee", "NOT-COMPARABLE": "#fff3cd",
           "NO-REFERENCE": "#e2e3f5", "NOT-DECIDED": "#fde2c4"}
CLAIM_PROFILES = ("claims", "claims-quick", "claims-all")   # results shown as mean +- std per row and metric

try:  # inside the notebook: rich display; elsewhere (tests): plain strings
    from IPython.display import HTML
except ImportError:  # pragma: no cover
    HTML = str


def _e(text) -> str:
    return html.escape(str(text))


def _num(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return _e(value)
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def _badge(status: str) -> str:
    return (f'<span style="background:{COLOURS.get(status, "#fff")};padding:1px 6px;border-radius:3px;'
            f'font-family:monospace">{_e(status)}</span>')


def _image(path: Path, width: int = 900) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:{width}px;width:100%"/>'


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + (" (working tree has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def header(results_dir) -> HTML:
    results_dir = Path(results_dir)
    files = load_results(results_dir) if results_dir.is_dir() else []
    return HTML(f"<p>Results folder: <code>{_e(results_dir)}</code> ({len(files)} result files). "
                f"Rendered {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at commit <code>{_e(_git_commit())}</code>.</p>")


def _check(results_dir) -> list[Row]:
    return run_check(Path(results_dir))


def summary(results_dir) -> HTML:
    rows = _check(results_dir)
    counts = {s: sum(r.status == s for r in rows) for s in COLOURS}
    parts = " ".join(f"{_badge(s)} {n}" for s, n in counts.items())
    verdict = ("<b>Some cells FAIL</b>: measured outside the paper's tolerance." if counts["FAIL"] else
               "<b>No FAIL.</b>" + (" Cells still MISSING are not passes: they were not measured."
                                    if counts["MISSING"] else ""))
    return HTML(f"<p>{parts} (of {len(rows)} checks)</p><p>{verdict}</p>"
                "<p>How to read: <i>paper</i> is the value printed in the paper; <i>measured</i> is this "
                "project's run(s) (mean over seeds); Δ = measured − paper; PASS when |Δ| ≤ tolerance. "
                "NOT-COMPARABLE rows ran under another setting (fewer epochs, extra overrides, the cached "
                "probe) and are never a pass; MISSING rows have no measurement yet. Some paper values were "
                "copied from other papers (<code>docs/references.md</code>): such cells also carry a verdict "
                "against a second reference, but the exit status of <code>make check</code> follows the "
                "paper's verdict alone.</p>")


SECOND_REFERENCES_TEXT = (
    "### Second references\n\n"
    "Some of the paper's values are not its own runs: it copied most CIFAR baselines from solo-learn's "
    "published table and three cells (SimCLR CIFAR-10, W-MSE CIFAR-10/100) from Ermolov et al. 2021, whose "
    "recipe is not the one this artifact follows. Each cell of `expected_results/` names where its value "
    "comes from, and, where the recipe followed here has a published result of its own (solo-learn's README "
    "at a pinned commit, a method's own repository), carries that value as a **second reference** with its "
    "own tolerance. The table below shows, for every measured PASS/FAIL cell that has one, both verdicts: "
    "*vs paper* (the `status` of `make check`, and the only one the exit status follows: the paper is what "
    "is reproduced) and *vs second reference*. A FAIL vs the paper with a PASS vs the second reference means "
    "the run reproduces the recipe and the paper quoted another recipe's number, not a broken artifact. "
    "Cells where the two references disagree beyond the tolerance, known before anything runs: "
    "`docs/references.md`.")


def second_references(results_dir) -> HTML:
    """Both verdicts of every measured PASS/FAIL cell that has a second reference."""
    rows = [r for r in _check(results_dir) if r.second_status]
    if not rows:
        return HTML("<p>No measured cell with a second reference yet.</p>")
    body = "".join(
        f"<tr><td>{_e(r.experiment)}</td><td>{_e(r.cell)}</td><td>{r.measured:.2f}</td>"
        f"<td>{r.paper:.1f} ({_e(r.source)})</td><td><b>{r.status}</b></td>"
        f"<td>{_e(r.second_reference)} {r.second_value:g} ±{r.second_tolerance:.1f}</td>"
        f"<td><b>{r.second_status}</b></td></tr>" for r in rows)
    return HTML("<table><tr><th>experiment</th><th>cell</th><th>measured</th><th>paper (value from)</th>"
                "<th>vs paper</th><th>second reference</th><th>vs second reference</th></tr>" + body + "</table>")


def check_table(results_dir) -> HTML:
    rows = _check(results_dir)
    body = "".join(
        f"<tr><td>{_e(r.experiment)}</td><td>{_e(r.cell)}</td><td>{_num(r.paper, 1)}</td><td>{_num(r.measured)}</td>"
        f"<td>{'' if r.delta is None else f'{r.delta:+.2f}'}</td>"
        f"<td>{'' if r.tolerance is None else (_e(r.tolerance) if isinstance(r.tolerance, str) else f'±{r.tolerance:g}')}</td>"
        f"<td>{_badge(r.status)}{'' if not r.second_status else f' <small>{_e(r.verdict)}</small>'}</td>"
        f"<td style='font-size:85%'>{_e(r.note)}</td></tr>" for r in rows)
    return HTML("<details><summary>The full check table (as printed by <code>make check</code>)</summary>"
                "<table><tr><th>experiment</th><th>cell</th><th>paper</th><th>measured</th><th>Δ</th>"
                f"<th>tolerance</th><th>status</th><th>note</th></tr>{body}</table></details>")


def _results_for(results_dir: Path, experiment: str) -> list[dict]:
    if not results_dir.is_dir():
        return []
    return [r for r in load_results(results_dir) if r["experiment"] == experiment]


def _pivot(spec: dict, rows: list[Row]) -> str:
    """Rows of the paper's table x its columns; each cell 'paper / measured' coloured by status."""
    by_cell = {r.cell: r for r in rows if r.paper != "claim"}
    columns = list(dict.fromkeys(c.split("/")[0] for c in spec["cells"]))
    labels = spec.get("rows") or {c.split("/")[1]: c.split("/")[1] for c in spec["cells"]}
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row, label in labels.items():
        tds = []
        for column in columns:
            cell = f"{column}/{row}"
            r = by_cell.get(cell)
            paper = spec["cells"].get(cell, {}).get("paper")
            if r is None:
                tds.append(f"<td>{_num(paper, 1)} / –</td>")
                continue
            tds.append(f"<td style='background:{COLOURS.get(r.status)}' title='{_e(r.status)} {_e(r.note)}'>"
                       f"{_num(paper, 1)} / <b>{_num(r.measured, 1)}</b></td>")
        body.append(f"<tr><td>{_e(label)}</td>{''.join(tds)}</tr>")
    return (f"<table><tr><th>row</th>{head}</tr>{''.join(body)}</table>"
            "<p style='font-size:85%'>Each cell: paper / <b>measured</b>; colour = status "
            f"({', '.join(_badge(s) for s in COLOURS)}).</p>")


def measured_table(spec: dict, result: dict) -> str:
    """A claims-profile result: rows (the random initialisation included) x metrics, each cell
    'mean ± std (n)', and the runs that did not finish (non-finite loss or interrupted)."""
    cells = result["cells"]
    metrics = list(dict.fromkeys(c.split("/")[0] for c in cells))
    labels = spec.get("rows") or {c.split("/")[1]: c.split("/")[1] for c in cells}
    head = "".join(f"<th>{_e(m)}</th>" for m in metrics)
    body = []
    for row, label in labels.items():
        tds = []
        for metric in metrics:
            c = cells.get(f"{metric}/{row}")
            if c is None or c.get("value") is None:
                tds.append("<td>–</td>")
                continue
            value = float(c["value"])
            spread = f" ± {c['std']:.2f}" if c.get("std") is not None else ""
            tds.append(f"<td>{_num(value)}{spread} <small>({c.get('n', 1)})</small></td>")
        body.append(f"<tr><td>{_e(label)}</td>{''.join(tds)}</tr>")
    text = (f"<p><b>{_e(result['profile'])}</b>{' [' + _e(result['variant']) + ']' if result.get('variant') else ''}"
            f", seeds {_e(' '.join(map(str, result.get('seeds', []))))}: mean ± std (n seeds)</p>"
            f"<table><tr><th>row</th>{head}</tr>{''.join(body)}</table>")
    unfinished = result.get("unfinished") or {}
    if unfinished:
        items = "".join(f"<li><code>{_e(row)}</code>: {_e(', '.join(runs))}</li>" for row, runs in unfinished.items())
        text += f"<p>Runs that did not finish (a non-finite loss stops the trainer, or interrupted):</p><ul>{items}</ul>"
    return text


def section(experiment: str, results_dir) -> HTML:
    results_dir = Path(results_dir)
    specs = load_expected(EXPECTED_DIR)
    spec = specs[experiment]
    rows = [r for r in _check(results_dir) if r.experiment.split("[")[0] == experiment]
    parts = [f"<p>Source: {_e(spec['source'])}.</p>",
             f"<p>Metric: {_e(spec.get('metric', ''))}</p>",
             f"<details><summary>Protocol and tolerance</summary><p>{_e(spec.get('protocol', ''))}</p>"
             f"<p>Tolerance: {_e((spec.get('tolerance') or {}).get('rationale', ''))}</p></details>"]
    results = _results_for(results_dir, experiment)
    if not results:
        parts.append(f"<p style='color:#a00'><b>Not measured yet</b>: no result file for {experiment} in "
                     f"<code>{_e(results_dir)}</code>. Run <code>{TARGET_OF.get(experiment, 'make ' + experiment)}</code>.</p>")
    paper_rows = [r for r in rows if r.experiment == experiment]
    if spec["cells"] and paper_rows:
        parts.append(_pivot(spec, paper_rows))
    variants = sorted({r.experiment for r in rows} - {experiment})
    for variant in variants:
        vrows = [r for r in rows if r.experiment == variant and r.paper != "claim"]
        if vrows and spec["cells"]:
            parts.append(f"<p><b>{_e(variant)}</b> (not the paper's setting):</p>" + _pivot(spec, vrows))
    for result in results:
        if result.get("profile") in CLAIM_PROFILES:
            parts.append(measured_table(spec, result))
    extra = [r for r in rows if r.status == "NO-REFERENCE"]
    if extra:
        body = "".join(f"<tr><td>{_e(r.experiment)}</td><td>{_e(r.cell)}</td><td>{_num(r.measured, 3)}</td></tr>"
                       for r in extra)
        parts.append("<p>Measured values without a printed paper value:</p><table><tr><th>result</th>"
                     f"<th>cell</th><th>measured</th></tr>{body}</table>")
    claims = [r for r in rows if r.paper == "claim"]
    if claims:
        items = "".join(f"<li>{_badge(r.status)} <b>{_e(r.experiment)}</b> {_e(r.note)}</li>" for r in claims)
        parts.append(f"<p>Claims:</p><ul>{items}</ul>")
    for result in results:
        missing = result.get("missing_rows") or {}
        if missing:
            items = "".join(f"<li><code>{_e(row)}</code>: {_e(why)}</li>" for row, why in missing.items())
            parts.append(f"<p>Rows not run ({_e(result['_path'])}):</p><ul>{items}</ul>")
        if result.get("verdict"):
            parts.append(f"<p>Verdict: {_badge(result['verdict']['status'])} {_e(result['verdict']['detail'])}</p>")
        figure = result.get("figure")
        if figure and (results_dir / figure).exists():
            parts.append(_image(results_dir / figure))
    return HTML("\n".join(parts))


def missing(results_dir) -> HTML:
    rows = [r for r in _check(results_dir) if r.status == "MISSING"]
    if not rows:
        return HTML("<p>Nothing is missing.</p>")
    per_experiment: dict[str, int] = {}
    for r in rows:
        per_experiment[r.experiment] = per_experiment.get(r.experiment, 0) + 1
    items = "".join(f"<li>{_e(e)}: {n} cells/claims not measured — <code>{TARGET_OF.get(e.split('[')[0], '')}</code></li>"
                    for e, n in per_experiment.items())
    return HTML(f"<p>{len(rows)} checks are MISSING (never counted as a pass):</p><ul>{items}</ul>")


def environment(results_dir) -> HTML:
    import torch
    here = {"python": platform.python_version(), "torch": torch.__version__, "CUDA": torch.version.cuda,
            "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "platform": platform.platform(), "commit": _git_commit()}
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in here.items())
    parts = [f"<p>This report was rendered on:</p><table>{rows}</table>"]
    results_dir = Path(results_dir)
    run_envs = set()
    if results_dir.is_dir():
        for result in load_results(results_dir):
            for cell in result.get("cells", {}).values():
                for run in cell.get("runs", []):
                    env_path = ROOT / run / "env.json" if not Path(run).is_absolute() else Path(run) / "env.json"
                    if env_path.is_file():
                        env = json.loads(env_path.read_text())
                        run_envs.add((env.get("gpu") or "CPU", env.get("gpu_count"), env.get("torch"),
                                      env.get("cuda"), env.get("git_commit", "")[:10]))
    if run_envs:
        body = "".join(f"<tr><td>{_e(g)}</td><td>{_e(n)}</td><td>{_e(t)}</td><td>{_e(c)}</td><td>{_e(k)}</td></tr>"
                       for g, n, t, c, k in sorted(run_envs, key=str))
        parts.append("<p>The runs were trained on (from each run folder's env.json):</p><table><tr><th>GPU</th>"
                     f"<th>count</th><th>torch</th><th>CUDA</th><th>commit</th></tr>{body}</table>")
    else:
        parts.append("<p>No run folder with an env.json is referenced by the results yet.</p>")
    return HTML("\n".join(parts))


def experiments_in_order() -> list[str]:
    specs = load_expected(EXPECTED_DIR)
    return [e for e in ORDER if e in specs] + sorted(e for e in specs if e not in ORDER)


def expected_title(experiment: str) -> str:
    return yaml.safe_load((EXPECTED_DIR / f"{experiment}.yaml").read_text())["title"]
