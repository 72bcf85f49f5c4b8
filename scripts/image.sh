#!/usr/bin/env bash
# `make image`: build the image with docker when its daemon answers (`docker info`), else podman,
# with the flags each needs (docs/docker.md). Sourced by scripts/image_test.sh for the same engine
# choice; run, it builds:
#
#   bash scripts/image.sh [TARGET [TAG [CONTEXT]]]   # TARGET runtime (default) or test
#
# IMAGE_UID/IMAGE_GID: the image user's UID/GID (default: yours). GIT_COMMIT: the commit recorded
# in the image (default: HEAD of this repository). PIP_CA: a CA bundle for pip where the network
# re-signs TLS (default: pip's own setting, $PIP_CERT or `pip config get global.cert`), handed to
# the build as the secret pip_ca: mounted for the install steps only, never stored in a layer.
set -euo pipefail

# ENGINE: the command (an array); BUILD_FLAGS, RUN_FLAGS: what it needs on this machine
ENGINE=() BUILD_FLAGS=() RUN_FLAGS=()
pick_engine() {
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=(docker)
  elif command -v podman >/dev/null 2>&1; then
    # runc: crun refuses cgroups in hybrid mode on some kernels; --format docker: the OCI format
    # drops SHELL (every RUN would lose pipefail); --ulimit: podman's default rlimits may exceed the
    # host's hard limits ("error setting rlimit"), and any --ulimit replaces all defaults
    ENGINE=(podman --runtime runc)
    BUILD_FLAGS=(--format docker)
    RUN_FLAGS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
  else
    echo "image: error: no container engine: docker answers no 'docker info' (daemon not running?) and" \
      "podman is absent: start docker, or apt-get install podman buildah runc catatonit fuse-overlayfs" \
      "slirp4netns uidmap netavark aardvark-dns containernetworking-plugins conmon iptables" >&2
    exit 2
  fi
}

# the CA bundle to hand to pip, or nothing
pip_ca() {
  local ca=${PIP_CA:-${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}}
  [ "$ca" != none ] || return 0
  if [ -n "$ca" ] && [ ! -f "$ca" ]; then
    echo "image: error: PIP_CA=$ca is not a file: set PIP_CA=/path/to/bundle.pem, or PIP_CA=none for none" >&2
    exit 2
  fi
  echo "$ca"
}

# build_image TARGET TAG CONTEXT [extra build flags...]
build_image() {
  local target=$1 tag=$2 context=$3 ca
  shift 3
  local secret=()
  ca=$(pip_ca)
  [ -z "$ca" ] || secret=(--secret "id=pip_ca,src=$ca")
  local commit=${GIT_COMMIT:-$(git -C "$context" rev-parse HEAD 2>/dev/null || echo unknown)}
  echo "image: ${ENGINE[*]} build --target $target -t $tag (commit $commit, UID ${IMAGE_UID:-$(id -u)}," \
    "pip CA: ${ca:-none}) $context"
  "${ENGINE[@]}" build "${BUILD_FLAGS[@]}" "${secret[@]}" --target "$target" -t "$tag" \
    --build-arg "UID=${IMAGE_UID:-$(id -u)}" --build-arg "GID=${IMAGE_GID:-$(id -g)}" \
    --build-arg "GIT_COMMIT=$commit" "$@" "$context"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cd "$(dirname "$0")/.."
  target=${1:-runtime}
  case "$target" in
    runtime) tag=${2:-frossl} ;;
    test) tag=${2:-frossl-test} ;;
    *) echo "image: error: TARGET=$target: choose runtime or test" >&2; exit 2 ;;
  esac
  pick_engine
  build_image "$target" "$tag" "${3:-.}"
fi
