#!/usr/bin/env bash
# `make fresh-machine-test`: the README's first two commands on a machine that has only python3,
# make, git, ca-certificates (and apt): a minimal Debian 12 root built with debootstrap. Runs as
# root (debootstrap, chroot, mounts); downloads ~4 GB of packages; not part of `make test`.
#
#   bash scripts/fresh_machine_test.sh
#   PYTEST_ARGS="tests/test_config.py" bash scripts/fresh_machine_test.sh  # passed on to `make test`
#
# FRESH_ROOT: where the root is built (default /tmp/frossl-fresh-root, removed at the end unless
# KEEP_ROOT=1). The clone is of the committed HEAD of this repository: uncommitted edits are not in
# it. Network: the chroot gets this host's resolv.conf and hosts, and this host's CA bundle as
# pip's certificate file (where a network re-signs TLS, as the development machines' does, pip
# reaches the registry only through it): the one thing a user's machine on such a network has
# configured too.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${FRESH_ROOT:-/tmp/frossl-fresh-root}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# the CA bundle pip uses here: pip's own setting, else the usual Debian path
HOST_CA=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)}

[ "$(id -u)" = 0 ] || { echo "fresh-machine-test: error: needs root (debootstrap, chroot, mount): run it with sudo" >&2; exit 2; }
[ -f "$HOST_CA" ] || { echo "fresh-machine-test: error: no CA bundle at $HOST_CA: set PIP_CERT=/path/to/bundle.pem" >&2; exit 2; }
[ ! -e "$ROOT" ] || { echo "fresh-machine-test: error: $ROOT exists: remove it or set FRESH_ROOT" >&2; exit 2; }

MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" || true
  done
  # delete the root only when nothing is mounted under it any more (a bind-mounted /dev would go too)
  if [ "${KEEP_ROOT:-0}" != 1 ] && [ -d "$ROOT" ]; then
    if grep -q " $ROOT/" /proc/mounts; then
      echo "fresh-machine-test: mounts remain under $ROOT: not removed" >&2
    else
      rm -rf --one-file-system "$ROOT"
    fi
  fi
}
trap cleanup EXIT
mount_in() {  # mount_in <mount args...> <target>: remembered for cleanup
  mount "$@"
  MOUNTS+=("${*: -1}")
}

# the README's first two command lines: the first fenced block, comments dropped
mapfile -t COMMANDS < <(awk '/^```/ { n++; next } n == 1 { sub(/[ \t]*#.*/, ""); if ($0 != "") print }' \
  "$REPO/README.md" | head -n 2)
[ "${#COMMANDS[@]}" = 2 ] || { echo "fresh-machine-test: error: README.md has no two-command block at the top" >&2; exit 2; }
echo "fresh-machine-test: README commands: '${COMMANDS[0]}', '${COMMANDS[1]}'; PYTEST_ARGS='${PYTEST_ARGS:-}'"

command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
start=$(date +%s)
echo "fresh-machine-test: debootstrap bookworm (minbase + python3 make git ca-certificates) into $ROOT"
debootstrap --variant=minbase --include=python3,make,git,ca-certificates bookworm "$ROOT" "$MIRROR" \
  > "$ROOT.debootstrap.log" 2>&1 || { tail -20 "$ROOT.debootstrap.log" >&2; exit 1; }
echo "fresh-machine-test: root built in $(( $(date +%s) - start )) s"

mount_in -t proc proc "$ROOT/proc"
mount_in -t sysfs sysfs "$ROOT/sys"
mount_in --bind /dev "$ROOT/dev"
mount_in --bind /dev/pts "$ROOT/dev/pts"
mkdir -p "$ROOT/mnt/repo"
mount_in --bind -o ro "$REPO" "$ROOT/mnt/repo"
cp /etc/resolv.conf /etc/hosts "$ROOT/etc/"
cp "$HOST_CA" "$ROOT/etc/ssl/host-network-ca.pem"
printf '[global]\ncert = /etc/ssl/host-network-ca.pem\n' > "$ROOT/etc/pip.conf"

in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTEST_ARGS="${PYTEST_ARGS:-}" bash -c "$1"
}
in_root "git clone -q /mnt/repo /root/frossl && git -C /root/frossl log -1 --format='fresh-machine-test: clone at %h %s'"

status=0
RESULTS=()
for cmd in "${COMMANDS[@]}"; do
  t0=$(date +%s)
  echo "fresh-machine-test: running '$cmd' in /root/frossl (log: $ROOT.log)"
  if in_root "cd /root/frossl && $cmd" >> "$ROOT.log" 2>&1; then verdict=PASS; else verdict=FAIL; status=1; fi
  RESULTS+=("$cmd: $verdict in $(( $(date +%s) - t0 )) s")
  echo "fresh-machine-test: ${RESULTS[-1]}"
  [ "$verdict" = PASS ] || tail -30 "$ROOT.log"
done
# what ffcv's extension links: OpenCV core/imgproc and libturbojpeg only (no libopencv-dev)
in_root "ldd \$(/root/frossl/.venv/bin/python -c 'import ffcv._libffcv as m; print(m.__file__)') | grep -E 'opencv|turbojpeg'" || true
echo "fresh-machine-test: summary ($(date -u +%FT%TZ), $(nproc) cores):"
printf '  %s\n' "${RESULTS[@]}"
exit "$status"
