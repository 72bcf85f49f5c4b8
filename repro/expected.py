"""Reading expected_results/*.yaml (the paper's values, tolerances, sources, second references)
and the result JSON files the experiments write; every malformed file is a one-line UserError
naming the file, the key and the fix. The comparison itself is repro/check.py."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from repro.cli import UserError

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_DIR = ROOT / "expected_results"


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
    validate_sources(path, spec)


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


def load_measured_reference(experiment: str, profile: str, expected_dir: Path = EXPECTED_DIR) -> dict | None:
    """expected_results/<profile>/<experiment>.yaml: the values this project measured under a
    reduced profile (claims, claims-quick, claims-all) and recorded with its own command; None if absent."""
    path = Path(expected_dir) / profile / f"{experiment}.yaml"
    if not path.exists():
        return None
    reference = _read_expected_yaml(path)
    fix = (f"delete {path} and record it again with its profile's record command (docs/experiments.md, "
           f"docs/claims.md)")
    cells = reference.get("cells") if isinstance(reference, dict) else None
    if not isinstance(cells, dict):
        raise UserError(f"{path}: not a measured-reference file (no 'cells' mapping): {fix}")
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
