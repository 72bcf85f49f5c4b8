"""The installed commands (pyproject.toml [project.scripts]): `frossl-train` is `python -m repro.train`,
and so on for evaluate, check and export. Each module is imported only when its command runs."""
from __future__ import annotations

import importlib

from repro.cli import run_cli


def _command(module: str):
    def command() -> None:
        run_cli(importlib.import_module(module).main)
    command.__name__ = module.rsplit(".", 1)[-1]
    return command


train = _command("repro.train")
evaluate = _command("repro.evaluate")
check = _command("repro.check")
export = _command("repro.export")
