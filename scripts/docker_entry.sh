#!/usr/bin/env bash
# The image's entry (Dockerfile ENTRYPOINT, under tini): the results folder (OUT=... among the
# arguments, else /workspace/runs) is created when absent and must be writable by this container's
# user, else one line says how to fix the host folder; then the command runs. A read-only mount
# (`-v ...:/workspace/runs:ro`, the TensorBoard line) is left alone: only reading is asked of it.
set -euo pipefail
out=/workspace/runs
for arg in "$@"; do
  case "$arg" in OUT=*) out=${arg#OUT=} ;; esac
done
case "$out" in /*) ;; *) out=/workspace/$out ;; esac
read_only=$(awk -v m="$out" '$2 == m { split($4, o, ","); print (o[1] == "ro") }' /proc/mounts 2>/dev/null | tail -n1)
if [ "${read_only:-0}" != 1 ]; then
  mkdir -p "$out" 2>/dev/null || true
  if [ ! -d "$out" ] || [ ! -w "$out" ]; then
    where=$(stat -c 'owned by %u:%g, mode %a' "$out" 2>/dev/null || echo "absent and its parent is not writable")
    echo "frossl: error: the results folder $out ($where) is not writable by this container's user" \
      "$(id -u):$(id -g): on the host, make the folder you mount there yours (mkdir it before docker run," \
      "since Docker creates a missing one owned by root; or sudo chown $(id -u):$(id -g) it), or run with" \
      "--user \$(id -u):\$(id -g) when it is yours; no rebuild is needed" >&2
    exit 2
  fi
fi
exec "$@"
