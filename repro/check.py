"""Compare measured results with the paper's values and claims (expected_results/*.yaml).

    python -m repro.check                                  # every result present under runs/results
    python -m repro.check --results runs/results --only table2 --rows frossl,frossl_nologs
    make check

Prints one table, experiment | cell | paper | measured | delta | tolerance | status (PASS, FAIL,
MISSING, NOT-COMPARABLE, NO-REFERENCE; NOT-DECIDED for the claims profiles' margin rule), saves it as
check.txt and check.json beside the results, and exits 1 on a FAIL against the paper. The columns,
the statuses, the second references, the exit statuses and the result-file format are explained
once, in docs/check.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from repro.atomic import atomic_write_text
from repro.cli import UserError, run_cli
# the readers live in repro/expected.py; re-exported here for callers of repro.check
from repro.expected import (EXPECTED_DIR, ROOT, as_number, load_expected, load_measured_reference,  # noqa: F401
                            load_results)
from repro.references import ORDER, cell_source, second_reference

OWN_RUN = "own_run"   # the source key of a value the paper measured itself (no parenthesis in the verdict)
STATUSES = ("PASS", "FAIL", "MISSING", "NOT-COMPARABLE", "NO-REFERENCE", "NOT-DECIDED")


@dataclass
class Row:
    experiment: str          # "table2", "table2[EPOCHS=5]", "claims[claims-quick]"
    cell: str                # "cifar10/frossl" or a claim id
    paper: float | str | None
    measured: float | str | None
    delta: float | None
    tolerance: float | str | None
    status: str              # the verdict against the paper (the exit status follows it)
    note: str = ""
    source: str = ""         # where the paper's value comes from (expected_results sources.<key>.label)
    second_reference: str | None = None   # label of the second published reference, if any
    second_value: float | None = None
    second_tolerance: float | None = None
    second_delta: float | None = None     # measured - second_value
    second_status: str | None = None      # PASS / FAIL vs the second reference (PASS/FAIL rows only)
    verdict: str = ""                     # both verdicts on one line; '' when `status` alone says it


def with_references(row: Row, spec: dict, cell: str) -> Row:
    """Add the cell's source and, on a PASS/FAIL row, the verdict against its second reference."""
    key = ((spec.get("cells") or {}).get(cell) or {}).get("source")
    row.source = cell_source(spec, cell).get("label", "")
    second = second_reference(spec, cell)
    if second is not None:
        row.second_reference, row.second_value = second["label"], second["value"]
        row.second_tolerance = second["tolerance"]
    if row.status not in ("PASS", "FAIL") or (second is None and key == OWN_RUN):
        return row
    row.verdict = f"{row.status} vs paper" + (f" ({row.source})" if key != OWN_RUN else "")
    if second is not None:
        row.second_delta = float(row.measured) - second["value"]
        row.second_status = "PASS" if abs(row.second_delta) <= second["tolerance"] + 1e-9 else "FAIL"
        row.verdict += (f" | {row.second_status} vs {second['label']} {second['value']:g} "
                        f"+-{second['tolerance']:.1f}")
    return row


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


def margin_verdict(a: dict, b: dict, direction: str, floor: float) -> tuple[str, str]:
    """One comparison of the margin rule (module docstring): a's mean above b's (direction
    "higher") or below it ("lower") by more than max(std_a + std_b, floor)."""
    va, vb = as_number(a["value"]), as_number(b["value"])
    spread = (a.get("std") or 0.0) + (b.get("std") or 0.0)
    margin = max(spread, floor)
    diff = va - vb if direction == "higher" else vb - va
    status = "PASS" if diff > margin else "FAIL" if diff < -margin else "NOT-DECIDED"
    n = min(a.get("n", 1), b.get("n", 1))
    return status, (f"{va:.4g} vs {vb:.4g} ({'+' if diff >= 0 else ''}{diff:.3g} in the claimed direction; "
                    f"margin {margin:.3g} = max(std sum {spread:.3g}, floor {floor:g}), n={n})")


def check_margin_claim(experiment: str, claim: dict, cells: dict[str, dict], spread: dict | None = None) -> Row:
    """A claim of the claims profile: each comparison by margin_verdict, then PASS / FAIL / NOT-DECIDED.
    A cell measured without a spread (one seed) takes the recorded std of the same cell in `spread`
    (the spread_from profile's references): a change of seed moves it that far, so a difference
    within it is NOT-DECIDED, never FAIL."""
    spread = spread or {}
    cells = {name: {**cell, "std": spread[name]["std"]}
             if cell.get("std") is None and (spread.get(name) or {}).get("std") is not None else cell
             for name, cell in cells.items()}
    tests = claim["margin"]
    needed = [c for t in tests for c in t.get("higher") or t.get("lower")]
    missing = [c for c in needed if cells.get(c, {}).get("value") is None]
    if missing:
        return Row(experiment, claim["id"], "claim", None, None, "claim", "MISSING",
                   f"{claim['statement']} (needs {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''})")
    verdicts = []
    for test in tests:
        direction = "higher" if "higher" in test else "lower"
        a, b = test[direction]
        status, text = margin_verdict(cells[a], cells[b], direction, float(test.get("floor", 0.0)))
        verdicts.append((status, f"{a} {direction} than {b}: {status} {text}"))
    statuses = [v for v, _ in verdicts]
    status = "PASS" if all(v == "PASS" for v in statuses) else "FAIL" if "FAIL" in statuses else "NOT-DECIDED"
    measured = {"PASS": "holds", "FAIL": "does not hold", "NOT-DECIDED": "not decided (spread too large)"}[status]
    detail = "; ".join(text for _, text in verdicts)
    if not all(cells[c].get("comparable", False) for c in needed):
        return Row(experiment, claim["id"], "claim", measured, None, "claim", "NOT-COMPARABLE",
                   f"{claim['statement']}: {detail}")
    return Row(experiment, claim["id"], "claim", measured, None, "claim", status, f"{claim['statement']}: {detail}")


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
    if rows is not None and (result or {}).get("row_variants"):
        # VARIANT=authors: cells keep the paper's row (frossl), METHODS may name either
        rows = set(rows) | {paper for paper, variant in result["row_variants"].items() if variant in rows}
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
            row = check_cell(label, cell, paper, tolerance, measured_cells.get(cell), expected.get("note", ""))
            out.append(with_references(row, spec, cell))
        for cell in measured_cells:  # measured values the paper does not print (e.g. Figure 3's): shown
            if cell not in spec["cells"] and (rows is None or row_of(cell) in rows):
                out.append(check_cell(label, cell, None, None, measured_cells[cell], "not in the paper's text"))
        spec_rows = _spec_rows(spec)
        for claim in spec["claims"]:
            if "margin" in claim:
                continue  # a claims-profile claim: judged only on that profile's results (below)
            if rows is not None and not set(claim.get("rows", spec_rows)) <= rows:
                continue
            row = check_claim(label, claim, measured_cells, spec_rows)
            if variant and row.status == "MISSING":
                continue
            out.append(row)
        return out
    # a reduced-budget profile: compare with values this project measured and recorded
    reference = load_measured_reference(experiment, profile, expected_dir)
    recorded = (reference or {}).get("cells", {})
    record_command = f"python -m repro.experiments record {experiment} --profile {profile}"
    profile_spec = (spec.get("profiles") or {}).get(profile) or {}
    columns = set(profile_spec.get("columns", []))
    # a one-seed reference has no spread of its own: it takes the tolerance of the profile that measured
    # the same schedule over several seeds (`spread_from`) where that is wider
    spread_from = profile_spec.get("spread_from")
    spread = (load_measured_reference(experiment, spread_from, expected_dir) or {}).get("cells", {}) \
        if spread_from else {}
    cells = [c for c in spec["cells"] if c.split("/")[0] in columns]
    for cell in list(dict.fromkeys(cells + sorted(set(measured_cells) | set(recorded)))):
        if rows is not None and row_of(cell) not in rows:
            continue
        if cell not in recorded:
            measured = measured_cells.get(cell)
            value = None if measured is None else measured.get("value")
            out.append(Row(label, cell, None, as_number(value) if value is not None else None, None, None,
                           "MISSING", f"no recorded {profile}-profile reference (expected_results/{profile}/"
                                      f"{experiment}.yaml): measure it, then `{record_command}`"))
            continue
        ref = recorded[cell]
        note = f"reference measured {ref.get('date', '?')} on {ref.get('hardware', '?')}"
        tolerance = ref.get("tolerance", default_tolerance)
        if ref.get("std") is None and cell in spread and spread[cell]["tolerance"] > tolerance:
            tolerance = spread[cell]["tolerance"]
            note += f"; tolerance from the {spread_from} profile's seed spread"
        out.append(check_cell(label, cell, ref["value"], tolerance, measured_cells.get(cell), note))
    # the profile's claims, judged separately from the recorded references (the margin rule)
    for claim in spec["claims"]:
        if profile in claim.get("profiles", ()) and "margin" in claim:
            if rows is None or set(claim.get("rows", [])) <= rows:
                out.append(check_margin_claim(label, claim, measured_cells, spread))
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
        # the paper's first, then the reduced ones (the claims profiles)
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
              r.verdict or r.status] for r in rows]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    text = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    text += [fmt.format(*line) for line in lines]
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    text.append("")
    text.append("  ".join(f"{s}: {n}" for s, n in counts.items()) + f"  (of {len(rows)})")
    seconds = [r.second_status for r in rows if r.second_status]
    if seconds:
        text.append(f"vs second references (not in the exit status): PASS: {seconds.count('PASS')}  "
                    f"FAIL: {seconds.count('FAIL')}  (of {len(seconds)}; docs/references.md)")
    notes = [(r.experiment, r.cell, r.note) for r in rows
             if r.note and (r.status in ("FAIL", "NOT-COMPARABLE", "NOT-DECIDED")
                           or (r.paper == "claim" and r.status == "PASS"))]
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
    parser.add_argument("--profile", default=None, help="only results of this profile (paper, claims, ...)")
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
    # the paper's verdict only: a FAIL vs the paper that PASSes vs the second reference still fails
    failed = any(r.status == "FAIL" for r in table)
    missing = any(r.status == "MISSING" for r in table)
    return 1 if failed or (args.strict and missing) else 0


if __name__ == "__main__":
    run_cli(main)
