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
#   scripts/setup.sh --wheelhouse DIR  # (make wheelhouse) download wheels for a node without internet:
#                                    # PYTHON_VERSION, PLATFORM, WITH_TORCH=0|1, WHEELHOUSE_PACKAGES
#   scripts/setup.sh --offline DIR   # (make setup OFFLINE=DIR) no network: $VENV with the site packages
#                                    # visible (a cluster's torch), DIR's wheels only, torch's version checked
#
# Needs only python3 (3.11+), make and apt on Debian/Ubuntu: the version-matched python3.X-venv
# and python3.X-dev and the libraries ffcv compiles against are installed with apt-get (through
# sudo when not root). BASE_PYTHON picks another interpreter than python3.
#
# Every Python package comes from a lock file that pins all transitive dependencies with their
# hashes (pip --require-hashes); scripts/lock.sh regenerates them from requirements*.txt.
set -euo pipefail

MIN_PYTHON=3.11
# torch versions an offline install accepts: from the GPU nodes' 2.11 to the locked 2.14.1 and later 2.x
TORCH_MIN=2.11
TORCH_BELOW=3
# the wheelhouse's packages besides a site torch: what the trainer imports beyond torch, torchvision,
# numpy and pillow (WHEELHOUSE_PACKAGES adds more, WITH_TORCH=1 adds those four and their needs)
WHEELHOUSE_BASE="pyyaml tqdm"
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

# the platform tags pip should accept for $1 (pip matches a tag exactly): manylinux_2_N_ARCH also
# takes the older manylinux_2_17..N-1 wheels and their legacy names
platform_flags() {
  local platform=$1 arch glibc k
  if [[ "$platform" =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
    glibc=${BASH_REMATCH[1]} arch=${BASH_REMATCH[2]}
    for ((k = glibc; k >= 17; k--)); do printf -- '--platform manylinux_2_%s_%s ' "$k" "$arch"; done
    printf -- '--platform manylinux2014_%s --platform manylinux1_%s\n' "$arch" "$arch"
  else
    printf -- '--platform %s\n' "$platform"
  fi
}

# --wheelhouse DIR: the wheels of the packages above for PYTHON_VERSION / PLATFORM, at the versions of
# requirements.lock, each checked against the lock's hashes; DIR/requirements.txt pins them with their
# hashes for --offline
write_wheelhouse() {
  local dir=$1 py=${BASE_PYTHON:-python3} packages="$WHEELHOUSE_BASE ${WHEELHOUSE_PACKAGES:-}" whl hash name
  local pyver=${PYTHON_VERSION:-3.12} platform=${PLATFORM:-manylinux_2_28_x86_64}
  [ "${WITH_TORCH:-0}" = 1 ] && packages="torch torchvision numpy pillow $packages"
  mkdir -p "$dir"
  local constraints
  constraints=$(mktemp)
  # the lock's pins without hashes (pip allows none in constraints)
  sed -nE 's/^([A-Za-z0-9_.-]+==[^ ]+( ;[^\\]*)?) \\$/\1/p' requirements.lock > "$constraints"
  echo "setup: downloading $packages for Python $pyver on $platform into $dir"
  local status=0
  # shellcheck disable=SC2046,SC2086 # one word per flag and package
  "$py" -m pip download -q --only-binary=:all: --implementation cp --python-version "$pyver" \
    $(platform_flags "$platform") -c "$constraints" -d "$dir" $packages 2>&1 |
    { grep -v "^WARNING: Location '.*' is ignored" || true; } || status=$?   # pipefail: pip's status
  rm -f "$constraints"
  [ "$status" = 0 ] ||
    die "pip download failed (above): check PYTHON_VERSION=$pyver and PLATFORM=$platform (e.g. manylinux_2_28_x86_64), and the registry"
  : > "$dir/requirements.txt.tmp"
  for whl in "$dir"/*.whl; do
    hash=$(sha256sum "$whl" | cut -d' ' -f1)
    grep -q "sha256:$hash" requirements*.lock ||
      die "$(basename "$whl"): its sha256 is in no requirements*.lock: not the locked file; delete $dir and rerun"
    name=$(basename "$whl")
    echo "${name%%-*}==$(echo "$name" | cut -d- -f2) --hash=sha256:$hash" >> "$dir/requirements.txt.tmp"
  done
  mv "$dir/requirements.txt.tmp" "$dir/requirements.txt"
  echo "python=$pyver platform=$platform with_torch=${WITH_TORCH:-0}" > "$dir/wheelhouse.txt"
  echo "setup: wheelhouse $dir: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1); copy it to the node, then: make setup OFFLINE=$dir"
}

# torch as Python $1 imports it, within [TORCH_MIN, TORCH_BELOW), else a one-line error
check_torch() {
  local py=$1 torch_version
  torch_version=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null) ||
    die "torch does not import in '$py': load the site PyTorch (e.g. module load pytorch) before setup, or build the wheelhouse with WITH_TORCH=1"
  "$py" -c "import sys; v = tuple(int(x) for x in '${torch_version%%+*}'.split('.')[:2])
sys.exit(not tuple(map(int, '$TORCH_MIN'.split('.'))) <= v < ($TORCH_BELOW,))" 2>/dev/null ||
    die "torch $torch_version is outside the supported range >=$TORCH_MIN,<$TORCH_BELOW: load a PyTorch module in that range, or build the wheelhouse with WITH_TORCH=1"
  echo "$torch_version"
}

# --offline DIR: no network at all. $VENV sees the site packages (a cluster module's torch); DIR's
# wheels are installed by their hashes. Everything that can fail is checked before the venv is made.
install_offline() {
  local dir=$1 base=${BASE_PYTHON:-python3} version py line file hash
  [ -f "$dir/requirements.txt" ] ||
    die "--offline '$dir' holds no requirements.txt: write the folder with \`make wheelhouse WHEELHOUSE=$dir\` on a machine with internet and copy it here"
  version=$(check_python "$base")
  local built
  built=$(sed -nE 's/^python=([0-9.]+) .*/\1/p' "$dir/wheelhouse.txt" 2>/dev/null || true)
  [ -z "$built" ] || [ "$built" = "$version" ] ||
    die "the wheelhouse $dir is for Python $built, '$base' is $version: rebuild it with make wheelhouse PYTHON_VERSION=$version"
  # a wheel damaged or swapped on the way: named before pip runs (pip checks the same hashes again)
  while read -r line; do
    hash=${line##*sha256:}
    file=$(sha256sum "$dir"/*.whl 2>/dev/null | grep "^$hash " || true)
    [ -n "$file" ] || die "no wheel in $dir has the hash requirements.txt gives ${line%% *}: copy the wheelhouse again"
  done < "$dir/requirements.txt"
  local torch_version=""
  grep -qi '^torch==' "$dir/requirements.txt" || torch_version=$(check_torch "$base")
  if [ "$USE_VENV" = 1 ]; then
    if [ ! -x "$VENV/bin/python" ]; then
      "$base" -m venv --system-site-packages "$VENV" >/dev/null 2>&1 ||
        die "'$base' cannot create a virtualenv (no ensurepip): ask for python$version-venv, or use --system"
    fi
    py="$VENV/bin/python"
  else
    py=$base
  fi
  echo "setup: offline: installing $dir's wheels (no index, hashes checked)"
  # --ignore-installed: the wheelhouse's versions in the venv even where the site (or PYTHONPATH) has others
  PIP_NO_INDEX=1 "$py" -m pip install -q --no-index --find-links "$dir" --require-hashes --ignore-installed \
    -r "$dir/requirements.txt" ||
    die "installing from $dir failed (above): rebuild it for this node with make wheelhouse PYTHON_VERSION=$version PLATFORM=..."
  torch_version=$(check_torch "$py")
  # what runs without the optional packages (none of them is in a default wheelhouse)
  "$py" -c "
import importlib.util as u, platform, sys
missing = [p for m, p in (('torchvision', 'torchvision'), ('numpy', 'numpy'), ('PIL', 'pillow'), ('yaml', 'pyyaml'),
                          ('tqdm', 'tqdm')) if u.find_spec(m) is None]
if missing:
    sys.exit('setup: error: ' + ', '.join(missing) + ' missing: add to the wheelhouse (WHEELHOUSE_PACKAGES=, WITH_TORCH=1) or load the site module')
off = [text for module, text in (('ffcv', 'ffcv: the torchvision loader instead of FFCV'),
                                 ('sklearn', 'scikit-learn: the digits dataset of make demo'),
                                 ('tensorboard', 'tensorboard: metrics.jsonl only, no TensorBoard scalars'))
       if u.find_spec(module) is None]
print('setup: ok (offline) python', platform.python_version(), 'torch $torch_version (supported >=$TORCH_MIN,<$TORCH_BELOW)')
print('setup: off without optional packages:', '; '.join(off) or 'none')" || exit 2
  echo "setup: run the project from the checkout (make ... or $py -m repro...); not installed into the venv"
  # later make targets skip setup (the online recipe would need the network) until it is removed
  [ "$USE_VENV" = 0 ] || echo "$dir" > "$VENV/.setup-offline"
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  VENV=${VENV:-.venv}
  USE_VENV=1
  local test_deps=1 project=1 offline="" wheelhouse=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --system) USE_VENV=0 ;;
      --no-test-deps) test_deps=0 ;;
      --no-project) project=0 ;;
      --offline | --wheelhouse)
        [ $# -ge 2 ] || die "$1 needs a folder: scripts/setup.sh $1 DIR"
        if [ "$1" = --offline ]; then offline=$2; else wheelhouse=$2; fi
        shift ;;
      *) die "unknown flag '$1': use --system, --no-test-deps, --no-project, --offline DIR or --wheelhouse DIR" ;;
    esac
    shift
  done
  if [ -n "$wheelhouse" ]; then
    write_wheelhouse "$wheelhouse"
    return
  fi
  if [ -n "$offline" ]; then
    install_offline "$offline"
    return
  fi

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
  # set up offline (--offline): this is a node without internet; `make setup OFFLINE=DIR` redoes it
  if [ "$USE_VENV" = 1 ] && [ -f "$VENV/.setup-offline" ]; then
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
