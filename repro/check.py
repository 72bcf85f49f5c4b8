"""Compare measured results with the paper's values and claims (expected_results/*.yaml).

    python -m repro.check                                  # every result present under runs/results
    python -m repro.check --results runs/results --only table2 --rows frossl,frossl_nologs
    make check

Prints one table, experiment | cell | paper | measured | delta | tolerance | status, and saves it as
check.txt and check.json beside the results. Status of a numeric cell:
  PASS            |measured - paper| <= tolerance
  FAIL            outside the tolerance (the exit status is then 1)
  MISSING         no measured value (not run yet, run unfinished, or its config not written yet);
                  never counted as a pass
  NOT-COMPARABLE  measured under a different setting than the paper's (EPOCHS=..., extra
                  overrides, the cached probe, a PROFILE=short run against the paper): shown,
                  never PASS or FAIL
  NO-REFERENCE    measured, but the paper has no value for that cell ("-")
A claim (a qualitative statement of the paper, e.g. "FroSSL has the lowest condition number") is
PASS or FAIL when every value it needs is measured and comparable, else MISSING / NOT-COMPARABLE.

Result files (written by `python -m repro.experiments`, or by hand) are JSON:
    {"experiment": "table2", "profile": "paper", "variant": "",        # variant e.g. "EPOCHS=5"
     "cells": {"cifar10/frossl": {"value": 92.5, "comparable": true, "reason": "",
                                  "n": 1, "std": null, "runs": ["runs/cifar10-frossl-seed0"]}}}
Values are in the paper's units (percent for accuracies); "inf" is allowed (e.g. never saturated).
A PROFILE=short result is compared with expected_results/short/<experiment>.yaml, which holds only
values measured by this project's own commands; while that file is absent its cells are MISSING.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from repro.atomic import atomic_write_text
from repro.cli import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_DIR = ROOT / "expected_results"
ORDER = ["figure2", "table2", "table3", "figure3", "figure4"]
STATUSES = ("PASS", "FAIL", "MISSING", "NOT-COMPARABLE", "NO-REFERENCE")


@dataclass
class Row:
    experiment: str          # "table2", "table2[EPOCHS=5]", "table2[short]"
    cell: str                # "cifar10/frossl" or a claim id
    paper: float | str | None
    measured: float | str | None
    delta: float | None
    tolerance: float | str | None
    status: str
    note: str = ""


# ---- reading ----------------------------------------------------------------------------------

def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_expected_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise UserError(f"expected-results file '{path}' is not valid YAML ({where}{problem}): fix its syntax "
                        f"(`git checkout -- {path}` restores a shipped file)") from None


def _validate_expected(path: Path, spec: dict) -> None:
    """Shape checks of an expected-results file: one line naming the file and key on a mistake."""
    fix = f"fix {path} (`git checkout -- {path}` restores a shipped file)"
    cells = spec.get("cells") or {}
    if not isinstance(cells, dict):
        raise UserError(f"{path}: 'cells' must be a mapping of cell -> {{paper, tolerance}}: {fix}")
    tolerance = spec.get("tolerance") or {}
    if not isinstance(tolerance, dict):
        raise UserError(f"{path}: 'tolerance' must be a mapping (default, rationale): {fix}")
    default = tolerance.get("default")
    if default is not None and not _is_number(default):
        raise UserError(f"{path}: tolerance.default = {default!r} is not a number: {fix}")
    for cell, entry in cells.items():
        if not isinstance(entry, dict):
            raise UserError(f"{path}: cell '{cell}' must be a mapping with 'paper' (and 'tolerance'), "
                            f"not {entry!r}: {fix}")
        paper = entry.get("paper")
        if paper is not None and not _is_number(paper):
            raise UserError(f"{path}: cells.{cell}.paper = {paper!r} is not a number (null for the paper's "
                            f"'-'): {fix}")
        cell_tolerance = entry.get("tolerance", default)
        if paper is not None and not _is_number(cell_tolerance):
            raise UserError(f"{path}: cell '{cell}' has no numeric tolerance ({cell_tolerance!r}): give it "
                            f"'tolerance: <number>' or set tolerance.default: {fix}")
    claims = spec.get("claims") or []
    if not isinstance(claims, list) or not all(isinstance(c, dict) and c.get("id") for c in claims):
        raise UserError(f"{path}: 'claims' must be a list of mappings, each with an 'id', a 'statement' "
                        f"and 'all': {fix}")


def load_expected(expected_dir: Path = EXPECTED_DIR) -> dict[str, dict]:
    specs = {}
    for path in sorted(Path(expected_dir).glob("*.yaml")):
        spec = _read_expected_yaml(path)
        if not isinstance(spec, dict) or "experiment" not in spec:
            raise UserError(f"{path}: not an expected-results file (no 'experiment' key): add "
                            f"'experiment: <name>' or move the file out of {expected_dir}")
        _validate_expected(path, spec)
        spec["cells"] = spec.get("cells") or {}
        spec["claims"] = spec.get("claims") or []
        specs[spec["experiment"]] = spec
    return specs


def load_short_reference(experiment: str, expected_dir: Path = EXPECTED_DIR) -> dict | None:
    path = Path(expected_dir) / "short" / f"{experiment}.yaml"
    if not path.exists():
        return None
    reference = _read_expected_yaml(path)
    fix = (f"delete {path} and record it again with `python -m repro.experiments record {experiment} "
           f"--profile short`")
    cells = reference.get("cells") if isinstance(reference, dict) else None
    if not isinstance(cells, dict):
        raise UserError(f"{path}: not a short-profile reference (no 'cells' mapping): {fix}")
    for cell, entry in cells.items():
        if not isinstance(entry, dict) or not _is_number(entry.get("value")):
            raise UserError(f"{path}: cell '{cell}' has no numeric 'value': {fix}")
        if entry.get("tolerance") is not None and not _is_number(entry["tolerance"]):
            raise UserError(f"{path}: cells.{cell}.tolerance = {entry['tolerance']!r} is not a number: {fix}")
    return reference


def _number_like(value) -> bool:
    """A value the checker can compare: null, a number, or a string holding one ("inf")."""
    if value is None or _is_number(value):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _validate_result(path: Path, data: dict) -> None:
    fix = (f"correct it to a number, \"inf\" or null, or delete {path} and re-create it with "
           f"`python -m repro.experiments collect {data.get('experiment')}`")
    for name, cell in data["cells"].items():
        if not isinstance(cell, dict):
            raise UserError(f"result file '{path}': cell '{name}' is {cell!r}, not a mapping with a 'value': {fix}")
        if not _number_like(cell.get("value")):
            raise UserError(f"result file '{path}': cell '{name}' has value {cell.get('value')!r}, not a number: {fix}")
        if cell.get("std") is not None and not _is_number(cell["std"]):
            raise UserError(f"result file '{path}': cell '{name}' has std {cell['std']!r}, not a number: {fix}")
        if "n" in cell and not (isinstance(cell["n"], int) and not isinstance(cell["n"], bool)):
            raise UserError(f"result file '{path}': cell '{name}' has n {cell['n']!r}, not an integer: {fix}")


def load_results(results_dir: Path) -> list[dict]:
    results = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"result file '{path}' is not valid JSON ({err}): delete it and re-create it with "
                            f"`python -m repro.experiments collect <experiment>` (or `make <target>`)") from None
        if isinstance(data, dict) and "experiment" in data and isinstance(data.get("cells"), dict):
            _validate_result(path, data)
            data.setdefault("profile", "paper")
            data.setdefault("variant", "")
            data["_path"] = str(path)
            results.append(data)
    return results


def as_number(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return float(value)  # "inf"
    return float(value)


# ---- checking ---------------------------------------------------------------------------------

def row_of(cell: str) -> str:
    return cell.split("/", 1)[1] if "/" in cell else cell


def check_cell(experiment: str, cell: str, paper, tolerance, measured: dict | None, note: str = "") -> Row:
    if measured is None or measured.get("value") is None:
        return Row(experiment, cell, paper, None, None, tolerance, "MISSING",
                   note or (measured or {}).get("reason", ""))
    value = as_number(measured["value"])
    extra = f"n={measured['n']}" + (f", std {measured['std']:.2f}" if measured.get("std") is not None else "") \
        if measured.get("n", 1) > 1 else ""
    note = "; ".join(x for x in (note, extra) if x)
    if paper is None:
        return Row(experiment, cell, None, value, None, tolerance, "NO-REFERENCE", note)
    delta = value - paper
    if not measured.get("comparable", False):
        return Row(experiment, cell, paper, value, delta, tolerance, "NOT-COMPARABLE",
                   "; ".join(x for x in (measured.get("reason", "") or "not comparable", note) if x))
    status = "PASS" if abs(delta) <= tolerance + 1e-9 else "FAIL"
    return Row(experiment, cell, paper, value, delta, tolerance, status, note)


def _claim_cells(test: dict, rows: list[str]) -> list[str]:
    (kind, args), = test.items()
    if kind in ("greater", "less"):
        return list(args)
    if kind == "best":
        among = args["among"]
        cells = [among.replace("*", r) for r in rows] if isinstance(among, str) else list(among)
        return list(dict.fromkeys(cells + [args["winner"]]))
    raise UserError(f"unknown claim test '{kind}' (use greater, less or best)")


def _evaluate_test(test: dict, values: dict[str, float], rows: list[str]) -> tuple[bool, str]:
    (kind, args), = test.items()
    if kind in ("greater", "less"):
        a, b = (values[c] for c in args)
        holds = a > b if kind == "greater" else a < b
        return holds, f"{args[0]} {a:.4g} {'>' if kind == 'greater' else '<'} {args[1]} {b:.4g}"
    among = _claim_cells(test, rows)
    winner = args["winner"]
    others = [values[c] for c in among if c != winner]
    if args["order"] in ("lowest", "earliest"):
        holds = all(values[winner] < v for v in others)
    else:
        holds = all(values[winner] > v for v in others)
    best_other = min(others) if args["order"] in ("lowest", "earliest") else max(others)
    return holds, f"{winner} {values[winner]:.4g} vs best other {best_other:.4g}"


def check_claim(experiment: str, claim: dict, cells: dict[str, dict], rows: list[str]) -> Row:
    tests = claim.get("all", [])
    needed = [c for t in tests for c in _claim_cells(t, rows)]
    missing = [c for c in needed if cells.get(c, {}).get("value") is None]
    if missing:
        return Row(experiment, claim["id"], "claim", None, None, "claim", "MISSING",
                   f"{claim['statement']} (needs {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''})")
    values = {c: as_number(cells[c]["value"]) for c in needed}
    outcomes = [_evaluate_test(t, values, rows) for t in tests]
    holds = all(ok for ok, _ in outcomes)
    measured = "holds" if holds else "does not hold"
    detail = "; ".join(text for _, text in outcomes)
    if not all(cells[c].get("comparable", False) for c in needed):
        return Row(experiment, claim["id"], "claim", measured, None, "claim", "NOT-COMPARABLE",
                   f"{claim['statement']}: {detail}")
    return Row(experiment, claim["id"], "claim", measured, None, "claim", "PASS" if holds else "FAIL",
               f"{claim['statement']}: {detail}")


def _spec_rows(spec: dict) -> list[str]:
    if spec.get("rows"):
        return list(spec["rows"])
    return sorted({row_of(c) for c in spec["cells"]})


def check_experiment(spec: dict, result: dict | None, *, rows: set[str] | None = None,
                     expected_dir: Path = EXPECTED_DIR) -> list[Row]:
    experiment = spec["experiment"]
    profile = (result or {}).get("profile", "paper")
    variant = (result or {}).get("variant", "")
    label = experiment + (f"[{profile}]" if profile != "paper" else "") + (f"[{variant}]" if variant else "")
    measured_cells = (result or {}).get("cells", {})
    default_tolerance = (spec.get("tolerance") or {}).get("default")
    out = []
    if profile == "paper":
        for cell, expected in spec["cells"].items():
            if rows is not None and row_of(cell) not in rows:
                continue
            if variant and measured_cells.get(cell, {}).get("value") is None:
                continue  # a non-paper variant lists what it measured; the paper's rows list the rest
            paper = expected.get("paper")
            if paper is None and measured_cells.get(cell, {}).get("value") is None:
                continue  # the paper's "-" and nothing measured: nothing to say
            tolerance = expected.get("tolerance", default_tolerance)
            out.append(check_cell(label, cell, paper, tolerance, measured_cells.get(cell), expected.get("note", "")))
        for cell in measured_cells:  # measured values the paper does not print (e.g. Figure 3's): shown
            if cell not in spec["cells"] and (rows is None or row_of(cell) in rows):
                out.append(check_cell(label, cell, None, None, measured_cells[cell], "not in the paper's text"))
        spec_rows = _spec_rows(spec)
        for claim in spec["claims"]:
            if rows is not None and not set(claim.get("rows", spec_rows)) <= rows:
                continue
            row = check_claim(label, claim, measured_cells, spec_rows)
            if variant and row.status == "MISSING":
                continue
            out.append(row)
        return out
    # a reduced-budget profile: compare with values this project measured and recorded
    reference = load_short_reference(experiment, expected_dir) if profile == "short" else None
    recorded = (reference or {}).get("cells", {})
    columns = set(((spec.get("profiles") or {}).get(profile) or {}).get("columns", []))
    cells = [c for c in spec["cells"] if c.split("/")[0] in columns]
    for cell in list(dict.fromkeys(cells + sorted(set(measured_cells) | set(recorded)))):
        if rows is not None and row_of(cell) not in rows:
            continue
        if cell not in recorded:
            measured = measured_cells.get(cell)
            value = None if measured is None else measured.get("value")
            out.append(Row(label, cell, None, as_number(value) if value is not None else None, None, None,
                           "MISSING", f"no recorded {profile}-profile reference (expected_results/{profile}/"
                                      f"{experiment}.yaml): measure it, then `python -m repro.experiments "
                                      f"record {experiment} --profile {profile}`"))
            continue
        ref = recorded[cell]
        note = f"reference measured {ref.get('date', '?')} on {ref.get('hardware', '?')}"
        out.append(check_cell(label, cell, ref["value"], ref.get("tolerance", default_tolerance),
                              measured_cells.get(cell), note))
    return out


def run_check(results_dir: Path, *, expected_dir: Path = EXPECTED_DIR, only: list[str] | None = None,
              rows: set[str] | None = None, variant: str | None = None, profile: str | None = None) -> list[Row]:
    """Rows for every expected experiment (MISSING when no result file) and every result file."""
    specs = load_expected(expected_dir)
    if only:
        unknown = [n for n in only if n not in specs]
        if unknown:
            raise UserError(f"--only {','.join(unknown)}: no such experiment in {expected_dir}: choose from "
                            f"{', '.join(n for n in ORDER if n in specs)}"
                            + "".join(f", {n}" for n in sorted(specs) if n not in ORDER))
    if profile is not None:
        profiles = ["paper"] + sorted({p for spec in specs.values() for p in (spec.get("profiles") or {})})
        if profile not in profiles:
            raise UserError(f"--profile {profile}: no such profile in {expected_dir}: choose "
                            f"{' or '.join(profiles)}")
    results = load_results(results_dir) if Path(results_dir).is_dir() else []
    names = [n for n in ORDER if n in specs] + sorted(n for n in specs if n not in ORDER)
    out: list[Row] = []
    for name in names:
        if only and name not in only:
            continue
        mine = [r for r in results if r["experiment"] == name]
        if variant is not None:
            mine = [r for r in mine if r["variant"] == variant]
        if profile is not None:
            mine = [r for r in mine if r["profile"] == profile]
        mine.sort(key=lambda r: (r["profile"] != "paper", r["variant"]))
        if not any(r["profile"] == "paper" and not r["variant"] for r in mine) and profile in (None, "paper") \
                and not variant:
            mine.insert(0, None)  # the paper's cells are always listed: MISSING until measured
        if profile == "short" and not mine:
            mine = [{"experiment": name, "profile": "short", "variant": variant or "", "cells": {}}]
        for result in mine:
            out.extend(check_experiment(specs[name], result, rows=rows, expected_dir=expected_dir))
    return out


# ---- output -----------------------------------------------------------------------------------

def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:+.{digits}f}" if digits < 0 else f"{value:.{digits}f}"


def format_table(rows: list[Row]) -> str:
    header = ["experiment", "cell", "paper", "measured", "delta", "tolerance", "status"]
    lines = [[r.experiment, r.cell, _fmt(r.paper, 1), _fmt(r.measured, 2),
              "-" if r.delta is None else f"{r.delta:+.2f}",
              "-" if r.tolerance is None else (r.tolerance if isinstance(r.tolerance, str) else f"+-{r.tolerance:.1f}"),
              r.status] for r in rows]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    text = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    text += [fmt.format(*line) for line in lines]
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    text.append("")
    text.append("  ".join(f"{s}: {n}" for s, n in counts.items()) + f"  (of {len(rows)})")
    notes = [(r.experiment, r.cell, r.note) for r in rows
             if r.note and (r.status in ("FAIL", "NOT-COMPARABLE") or (r.paper == "claim" and r.status == "PASS"))]
    if notes:
        text.append("")
        text.extend(f"  {e} {c}: {n}" for e, c, n in notes)
    return "\n".join(text) + "\n"


def save(rows: list[Row], out_dir: Path, stem: str = "check") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text_path, json_path = out_dir / f"{stem}.txt", out_dir / f"{stem}.json"
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    # atomic (temporary file + rename): a crash keeps the previous table, never half of one
    atomic_write_text(text_path, format_table(rows))
    atomic_write_text(json_path, json.dumps({"counts": counts, "rows": [asdict(r) for r in rows]}, indent=1,
                                            default=str) + "\n")
    return text_path, json_path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="runs/results", help="folder of result JSON files (default runs/results)")
    parser.add_argument("--expected", default=str(EXPECTED_DIR), help="folder of expected-results YAML files")
    parser.add_argument("--only", default="", help="comma-separated experiments (table2,table3,figure2,...)")
    parser.add_argument("--rows", default="", help="comma-separated rows (config names), e.g. frossl,frossl_nologs")
    parser.add_argument("--variant", default=None, help="only results of this variant (e.g. 'EPOCHS=5'; '' = none)")
    parser.add_argument("--profile", default=None, help="only results of this profile (paper, short)")
    parser.add_argument("--save-as", default="check", help="file stem of the saved table (default check)")
    parser.add_argument("--strict", action="store_true", help="also exit 1 when a cell is MISSING")
    args = parser.parse_args(argv)
    only = [x for x in args.only.replace(" ", ",").split(",") if x] or None
    rows = {x for x in args.rows.replace(" ", ",").split(",") if x} or None
    results_dir = Path(args.results)
    table = run_check(results_dir, expected_dir=Path(args.expected), only=only, rows=rows,
                      variant=args.variant, profile=args.profile)
    text = format_table(table)
    print(text, end="")
    text_path, json_path = save(table, results_dir, args.save_as)
    print(f"saved {text_path} and {json_path}", file=sys.stderr)
    failed = any(r.status == "FAIL" for r in table)
    missing = any(r.status == "MISSING" for r in table)
    return 1 if failed or (args.strict and missing) else 0


if __name__ == "__main__":
    run_cli(main)
