"""A `sitecustomize.py` for test subprocesses that read dataset files the tests wrote: torchvision
checks the released files' md5 sums, which written files cannot match. The shim switches off that
one check in one torchvision module, when that module is first imported, and nothing else."""
from __future__ import annotations

import os
from pathlib import Path

TEMPLATE = '''"""Test only: accept {what} written by the tests; only torchvision's integrity check is switched off."""
import importlib.abc
import importlib.util
import sys


class _AcceptWrittenFiles(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != {module!r}:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            {patch}

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AcceptWrittenFiles())
'''

# the checks to switch off: (module, the line that replaces its check inside exec_module)
CIFAR = ("torchvision.datasets.cifar", "module.check_integrity = lambda path, md5=None: True", "CIFAR-10 pickles")
STL10 = ("torchvision.datasets.stl10", "module.STL10._check_integrity = lambda self: True", "STL-10 binaries")


def write_shim(folder: Path, *checks: tuple[str, str, str]) -> str:
    """Write folder/sitecustomize.py (one finder per check) and return a PYTHONPATH that puts it first."""
    folder.mkdir(parents=True, exist_ok=True)
    source = "\n\n".join(TEMPLATE.format(module=module, patch=patch, what=what) for module, patch, what in checks)
    (folder / "sitecustomize.py").write_text(source)
    return os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
