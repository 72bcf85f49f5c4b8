#!/usr/bin/env bash
# The ONE install recipe: used by `make` (every target that needs Python), by .ci/run (through
# `make test`) and by the Dockerfile's build stage. Idempotent and cheap when nothing changed: a
# stamp file holds the hash of this script and the lock files.
#
#   scripts/setup.sh                 # project-local virtualenv in $VENV (default .venv)
#   scripts/setup.sh --system        # install into the base Python itself (no virtualenv)
#   scripts/setup.sh --no-test-deps  # skip requirements-test.lock (lightly, hadolint)
#   scripts/setup.sh --no-project    # skip the editable install of this project (the image's build
#                                    # stage: the runtime stage puts the source on PYTHONPATH)
#
# Needs only python3 (3.11+), make and apt on Debian/Ubuntu: the version-matched python3.X-venv
# and python3.X-dev and the libraries ffcv compiles against are installed with apt-get (through
# sudo when not root). BASE_PYTHON picks another interpreter than python3.
#
# Every Python package comes from a lock file that pins all transitive dependencies with their
# hashes (pip --require-hashes); scripts/lock.sh regenerates them from requirements*.txt.
set -euo pipefail

MIN_PYTHON=3.11
# What ffcv 1.0.2 compiles and links against: its libffcv.cpp uses cv::Mat and cv::resize (OpenCV
# core + imgproc) and libturbojpeg. libopencv-dev would add ~470 packages (Qt, GDAL, HDF5, MPI).
FFCV_BUILD_PACKAGES="pkg-config g++ libopencv-core-dev libopencv-imgproc-dev libturbojpeg0-dev"

die() {
  echo "setup: error: $*" >&2
  exit 2
}

# run a command as root: directly when root, else through sudo
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "'$*' needs root and sudo is missing: run it as root, then rerun make"
  fi
}

# print the X.Y version of Python $1, or stop with a one-line error when it is absent or too old
check_python() {
  local py=$1 version
  command -v "$py" >/dev/null 2>&1 ||
    die "no '$py' found: install Python $MIN_PYTHON+ (apt-get install python3) or set BASE_PYTHON=/path/to/python3.11"
  version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
    die "'$py' does not run: install Python $MIN_PYTHON+ or set BASE_PYTHON=/path/to/python3.11"
  local major=${version%%.*} minor=${version#*.}
  if [ "$major" -lt "${MIN_PYTHON%%.*}" ] ||
     { [ "$major" -eq "${MIN_PYTHON%%.*}" ] && [ "$minor" -lt "${MIN_PYTHON#*.}" ]; }; then
    die "'$py' is Python $version, the pinned packages (numpy 2.4, scikit-learn 1.9) need $MIN_PYTHON+: install python3.11 or newer and rerun with BASE_PYTHON=python3.11"
  fi
  echo "$version"
}

# the apt packages Python $1 (version $2) lacks: python3.X-venv without ensurepip (no virtualenv
# possible), python3.X-dev without Python.h (ffcv's C extension and torch.compile need it)
missing_python_packages() {
  local py=$1 version=$2 missing=""
  if [ "$USE_VENV" = 1 ] && ! "$py" -c 'import ensurepip' >/dev/null 2>&1; then
    missing="$missing python$version-venv"
  fi
  if ! "$py" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' >/dev/null 2>&1; then
    missing="$missing python$version-dev"
  fi
  echo "${missing# }"
}

# the packages of $@ that dpkg does not list as installed
missing_apt_packages() {
  local missing="" pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  echo "${missing# }"
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "missing system packages: $*; no apt-get here: install them with your package manager, then rerun"
  echo "setup: installing apt packages: $*"
  as_root apt-get update -qq
  # shellcheck disable=SC2068 # one word per package
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $@ >/dev/null
}

# a pkg-config folder whose opencv4.pc names only core + imgproc (Debian ships opencv4.pc only in
# libopencv-dev), and a one-module opencv2/opencv.hpp that shadows the umbrella header libffcv.cpp
# includes (the real one also pulls in the headers of every module the distribution built)
write_opencv_shim() {
  local dir=$1
  mkdir -p "$dir/include/opencv2"
  printf '#include <opencv2/core.hpp>\n#include <opencv2/imgproc.hpp>\n' > "$dir/include/opencv2/opencv.hpp"
  cat > "$dir/opencv4.pc" <<EOF
Name: opencv4
Description: OpenCV core and imgproc, the two modules ffcv uses
Version: 4
Cflags: -I$dir/include -I/usr/include/opencv4
Libs: -lopencv_imgproc -lopencv_core
EOF
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  VENV=${VENV:-.venv}
  USE_VENV=1
  local test_deps=1 project=1 arg
  for arg in "$@"; do
    case "$arg" in
      --system) USE_VENV=0 ;;
      --no-test-deps) test_deps=0 ;;
      --no-project) project=0 ;;
      *) die "unknown flag '$arg': use --system, --no-test-deps or --no-project" ;;
    esac
  done

  local locks="requirements-build.lock requirements.lock requirements-ffcv.lock"
  [ "$test_deps" = 1 ] && locks="$locks requirements-test.lock"
  local stamp hash
  if [ "$USE_VENV" = 1 ]; then
    stamp="$VENV/.setup-stamp"
  else
    stamp="${SETUP_STAMP:-/usr/local/share/frossl-setup-stamp}"
  fi
  # shellcheck disable=SC2086 # one word per file
  hash=$(cat scripts/setup.sh $locks | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
    exit 0
  fi

  # 1. Python 3.11+, with venv and headers; the libraries ffcv compiles against
  local base=${BASE_PYTHON:-python3} version missing
  version=$(check_python "$base")
  # shellcheck disable=SC2086 # one word per package
  missing="$(missing_python_packages "$base" "$version") $(missing_apt_packages $FFCV_BUILD_PACKAGES)"
  # shellcheck disable=SC2086
  if [ -n "${missing// /}" ]; then
    apt_install $missing
    missing=$(missing_python_packages "$base" "$version")
    [ -z "$missing" ] || die "'$base' still lacks venv or Python.h after apt-get: it is not the distribution's python3; use BASE_PYTHON=/usr/bin/python3"
  fi

  # 2. the environment, from the lock files only
  local py
  if [ "$USE_VENV" = 1 ]; then
    [ -x "$VENV/bin/python" ] || "$base" -m venv "$VENV"
    py="$VENV/bin/python"
  else
    py=$base
  fi
  # pip with this machine's quiet settings; lines about absent local package mirrors are noise
  pip_install() {
    "$py" -m pip install -q --require-hashes "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
    return "${PIPESTATUS[0]}"
  }
  echo "setup: installing the locked packages (requirements*.lock, every dependency pinned with hashes)"
  pip_install -r requirements-build.lock
  pip_install -r requirements.lock
  # ffcv's setup.py asks pkg-config for opencv4 and imports distutils (setuptools provides it):
  # built without isolation against the locked setuptools and numpy above
  echo "setup: building ffcv from source (about 2 minutes the first time)"
  local shim
  shim=$(mktemp -d)
  write_opencv_shim "$shim"
  PKG_CONFIG_PATH="$shim${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
    pip_install --no-build-isolation --no-deps -r requirements-ffcv.lock
  rm -rf "$shim"
  if [ "$test_deps" = 1 ]; then
    pip_install -r requirements-test.lock
  fi
  if [ "$project" = 1 ]; then
    "$py" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
  fi
  # import what compiled code the project needs, then report versions from package metadata
  # (ffcv's own __version__ says 0.0.3rc1 for release 1.0.2)
  "$py" -c "
import importlib.metadata as md, platform
import torch, torchvision, numpy, ffcv._libffcv
print('setup: ok python', platform.python_version(), *(f'{p} {md.version(p)}' for p in ('torch', 'torchvision', 'ffcv', 'numpy', 'pillow')))"
  mkdir -p "$(dirname "$stamp")"
  echo "$hash" > "$stamp"
}

# sourced by tests/test_setup.py to call the checks one by one; run, it installs
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
