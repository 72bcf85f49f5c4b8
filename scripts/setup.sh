#!/usr/bin/env bash
# The ONE install recipe: used by `make` (every target that needs Python), by .ci/run (through
# `make test`) and by the Dockerfile. Idempotent and cheap when nothing changed: a stamp file holds
# the hash of this script and the requirement files.
#
#   scripts/setup.sh                 # project-local virtualenv in .venv (default)
#   scripts/setup.sh --system        # install into the current Python (the Docker image)
#   scripts/setup.sh --no-test-deps  # skip lightly/hadolint (test-only)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
USE_VENV=1
TEST_DEPS=1
for arg in "$@"; do
  case "$arg" in
    --system) USE_VENV=0 ;;
    --no-test-deps) TEST_DEPS=0 ;;
    *) echo "setup.sh: unknown flag '$arg' (use --system or --no-test-deps)" >&2; exit 2 ;;
  esac
done

APT_PACKAGES="pkg-config g++ libopencv-dev libturbojpeg0-dev"
REQ_FILES="requirements.txt requirements-ffcv.txt"
[ "$TEST_DEPS" = 1 ] && REQ_FILES="$REQ_FILES requirements-test.txt"

if [ "$USE_VENV" = 1 ]; then
  STAMP="$VENV/.setup-stamp"
else
  STAMP="${SETUP_STAMP:-/usr/local/share/frossl-setup-stamp}"
fi
HASH=$(cat scripts/setup.sh $REQ_FILES | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  exit 0
fi

# 1. System libraries ffcv compiles and links against.
missing=""
for pkg in $APT_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  echo "setup: installing apt packages:$missing"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. Python environment.
if [ "$USE_VENV" = 1 ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  PY="$VENV/bin/python"
else
  PY=python3
fi
# pip with this machine's quiet settings; lines about absent local package mirrors are noise
pip_install() {
  "$PY" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
  return "${PIPESTATUS[0]}"
}
pip_install --upgrade "pip>=24" setuptools wheel
echo "setup: installing pinned requirements (torch comes from local wheels where available)"
pip_install -r requirements.txt
# ffcv's setup.py imports numpy and asks pkg-config for opencv4: build it against the env above.
echo "setup: building ffcv from source (about 2 minutes the first time)"
pip_install --no-build-isolation -r requirements-ffcv.txt
if [ "$TEST_DEPS" = 1 ]; then
  pip_install -r requirements-test.txt
fi
pip_install --no-deps --no-build-isolation -e .
"$PY" -c "import torch, torchvision, ffcv, numpy; print('setup: ok torch', torch.__version__, 'torchvision', torchvision.__version__, 'ffcv', ffcv.__version__, 'numpy', numpy.__version__)"
mkdir -p "$(dirname "$STAMP")"
echo "$HASH" > "$STAMP"
