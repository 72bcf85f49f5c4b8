"""The layers of the code, written down once, bottom to top. Every module of repro/, data_prep/ and
benchmarks/ belongs to exactly one; it may import (at module level or inside a function: both
count) only from its own layer or below, and no modules import each other in a circle.

    1 formats   what everything agrees on and nothing depends on: file formats, the dataset
                catalog, augmentation recipes, seeds, losses, optimizers, the config
    2 data      loaders and augmentations, models, device and precision, checkpoints
    3 methods   a method = its loss + heads + state
    4 train     training, evaluation, the demo and the benchmarks
    5 results   experiments, check, report, gpu-check
    data_prep   beside them all: the converters import only the formats layer

A new module fails this test until it is given a layer here.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("repro", "data_prep", "benchmarks")

# (layer number, name, module prefixes); a module takes the layer of its longest matching prefix
LAYERS = [
    (1, "formats", ["repro", "repro.cli", "repro.seeds", "repro.atomic", "repro.config", "repro.method_args",
                    "repro.formats", "repro.losses", "repro.optim", "repro.distributed", "repro.spectra"]),
    (2, "data", ["repro.data", "repro.models", "repro.device", "repro.checkpoint"]),
    (3, "methods", ["repro.methods"]),
    (4, "train", ["repro.train", "repro.metrics", "repro.evaluate", "repro.export", "repro.demo", "repro.faults",
                  "repro.linear_regime", "benchmarks"]),
    (5, "results", ["repro.experiments", "repro.check", "repro.expected", "repro.references", "repro.report",
                    "repro.gpu_check", "repro.console"]),
]
DATA_PREP_MAY_IMPORT = 1   # the converters: the formats layer only (plus data_prep itself)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path], type_only: bool = False) -> set[str]:
    """The project modules `path` imports, at module level or inside a function. `from pkg import
    name` names the submodule pkg.name when there is one (importing a submodule is not a dependency
    on its package's re-exports); imports under `if TYPE_CHECKING:` only with `type_only`."""
    tree = ast.parse(path.read_text())
    annotations = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in annotations and not type_only:      # annotations only, never executed
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in PACKAGES:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            found |= subs
            if len(subs) < len(node.names):
                found.add(node.module)
    return found


def layer_of(module: str) -> int | None:
    if module.split(".")[0] == "data_prep":
        return 0
    matches = [(len(prefix), number) for number, _, prefixes in LAYERS for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def test_every_module_has_a_layer():
    unassigned = sorted(m for m in all_modules() if layer_of(m) is None)
    assert not unassigned, f"give these modules a layer in tests/test_layers.py: {unassigned}"


def test_every_import_goes_to_the_same_layer_or_below():
    modules = all_modules()
    names = {number: name for number, name, _ in LAYERS}
    wrong = []
    for module, path in modules.items():
        mine = layer_of(module)
        for target in imports_of(path, modules):
            theirs = layer_of(target)
            if mine == 0:    # data_prep: itself and the formats layer only
                allowed = target.split(".")[0] == "data_prep" or (theirs is not None and 0 < theirs <= DATA_PREP_MAY_IMPORT)
            else:
                allowed = theirs is not None and 0 < theirs <= mine
            if not allowed:
                wrong.append(f"{module} ({names.get(mine, 'data_prep')}) imports {target} "
                             f"({names.get(theirs, 'data_prep')})")
    assert not wrong, "imports reaching up a layer:\n" + "\n".join(wrong)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules it imports (function-level and TYPE_CHECKING imports included), not
    counting a package's own imports of its submodules (an __init__ that imports its children is the
    package's public face, not a dependency of theirs on it)."""
    return {module: {t for t in imports_of(path, modules, type_only=True) if t in modules
                     and not (path.name == "__init__.py" and t.startswith(module + "."))}
            for module, path in modules.items()}


def circles_of(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}   # 1 on the stack, 2 done
    circles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack
                               else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return circles


def test_no_import_circles():
    """No modules import each other in a circle, counting imports inside functions and under
    `if TYPE_CHECKING:` (a circle there still ties the modules together)."""
    circles = circles_of(import_graph(all_modules()))
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checker_sees_a_circle_through_a_function_level_import(tmp_path):
    """Two modules, one importing the other at module level, the other back inside a function or
    only for annotations: a circle either way; without the way back, none."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from repro.fake_b import g\n")
    modules = {"repro.fake_a": a, "repro.fake_b": b}
    for back in ("def f():\n    from repro.fake_a import x\n",
                 "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from repro.fake_a import x\n"):
        b.write_text(back)
        assert circles_of(import_graph(modules)) == ["repro.fake_a -> repro.fake_b -> repro.fake_a"]
    b.write_text("import json\n")
    assert circles_of(import_graph(modules)) == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rules above are not vacuous: a formats-layer file importing the trainer is caught."""
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from repro.train import train\n")
    modules = all_modules()
    assert imports_of(fake, modules) == {"repro.train"}
    assert layer_of("repro.formats.catalog") == 1 < layer_of("repro.train") == 4
    assert layer_of("data_prep.write_cifar") == 0 and layer_of("repro.methods.base") == 3
