"""Module docstrings of repro/ stay short: what the module is, its equation and deviations, links.
Definitions belong to the function they describe, history to docs/sources.md, choices to docs/."""
import ast

from tests.conftest import ROOT

MAX_LINES = 15


def test_every_module_docstring_in_repro_has_at_most_15_lines():
    lines = {}
    for path in sorted((ROOT / "repro").rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        lines[path.relative_to(ROOT).as_posix()] = len(docstring.splitlines()) if docstring else 0
    assert len(lines) > 50 and lines["repro/train.py"] > 0   # the walk found the package
    assert {path: n for path, n in lines.items() if n > MAX_LINES} == {}
