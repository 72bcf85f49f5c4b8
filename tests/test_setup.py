"""scripts/setup.sh's checks (simulated with fake python3/dpkg/apt-get on PATH), the lock files,
and the SLURM batch script (fake scontrol/srun). Nothing here installs anything."""
import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT

SETUP = ROOT / "scripts" / "setup.sh"
SBATCH = ROOT / "scripts" / "slurm" / "frossl.sbatch"


def fake(bin_dir, name, body):
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def fake_python(bin_dir, version, ensurepip=True, headers=True):
    """A python3 that reports `version` and fails the venv / Python.h probes as asked."""
    fake(bin_dir, "python3", f"""
case "$*" in
  *"import ensurepip"*) exit {0 if ensurepip else 1} ;;
  *Python.h*) exit {0 if headers else 1} ;;
  *sys.version_info*) echo {version} ;;
  *) exit 3 ;;
esac""")


def bash(script, tmp_path, env=None, path_first=None):
    full_env = {**os.environ, **(env or {})}
    if path_first:
        full_env["PATH"] = f"{path_first}:{full_env['PATH']}"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=full_env,
                          cwd=tmp_path, timeout=60)


def call_setup_function(tmp_path, call, bin_dir=None, env=None):
    return bash(f"source {SETUP}; USE_VENV=1; {call}", tmp_path, env, bin_dir)


def one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("version", ["3.10", "3.9", "2.7"])
def test_old_python_is_refused_in_one_line(tmp_path, version):
    fake_python(tmp_path, version)
    line = one_line_error(call_setup_function(tmp_path, "check_python python3", tmp_path))
    assert f"Python {version}" in line and "3.11+" in line and "BASE_PYTHON" in line


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_python_311_and_newer_pass(tmp_path, version):
    fake_python(tmp_path, version)
    result = call_setup_function(tmp_path, "check_python python3", tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == version


def test_absent_python_is_named(tmp_path):
    line = one_line_error(call_setup_function(tmp_path, "check_python python3.99-not-here"))
    assert "no 'python3.99-not-here' found" in line


def test_missing_venv_and_headers_map_to_the_version_matched_packages(tmp_path):
    fake_python(tmp_path, "3.11", ensurepip=False, headers=False)
    result = call_setup_function(tmp_path, "missing_python_packages python3 3.11", tmp_path)
    assert result.stdout.strip() == "python3.11-venv python3.11-dev"
    fake_python(tmp_path, "3.12", ensurepip=True, headers=False)
    assert call_setup_function(tmp_path, "missing_python_packages python3 3.12", tmp_path).stdout.strip() == "python3.12-dev"
    fake_python(tmp_path, "3.12")
    assert call_setup_function(tmp_path, "missing_python_packages python3 3.12", tmp_path).stdout.strip() == ""


def test_missing_apt_packages_asks_dpkg(tmp_path):
    fake(tmp_path, "dpkg", '[ "$2" = g++ ]')  # only g++ installed
    result = call_setup_function(tmp_path, "missing_apt_packages pkg-config g++ libturbojpeg0-dev", tmp_path)
    assert result.stdout.strip() == "pkg-config libturbojpeg0-dev"


def run_main(tmp_path, bin_dir, **env):
    env = {"VENV": str(tmp_path / "venv"), **env}
    return bash(f"bash {SETUP}", tmp_path, env, bin_dir)


def test_setup_installs_what_a_stock_debian_lacks_through_sudo(tmp_path):
    """Not root, no venv, no headers: apt-get through sudo gets python3.11-venv/-dev and ffcv's
    narrow -dev set; a python3 that still lacks them afterwards (not the distribution's) stops setup."""
    log = tmp_path / "calls.log"
    fake_python(tmp_path, "3.11", ensurepip=False, headers=False)
    fake(tmp_path, "id", 'echo 1000')
    fake(tmp_path, "dpkg", "exit 1")
    fake(tmp_path, "sudo", f'echo "sudo $*" >> {log}; "$@"')
    fake(tmp_path, "apt-get", f'echo "apt-get $*" >> {log}')
    line = one_line_error(run_main(tmp_path, tmp_path))
    assert "still lacks venv or Python.h" in line and "BASE_PYTHON" in line
    calls = log.read_text()
    install = next(l for l in calls.splitlines() if l.startswith("apt-get") and " install " in l)
    assert "sudo env DEBIAN_FRONTEND=noninteractive apt-get install" in calls
    for package in ("python3.11-venv", "python3.11-dev", "pkg-config", "g++", "libopencv-core-dev",
                    "libopencv-imgproc-dev", "libturbojpeg0-dev"):
        assert f" {package}" in install, package
    assert "libopencv-dev" not in install


def test_setup_without_apt_names_the_missing_packages(tmp_path):
    fake_python(tmp_path, "3.11", ensurepip=False, headers=True)
    fake(tmp_path, "dpkg", "exit 0")
    # PATH without apt-get: only the fakes and the core tools setup.sh uses
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("cat", "sha256sum", "cut", "dirname", "id", "mktemp", "rm", "mkdir", "env", "bash"):
        found = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        os.symlink(found, tools / tool)
    result = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={"PATH": f"{tmp_path}:{tools}", "VENV": str(tmp_path / "venv"), "HOME": str(tmp_path)})
    line = one_line_error(result)
    assert "missing system packages: python3.11-venv" in line and "no apt-get" in line


def test_setup_refuses_an_old_python_before_touching_anything(tmp_path):
    fake_python(tmp_path, "3.10")
    fake(tmp_path, "apt-get", f"touch {tmp_path}/apt-was-called")
    line = one_line_error(run_main(tmp_path, tmp_path))
    assert "Python 3.10" in line
    assert not (tmp_path / "apt-was-called").exists() and not (tmp_path / "venv").exists()


def test_unknown_flag_is_one_line(tmp_path):
    line = one_line_error(bash(f"bash {SETUP} --bogus", tmp_path))
    assert "--bogus" in line


def test_opencv_shim_asks_the_linker_for_core_and_imgproc_only(tmp_path):
    result = call_setup_function(tmp_path, f"write_opencv_shim {tmp_path}/pc; PKG_CONFIG_PATH={tmp_path}/pc "
                                 "pkg-config --cflags --libs opencv4 || cat " + f"{tmp_path}/pc/opencv4.pc")
    flags = result.stdout.split()
    assert sorted(f for f in flags if f.startswith("-l")) == ["-lopencv_core", "-lopencv_imgproc"]
    assert f"-I{tmp_path}/pc/include" in flags and "-I/usr/include/opencv4" in flags
    header = (tmp_path / "pc" / "include" / "opencv2" / "opencv.hpp").read_text()
    assert re.findall(r"#include <(\S+)>", header) == ["opencv2/core.hpp", "opencv2/imgproc.hpp"]


# ---- lock files -----------------------------------------------------------------------------
def lock_entries(name):
    """{package: (version, number of hashes)} of a uv/pip-compile lock file; a package pinned per
    Python version appears once per version, so the value is a list."""
    text = (ROOT / name).read_text()
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+?)(?: ;[^\\\n]*)? \\", block)
        if m:
            entries.setdefault(m.group(1).lower(), []).append((m.group(2), len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block))))
    return entries


@pytest.mark.parametrize("lock", ["requirements-build.lock", "requirements.lock", "requirements-ffcv.lock",
                                  "requirements-test.lock"])
def test_every_locked_package_is_pinned_with_hashes(lock):
    text = (ROOT / lock).read_text()
    requirement_lines = [l for l in text.splitlines() if l and not l.startswith((" ", "#"))]
    entries = lock_entries(lock)
    assert len(requirement_lines) == sum(len(v) for v in entries.values()), "an entry without == pin"
    assert all(hashes >= 1 for versions in entries.values() for _, hashes in versions)


def test_lock_agrees_with_the_hand_written_pins():
    locked = {**lock_entries("requirements.lock"), **lock_entries("requirements-ffcv.lock")}
    for name in ("requirements.txt", "requirements-ffcv.txt", "requirements-build.txt"):
        source = lock_entries("requirements-build.lock") if name == "requirements-build.txt" else locked
        for line in (ROOT / name).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = (s.strip() for s in line.split("=="))
                assert [v for v, _ in source[package.lower()]] == [version], f"{name}: {package}"
    # ffcv is built on its own (no build isolation), so it is in its own lock only
    assert "ffcv" not in lock_entries("requirements.lock")
    assert list(lock_entries("requirements-ffcv.lock")) == ["ffcv"]
    # Pillow changes augmentation pixels; setuptools provides the distutils ffcv's setup.py imports
    assert "pillow" in locked and "setuptools" in lock_entries("requirements-build.lock")
    # the test lock was resolved against the runtime lock: shared packages have one version
    for package, versions in lock_entries("requirements-test.lock").items():
        if package in locked:
            assert versions == locked[package], package


def test_python_floor_is_311_everywhere():
    assert re.search(r'^requires-python = ">=3\.11"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert "MIN_PYTHON=3.11" in SETUP.read_text()
    assert "3.10" not in (ROOT / "README.md").read_text().split("## Reproducing the paper")[0]


def test_scripts_parse():
    for script in (SETUP, SBATCH, ROOT / "scripts" / "fresh_machine_test.sh", ROOT / "scripts" / "lock.sh"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
