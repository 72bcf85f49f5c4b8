#!/usr/bin/env bash
# Regenerate the lock files scripts/setup.sh installs from the hand-edited requirements*.txt.
#   pip install uv==0.13.9 && bash scripts/lock.sh
# uv resolves for every platform and Python from 3.11 on (--universal) and writes the sha256 of
# every file of each pinned release, so the same lock serves Debian 12 (3.11), Ubuntu 24.04 (3.12)
# and the image. ffcv's own entry is in requirements-ffcv.lock alone: it is built without build
# isolation after everything else (its setup.py needs the locked setuptools and pkg-config).
# opencv-python (ffcv's requirement) is left out for opencv-python-headless (requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
compile() { "$UV" pip compile --quiet --generate-hashes --universal --python-version 3.11 "$@"; }
compile requirements-build.txt -o requirements-build.lock
compile requirements.txt requirements-ffcv.txt --no-emit-package ffcv --no-emit-package opencv-python -o requirements.lock
compile requirements-ffcv.txt --no-deps -o requirements-ffcv.lock
# test packages resolved against the runtime lock, so that shared packages keep its versions
compile requirements-test.txt -c requirements.lock --no-emit-package opencv-python -o requirements-test.lock
