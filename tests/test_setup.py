"""scripts/setup.sh's checks (simulated with fake python3/dpkg/apt-get on PATH), its offline install
(small wheels built here, into a virtualenv under tmp_path, no network), the lock files, and the
SLURM batch script (fake scontrol/srun). Nothing is installed outside tmp_path."""
import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

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


# ---- offline install (--offline DIR) ---------------------------------------------------------
def dummy_wheel(folder, name, version, requires=()):
    """A pure-Python wheel of package `name` (module `name`), written by hand: the files, METADATA,
    WHEEL and a RECORD with each file's hash."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}

    def digest(text):
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    files[f"{dist}/RECORD"] = "".join(f"{path},sha256={digest(text)},{len(text.encode())}\n"
                                      for path, text in files.items()) + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for member, text in files.items():
            whl.writestr(member, text)
    return path


def wheelhouse(tmp_path, python_version):
    """What `make wheelhouse` writes: the wheels, requirements.txt pinning them by hash, wheelhouse.txt."""
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    wheels = [dummy_wheel(folder, "frossl_dummy_a", "1.0"),
              dummy_wheel(folder, "frossl_dummy_b", "2.0", requires=["frossl_dummy_a==1.0"])]
    (folder / "requirements.txt").write_text("".join(
        f"{w.name.split('-')[0]}=={w.name.split('-')[1]} --hash=sha256:{hashlib.sha256(w.read_bytes()).hexdigest()}\n"
        for w in wheels))
    (folder / "wheelhouse.txt").write_text(f"python={python_version} platform=manylinux_2_28_x86_64 with_torch=0\n")
    return folder


def site_module(tmp_path, torch_version):
    """A cluster's site module, as PYTHONPATH shows it: torch (at torch_version) and the rest of the
    trainer's imports as stubs; no ffcv, scikit-learn or tensorboard."""
    site = tmp_path / f"site-{torch_version}"
    for module in ("torch", "torchvision", "numpy", "PIL", "yaml", "tqdm"):
        (site / module).mkdir(parents=True, exist_ok=True)
        (site / module / "__init__.py").write_text(f"__version__ = {torch_version if module == 'torch' else '1.0'!r}\n")
    return site


def offline_setup(tmp_path, folder, torch_version):
    """setup.sh --offline with the network closed: a bogus index, no proxies, no pip config."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("PIP_")}
    base = getattr(sys, "_base_executable", sys.executable)
    env.update(VENV=str(tmp_path / "venv"), BASE_PYTHON=base, PYTHONPATH=str(site_module(tmp_path, torch_version)),
               PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(["bash", str(SETUP), "--offline", str(folder)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def test_offline_install_from_a_wheelhouse_with_no_network(tmp_path):
    version = "%d.%d" % sys.version_info[:2]
    folder = wheelhouse(tmp_path, version)
    result = offline_setup(tmp_path, folder, "2.11.0+cu128")
    assert result.returncode == 0, result.stdout + result.stderr
    venv_python = tmp_path / "venv" / "bin" / "python"
    imported = subprocess.run([str(venv_python), "-c", "import frossl_dummy_a, frossl_dummy_b; "
                               "print(frossl_dummy_a.__file__, frossl_dummy_b.VERSION)"],
                              capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    path, dummy_version = imported.stdout.split()
    assert path.startswith(str(tmp_path / "venv")) and dummy_version == "2.0"
    assert "torch 2.11.0+cu128 (supported >=2.11,<3)" in result.stdout
    off = next(line for line in result.stdout.splitlines() if "off without optional packages" in line)
    assert "ffcv: the torchvision loader" in off and "scikit-learn" in off and "tensorboard" in off
    assert (tmp_path / "venv" / ".setup-offline").read_text().strip() == str(folder)


def test_offline_install_refuses_an_unsupported_torch_a_damaged_wheel_or_another_python(tmp_path):
    """Each a one-line error before the virtualenv is made."""
    version = "%d.%d" % sys.version_info[:2]
    folder = wheelhouse(tmp_path, version)
    line = one_line_error(offline_setup(tmp_path, folder, "2.10.1"))
    assert "torch 2.10.1 is outside the supported range >=2.11,<3" in line and "WITH_TORCH=1" in line
    assert one_line_error(offline_setup(tmp_path, folder, "3.0.0")).startswith("setup: error: torch 3.0.0 is outside")
    (folder / "frossl_dummy_a-1.0-py3-none-any.whl").write_bytes(b"not the pinned wheel")
    line = one_line_error(offline_setup(tmp_path, folder, "2.11.0"))
    assert "hash requirements.txt gives frossl_dummy_a==1.0" in line and "copy the wheelhouse again" in line
    assert not (tmp_path / "venv").exists()
    (tmp_path / "other").mkdir()
    line = one_line_error(offline_setup(tmp_path / "other", wheelhouse(tmp_path / "other", "3.99"), "2.11.0"))
    assert "is for Python 3.99" in line and f"PYTHON_VERSION={version}" in line
    line = one_line_error(offline_setup(tmp_path / "other", tmp_path / "absent", "2.11.0"))
    assert "holds no requirements.txt" in line and "make wheelhouse" in line


def test_a_venv_set_up_offline_is_left_alone_by_the_online_recipe(tmp_path):
    """make's every target runs setup.sh: on an offline node's venv it must not try apt or an index."""
    fake_python(tmp_path, "3.10")                      # the online recipe would stop on this one
    fake(tmp_path, "apt-get", f"touch {tmp_path}/apt-was-called")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".setup-offline").write_text("/wheelhouse\n")
    result = run_main(tmp_path, tmp_path)
    assert result.returncode == 0 and result.stdout == result.stderr == ""
    (tmp_path / "venv" / ".setup-offline").unlink()
    assert "Python 3.10" in one_line_error(run_main(tmp_path, tmp_path))


def test_wheelhouse_platform_flags_take_older_manylinux_wheels(tmp_path):
    flags = call_setup_function(tmp_path, "platform_flags manylinux_2_28_x86_64").stdout.split()
    platforms = flags[1::2]
    assert platforms[0] == "manylinux_2_28_x86_64" and platforms[-3:] == [
        "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
    assert len(platforms) == 28 - 17 + 1 + 2
    assert call_setup_function(tmp_path, "platform_flags macosx_11_0_arm64").stdout.split() == [
        "--platform", "macosx_11_0_arm64"]


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
    # the pages a user installs from name 3.11 as the floor; 3.10 only as too old, with 3.11+ as the fix
    for page in (ROOT / "README.md", ROOT / "docs" / "setup.md"):
        text = page.read_text()
        assert "Python 3.11" in text, page
        for line in (line for line in text.splitlines() if "3.10" in line):
            assert "too old" in line and "3.11" in line, f"{page.name}: {line}"


def test_scripts_parse():
    for script in (SETUP, SBATCH, ROOT / "scripts" / "fresh_machine_test.sh", ROOT / "scripts" / "lock.sh"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
