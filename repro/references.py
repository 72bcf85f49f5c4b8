"""Where each expected value comes from, and a second published reference where one exists.

Every cell of expected_results/*.yaml names a `source`, a key of the file's `sources` mapping:
the paper's own run, a value the paper copied from another paper (which one), or a value
recomputed from other cells. Where the recipe this artifact follows has a published result of
its own (solo-learn's README, a method's own repository), the cell carries it as
`second: {ref: KEY, value: V}`, KEY naming an entry of the file's `second_references` (label,
file and commit, tolerance, rationale); a cell without one says why (its own `no_second`, or
the file's `no_second_reference`).

The checker (repro/check.py) gives such cells a second verdict beside the paper's; the exit status
follows the paper's verdict only (the paper is what this artifact reproduces).

    python -m repro.references            # rewrite docs/references.md from expected_results/
"""
from __future__ import annotations

import sys
from pathlib import Path

from repro.atomic import atomic_write_text
from repro.cli import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "references.md"
ORDER = ["figure2", "table2", "table3", "figure3", "figure4"]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_sources(path: Path, spec: dict) -> None:
    """Every cell names a known source, and a second reference (known, numeric) or why it has none."""
    fix = f"fix {path} (`git checkout -- {path}` restores a shipped file)"
    sources = spec.get("sources") or {}
    seconds = spec.get("second_references") or {}
    if not isinstance(sources, dict) or not isinstance(seconds, dict):
        raise UserError(f"{path}: 'sources' and 'second_references' must be mappings of key -> entry: {fix}")
    for key, entry in sources.items():
        if not isinstance(entry, dict) or not entry.get("label") or not entry.get("detail"):
            raise UserError(f"{path}: sources.{key} needs a 'label' and a 'detail': {fix}")
    for key, entry in seconds.items():
        if not isinstance(entry, dict) or not entry.get("label") or not entry.get("source") \
                or not _is_number(entry.get("tolerance")):
            raise UserError(f"{path}: second_references.{key} needs a 'label', a 'source' (file, commit) and a "
                            f"numeric 'tolerance': {fix}")
    for cell, entry in (spec.get("cells") or {}).items():
        if entry.get("source") not in sources:
            raise UserError(f"{path}: cell '{cell}' has source {entry.get('source')!r}, not one of the file's "
                            f"sources ({', '.join(sources) or 'none defined'}): {fix}")
        second = entry.get("second")
        if second is None:
            if not (entry.get("no_second") or spec.get("no_second_reference")):
                raise UserError(f"{path}: cell '{cell}' has no 'second' reference and no 'no_second' reason: {fix}")
            continue
        if not isinstance(second, dict) or second.get("ref") not in seconds or not _is_number(second.get("value")):
            raise UserError(f"{path}: cells.{cell}.second must be {{ref: <one of {', '.join(seconds) or 'none'}>, "
                            f"value: <number>}}, not {second!r}: {fix}")


def cell_source(spec: dict, cell: str) -> dict:
    """The source entry ({label, detail}) of a cell; {} for cells the file does not list."""
    entry = (spec.get("cells") or {}).get(cell) or {}
    return (spec.get("sources") or {}).get(entry.get("source"), {})


def second_reference(spec: dict, cell: str) -> dict | None:
    """{label, source, tolerance, value, key} of a cell's second reference, or None."""
    second = ((spec.get("cells") or {}).get(cell) or {}).get("second")
    if not second:
        return None
    return {**spec["second_references"][second["ref"]], "value": float(second["value"]), "key": second["ref"]}


def disagreements(specs: dict[str, dict]) -> list[dict]:
    """Cells where the paper's value and the second reference differ by more than the paper's
    tolerance: a faithful rerun that lands on the second reference FAILs against the paper."""
    out = []
    for name in [n for n in ORDER if n in specs] + sorted(n for n in specs if n not in ORDER):
        spec = specs[name]
        default = (spec.get("tolerance") or {}).get("default")
        for cell, entry in spec["cells"].items():
            second = second_reference(spec, cell)
            if second is None or entry.get("paper") is None:
                continue
            tolerance = entry.get("tolerance", default)
            gap = entry["paper"] - second["value"]
            if abs(gap) > tolerance + 1e-9:
                out.append({"experiment": name, "cell": cell, "paper": entry["paper"], "tolerance": tolerance,
                            "source": cell_source(spec, cell)["label"], "second": second, "gap": gap,
                            "both_unreachable": abs(gap) > tolerance + second["tolerance"] + 1e-9})
    return out


def render_doc(specs: dict[str, dict]) -> str:
    """docs/references.md: generated from expected_results/ (a test keeps the file equal to this)."""
    lines = ["# Where the expected values come from, and where a faithful rerun will FAIL", "",
             "<!-- Generated by `python -m repro.references` from expected_results/*.yaml; "
             "tests/test_check.py fails when this file and the YAML disagree. Do not edit by hand. -->", "",
             "Every cell of `expected_results/*.yaml` names where the paper's number comes from. Where the "
             "recipe this artifact follows has a published result of its own, the cell also carries that "
             "value as a second reference, and `make check` prints both verdicts on one line, e.g. "
             "`FAIL vs paper (value from Ermolov et al. 2021) | PASS vs solo-learn published 90.74 +-1.0`. "
             "The exit status follows the verdict against the paper only: the paper is what this artifact "
             "reproduces; the second verdict tells a broken run from a paper that quoted another paper.", "",
             "## Cells where the two references disagree by more than the paper's tolerance", "",
             "A run that lands on the second reference FAILs against the paper in these cells. "
             "'Both unreachable' = the gap exceeds the sum of the two tolerances: no value can pass both.", "",
             "| experiment | cell | paper | paper's value from | second reference | value | gap | "
             "tolerance (paper / second) | both unreachable |",
             "|---|---|---|---|---|---|---|---|---|"]
    for d in disagreements(specs):
        lines.append(f"| {d['experiment']} | {d['cell']} | {d['paper']:g} | {d['source']} | {d['second']['label']} "
                     f"| {d['second']['value']:g} | {d['gap']:+.2f} | +-{d['tolerance']:.1f} / "
                     f"+-{d['second']['tolerance']:.1f} | {'yes' if d['both_unreachable'] else 'no'} |")
    lines += ["", "## Sources of every cell", ""]
    for name in [n for n in ORDER if n in specs] + sorted(n for n in specs if n not in ORDER):
        spec = specs[name]
        if not spec["cells"]:
            lines += [f"### {name}", "", f"No numeric cells: {spec.get('source', '')}.", ""]
            continue
        lines += [f"### {name}", ""]
        for key, entry in (spec.get("sources") or {}).items():
            cells = [c for c, e in spec["cells"].items() if e.get("source") == key]
            if cells:
                lines.append(f"- **{entry['label']}** ({len(cells)} cells: {', '.join(cells)}): "
                             f"{' '.join(str(entry['detail']).split())}")
        for key, entry in (spec.get("second_references") or {}).items():
            cells = [f"{c} {e['second']['value']:g}" for c, e in spec["cells"].items()
                     if (e.get("second") or {}).get("ref") == key]
            where = " ".join(str(entry["source"]).split()).rstrip(".")
            lines.append(f"- second reference **{entry['label']}** (tolerance +-{entry['tolerance']:.1f}; "
                         f"{where}): {', '.join(cells)}. "
                         f"{' '.join(str(entry.get('rationale', '')).split())}".rstrip())
        if spec.get("no_second_reference"):
            lines.append(f"- cells without a second reference: {' '.join(spec['no_second_reference'].split())}")
        for cell, entry in spec["cells"].items():
            if entry.get("no_second") or entry.get("caveat"):
                text = " ".join(str(entry.get("no_second") or entry.get("caveat")).split())
                lines.append(f"- {cell}: {text}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    from repro.expected import EXPECTED_DIR, load_expected
    if argv not in ([], ["--check"]):
        raise UserError(f"unknown arguments {' '.join(argv)}: use `python -m repro.references` (rewrite "
                        f"{DOC.relative_to(ROOT)}) or `--check` (exit 1 if it is stale)")
    text = render_doc(load_expected(EXPECTED_DIR))
    if argv == ["--check"]:
        stale = not DOC.exists() or DOC.read_text() != text
        print(f"{DOC.relative_to(ROOT)} is {'stale: run python -m repro.references' if stale else 'up to date'}")
        return 1 if stale else 0
    atomic_write_text(DOC, text)
    print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
