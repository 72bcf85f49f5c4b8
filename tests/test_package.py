"""The artifact as a package: license, citation, pyproject's dependencies and commands, and
`pip install .` into a fresh virtualenv giving working `frossl-*` commands."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest
import yaml

from repro import console
from tests.conftest import ROOT

ARXIV_ID = "2310.02903"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(requirements_file: str) -> list[str]:
    lines = (ROOT / requirements_file).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_citation_names_the_paper_as_docs_sources_records_it_and_the_artifact():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    sources = (ROOT / "docs/sources.md").read_text()
    assert f"*{paper['title']}*" in sources and f"arXiv {ARXIV_ID}" in sources
    assert paper["url"] == f"https://arxiv.org/abs/{ARXIV_ID}"
    assert ARXIV_ID in paper["journal"] and paper["identifiers"][0]["value"] == f"10.48550/arXiv.{ARXIV_ID}"
    authors = ", ".join(a["family-names"] for a in paper["authors"])
    assert "Skean, Dhakal,\nJacobs, Sanchez Giraldo" in sources and authors == "Skean, Dhakal, Jacobs, Sanchez Giraldo"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n") and PYPROJECT["license"] == "MIT"


def test_pyproject_dependencies_are_the_top_level_requirements():
    assert PYPROJECT["dependencies"] == pins("requirements.txt")
    assert PYPROJECT["optional-dependencies"]["test"] == pins("requirements-test.txt")


def test_each_command_runs_its_module_main(monkeypatch, tmp_path):
    assert PYPROJECT["scripts"] == {f"frossl-{name}": f"repro.console:{name}"
                                    for name in ("train", "evaluate", "check", "export")}
    # through run_cli: a bad folder is a one-line error with exit status 2
    monkeypatch.setattr(sys, "argv", ["frossl-export", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_status:
        console.export()
    assert exit_status.value.code == 2
    monkeypatch.setattr(sys, "argv", ["frossl-train", "--help"])
    with pytest.raises(SystemExit) as exit_status:
        console.train()
    assert exit_status.value.code == 0


@pytest.mark.slow   # the default run: test_each_command_runs_its_module_main, in this process
def test_pip_install_into_a_fresh_venv_gives_working_commands(tmp_path):
    # Offline: a fresh virtualenv without pip sees this (locked) environment's packages through a .pth
    # file, and `pip install --no-index` must find every pyproject dependency satisfied by them.
    source = tmp_path / "src"   # a copy: building in the checkout would leave build/ and *.egg-info there
    for package in ("repro", "data_prep"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = subprocess.run([str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / site / "locked-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")

    def run(*command):
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)

    installed = run(str(venv / "bin/python"), "-m", "pip", "install", "--no-index", "--no-build-isolation", str(source))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    where = run(str(venv / "bin/python"), "-c", "import repro, pathlib; p = pathlib.Path(repro.__file__).parent; "
                "print(p, (p / 'configs/demo.yaml').is_file())")
    assert where.stdout.split() == [f"{site}/repro", "True"], where.stdout + where.stderr
    helped = run(str(venv / "bin/frossl-train"), "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("Self-supervised pretraining"), helped.stderr
    for command in ("frossl-evaluate", "frossl-check", "frossl-export"):
        assert run(str(venv / "bin" / command), "--help").returncode == 0, command
    failed = run(str(venv / "bin/frossl-export"), str(tmp_path / "no-run"))
    assert failed.returncode == 2 and re.fullmatch(r"error: .* is not a run folder .*\n", failed.stderr)
