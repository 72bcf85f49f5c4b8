#!/usr/bin/env bash
# `make image-test`: build every stage of the image from a clean export of HEAD (`git archive`),
# then run it as users run it (docs/docker.md "Checked by make image-test"). Not part of
# `make test`: 1-2 hours on 2 busy cores, ~30 GB of disk in the engine's storage.
#
#   bash scripts/image_test.sh                      # every check
#   CHECKS="demo stop" bash scripts/image_test.sh    # some checks, on the images built before
#
# IMAGE_TEST_DIR: exports, logs and results folders (default /tmp/frossl-image-test); IMAGE_TEST_TAG:
# the images' name (default frossl-image-test, tags runtime/test/uid0/edited); SHARED_DIR: mounted
# at /shared for make test (default ../shared); SHORT_DEMO="optim.epochs=2": shorter demos.
#
# Engine: docker when `docker info` answers, else podman (scripts/image.sh, with the flags podman
# needs here). Podman on Debian 12 needs: apt-get install podman buildah runc catatonit
# fuse-overlayfs slirp4netns uidmap netavark aardvark-dns containernetworking-plugins conmon iptables
# (and debootstrap for the stand-in base); as root, the script installs what is missing.
# Base: debian:12-slim from the registry; when it cannot be pulled (no registry reachable), a
# stand-in: a Debian 12 minbase root (debootstrap) imported under that tag, and the output says so.
# Each check prints PASS/FAIL with its time; a summary at the end; exit 1 on any FAIL.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${IMAGE_TEST_DIR:-/tmp/frossl-image-test}
TAG=${IMAGE_TEST_TAG:-frossl-image-test}
USER_ID=1000 GROUP_ID=1000   # the image's user: a non-root UID, as on a workstation
CHECKS=${CHECKS:-build test-stage source-edit uid0-build label demo user-fallback uid0-demo shm stop make-test sizes}
SHARED=${SHARED_DIR:-$(cd "$REPO/.." && pwd)/shared}
APT_PACKAGES="podman buildah runc catatonit fuse-overlayfs slirp4netns uidmap netavark aardvark-dns
  containernetworking-plugins conmon iptables debootstrap"
# shellcheck source=scripts/image.sh
source "$REPO/scripts/image.sh"

say() { echo "image-test: $*"; }
RESULTS=()
FAILED=0
# check NAME: run check_NAME, print PASS/FAIL with its time, remember it
check() {
  local name=$1 t0 status
  [[ " $CHECKS " == *" $name "* ]] || return 0
  say "---- $name"
  t0=$(date +%s)
  if "check_${name//-/_}"; then status=PASS; else status=FAIL; FAILED=1; fi
  local line
  line=$(printf '%-4s %-13s %4d s  %s' "$status" "$name" $(($(date +%s) - t0)) "${NOTE:-}")
  RESULTS+=("$line")
  say "$line"
  NOTE=
}
NOTE=
run() { "${ENGINE[@]}" run --rm "${RUN_FLAGS[@]}" "$@"; }
fail() { say "FAIL: $*"; return 1; }

# ---- the engine and the base ------------------------------------------------------------------
if ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }; then
  # shellcheck disable=SC2086 # one word per package
  missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || printf '%s ' "$p"; done)
  if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || { say "error: no docker daemon; podman needs: apt-get install $missing (as root)" >&2; exit 2; }
    say "installing $missing"
    # shellcheck disable=SC2086
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } >/dev/null ||
      { say "error: apt-get install $missing failed" >&2; exit 2; }
  fi
fi
pick_engine
say "engine: ${ENGINE[*]} ($("${ENGINE[@]}" --version)); machine: $(nproc) cores, $(uname -r); $(date -u '+%F %H:%M UTC')"

ensure_base() {
  if "${ENGINE[@]}" image exists debian:12-slim 2>/dev/null || "${ENGINE[@]}" image inspect debian:12-slim >/dev/null 2>&1; then
    local standin
    standin=$("${ENGINE[@]}" image inspect --format '{{index .Config.Labels "frossl.stand-in"}}' debian:12-slim 2>/dev/null)
    say "base: debian:12-slim already here${standin:+ (the STAND-IN: $standin, not the image of the registry)}"
    return 0
  fi
  if "${ENGINE[@]}" pull -q docker.io/library/debian:12-slim >/dev/null 2>&1; then
    say "base: debian:12-slim pulled from the registry"
    return 0
  fi
  say "base: debian:12-slim cannot be pulled (no registry reachable): building a STAND-IN, a Debian 12" \
    "minbase root (debootstrap --variant=minbase bookworm) imported as debian:12-slim"
  local root="$WORK/base-root"
  rm -rf "$root"
  debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -5 "$WORK/debootstrap.log"; return 1; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  tar -C "$root" -c . | "${ENGINE[@]}" import \
    --change 'LABEL frossl.stand-in="debootstrap --variant=minbase bookworm"' --change 'CMD ["bash"]' \
    - debian:12-slim >/dev/null || return 1
  rm -rf "$root"
}

mkdir -p "$WORK"
ensure_base || { say "error: no base image"; exit 2; }
COMMIT=$(git -C "$REPO" rev-parse HEAD)
if [[ " $CHECKS " != *" build "* ]]; then   # checks of images built before: their commit
  COMMIT=$("${ENGINE[@]}" image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' \
    "$TAG:runtime" 2>/dev/null) || { say "error: no image $TAG:runtime: run the build check first"; exit 2; }
  say "checks of the images built before, at commit $COMMIT"
fi
SRC="$WORK/src"
if [[ " $CHECKS " == *" build "* ]]; then
  rm -rf "$SRC" && mkdir -p "$SRC"
  git -C "$REPO" archive HEAD | tar -x -C "$SRC"
  say "clean export of HEAD $COMMIT into $SRC (uncommitted edits are not in it)"
fi
export GIT_COMMIT=$COMMIT IMAGE_UID=$USER_ID IMAGE_GID=$GROUP_ID

# build_timed TARGET TAG LOG CONTEXT: build, log in WORK/LOG.log, remember the seconds in BUILD_S
build_timed() {
  local t0
  t0=$(date +%s)
  build_image "$1" "$2" "$4" >"$WORK/$3.log" 2>&1 ; local rc=$?
  BUILD_S=$(($(date +%s) - t0))
  [ $rc = 0 ] || { tail -20 "$WORK/$3.log"; return 1; }
}
# the layers of an image, one a line
layers() { "${ENGINE[@]}" image inspect --format '{{range .RootFS.Layers}}{{println .}}{{end}}' "$1" | grep .; }

check_build() {
  build_timed runtime "$TAG:runtime" build "$SRC" || return 1
  # cold: no step taken from the engine's cache (podman says "Using cache", docker "CACHED")
  NOTE="runtime image (stages build, app, runtime) in ${BUILD_S} s; steps from cache: $(grep -cE 'Using cache|CACHED' "$WORK/build.log")"
}
check_test_stage() {
  [ -d "$SRC" ] || { fail "no export: run the build check with it"; return 1; }
  build_timed test "$TAG:test" test-stage "$SRC" || return 1
  NOTE="test stage on top in ${BUILD_S} s"
}
check_source_edit() {
  # a source-only edit: only the project's layer is rebuilt, the venv (torch) is reused
  [ -d "$SRC" ] || { fail "no export: run the build check with it"; return 1; }
  local edited="$WORK/src-edited"
  rm -rf "$edited" && cp -a "$SRC" "$edited"
  echo "# an edit (make image-test)" >>"$edited/repro/__init__.py"
  build_timed runtime "$TAG:edited" source-edit "$edited" || return 1
  local a b same
  a=$(layers "$TAG:runtime") b=$(layers "$TAG:edited")
  same=$(diff <(echo "$a") <(echo "$b") | grep -c '^<')
  NOTE="rebuilt in ${BUILD_S} s; layers differing: $same of $(echo "$a" | wc -l)"
  [ "$same" = 1 ] && [ "$(echo "$a" | head -n -1)" = "$(echo "$b" | head -n -1)" ] ||
    fail "more than the last layer changed"
}
check_uid0_build() {
  [ -d "$SRC" ] || { fail "no export: run the build check with it"; return 1; }
  IMAGE_UID=0 IMAGE_GID=0 build_timed runtime "$TAG:uid0" uid0-build "$SRC" || return 1
  NOTE="UID=0 image in ${BUILD_S} s"
}
check_label() {
  local label env
  label=$("${ENGINE[@]}" image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$TAG:runtime")
  env=$(run "$TAG:runtime" printenv FROSSL_GIT_COMMIT)
  NOTE="label $label"
  [ "$label" = "$COMMIT" ] && [ "$env" = "$COMMIT" ] || { fail "label '$label', env '$env', HEAD $COMMIT"; return 1; }
  # the pip CA bundle was a build secret: in no layer
  local secrets
  secrets=$(run --entrypoint find "$TAG:test" / -xdev -name pip_ca 2>/dev/null)
  [ -z "$secrets" ] || fail "the build secret is in the image: $secrets"
}

# a fresh results folder owned by $1 (uid:gid), and a read-only data folder
fresh_runs() { rm -rf "$WORK/$2" && mkdir -p "$WORK/$2" && chown "$1" "$WORK/$2"; }
mkdir -p "$WORK/data"
# demo_in IMAGE RUNS [run flags]: the documented run line's flags, `make demo`; checks the results
demo_in() {
  local image=$1 runs=$2 owner
  shift 2
  # OMP_NUM_THREADS=1: on a machine shared with other work, torch's two spinning OpenMP threads wait on
  # each other (tens of seconds per step instead of about one)
  # SHORT_DEMO (e.g. "optim.epochs=2"): the demos shortened, for time on a busy machine; they must
  # run to their end (demo.json written), the verdict of so few epochs is not judged
  local args=() rc
  [ -z "${SHORT_DEMO:-}" ] || args=("ARGS=$SHORT_DEMO")
  run --init --ipc=host --stop-timeout=180 -e OMP_NUM_THREADS=1 -v "$WORK/data:/data:ro" \
    -v "$WORK/$runs:/workspace/runs" "$@" "$image" make demo "${args[@]}" >"$WORK/$runs.log" 2>&1
  rc=$?
  if [ $rc != 0 ] && ! { [ ${#args[@]} = 1 ] && [ $rc = 2 ] && [ -f "$WORK/$runs/demo/demo.json" ]; }; then
    tail -20 "$WORK/$runs.log"
    return 1
  fi
  local env_json="$WORK/$runs/demo/env.json"
  [ -f "$env_json" ] || { fail "no $env_json"; return 1; }
  local commit   # the image's own (an image built earlier, e.g. the UID-0 one, may be at another commit)
  commit=$("${ENGINE[@]}" image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$image")
  grep -q "\"git_commit\": \"$commit\"" "$env_json" || { fail "env.json lacks git_commit $commit"; return 1; }
  owner=$(stat -c %u:%g "$env_json")
  NOTE="${args[*]:+${args[*]}: }$(grep -E '^  (random initialisation|FroSSL-pretrained|PASS|FAIL)' "$WORK/$runs.log" | tr -s ' ' | tr '\n' ';' | cut -c1-160) files owned by $owner"
}
check_demo() {
  fresh_runs "$USER_ID:$GROUP_ID" runs-demo
  demo_in "$TAG:runtime" runs-demo || return 1
  [ "$(stat -c %u:%g "$WORK/runs-demo/demo/env.json")" = "$USER_ID:$GROUP_ID" ] || fail "results not owned by $USER_ID"
}
check_user_fallback() {
  # a host user the image does not know (HOME=/): caches must still be writable
  fresh_runs 1234:1234 runs-user
  demo_in "$TAG:runtime" runs-user --user 1234:1234
}
check_uid0_demo() {
  fresh_runs 0:0 runs-uid0
  demo_in "$TAG:uid0" runs-uid0
}
check_shm() {
  # STL-10 (96 px, two views through the torchvision loader) needs more than 64 MB of /dev/shm;
  # the folder is empty: the preflight refuses before the data is read
  mkdir -p "$WORK/data-shm/stl10_binary"
  fresh_runs "$USER_ID:$GROUP_ID" runs-shm
  local t0 out rc
  t0=$(date +%s)
  out=$(run --init --shm-size=64m -v "$WORK/data-shm:/data:ro" -v "$WORK/runs-shm:/workspace/runs" "$TAG:runtime" \
    make table2 METHODS=frossl DATASETS=stl10 DATA_DIR=/data PREPARE_DATA=none 2>&1)
  rc=$?
  echo "$out" | tail -n 3
  NOTE="exit $rc in $(($(date +%s) - t0)) s: $(echo "$out" | grep -o 'error: /dev/shm has [0-9]* MB free' | head -n1)"
  [ $rc = 2 ] && echo "$out" | grep -q -- "--ipc=host" && [ -z "$(ls -A "$WORK/runs-shm")" ] ||
    fail "expected a refusal naming --ipc=host, nothing written"
}

# the tiny table2 of tests/test_signals.py (digits, 2 epochs of 12 steps, CPU)
TINY="data.dataset=digits data.train_split=train data.augmentations=digits model.in_channels=1 model.cifar_stem=true
model.width=8 model.proj_hidden_dim=32 model.proj_output_dim=16 data.batch_size=64 data.num_workers=0 device=cpu
eval.probe_epochs=2 optim.warmup_epochs=0 eval.knn_k=5 train.log_every=5 data.subset=768"
TABLE2=(make table2 PREPARE_DATA=none METHODS=frossl DATASETS=cifar10 EPOCHS=2 PROBE=cached "OVERRIDES=${TINY//$'\n'/ }")
check_stop() {
  fresh_runs "$USER_ID:$GROUP_ID" runs-stop
  fresh_runs "$USER_ID:$GROUP_ID" runs-reference
  local name=frossl-image-test-stop code step
  "${ENGINE[@]}" rm -f "$name" >/dev/null 2>&1
  "${ENGINE[@]}" run -d --name "$name" "${RUN_FLAGS[@]}" --init --ipc=host --stop-timeout=180 -e OMP_NUM_THREADS=1 \
    -v "$WORK/runs-stop:/workspace/runs" "$TAG:runtime" "${TABLE2[@]}" >/dev/null || return 1
  local deadline=$(($(date +%s) + 600))
  until grep -qsE '"step": ([5-9]|1[01])\b' "$WORK"/runs-stop/cifar10-frossl-seed0-e2-x*/metrics.jsonl; do
    [ "$(date +%s)" -lt $deadline ] || { fail "no step 5 in 600 s"; "${ENGINE[@]}" logs "$name" | tail; return 1; }
    sleep 0.2
  done
  "${ENGINE[@]}" stop -t 180 "$name" >/dev/null
  code=$("${ENGINE[@]}" wait "$name" 2>/dev/null || "${ENGINE[@]}" inspect --format '{{.State.ExitCode}}' "$name")
  "${ENGINE[@]}" logs "$name" >"$WORK/stop.log" 2>&1
  "${ENGINE[@]}" rm -f "$name" >/dev/null
  local check_py="
import sys, pathlib, torch
from repro.faults import final_weights, identical
a, b = (next(pathlib.Path(p).glob('cifar10-frossl-seed0-e2-x*')) for p in sys.argv[1:3])
if sys.argv[3] == 'step':
    print(torch.load(a / 'checkpoint.pt', weights_only=True)['step'])
else:
    print('identical' if identical(final_weights(a), final_weights(b)) else 'DIFFERENT')"
  step=$(run -v "$WORK/runs-stop:/r:ro" "$TAG:runtime" python -c "$check_py" /r /r step 2>&1 | tail -n1)
  say "docker stop: exit $code, checkpoint at step $step"
  [ "$code" = 143 ] || { fail "exit $code, not 143"; return 1; }
  [[ "$step" =~ ^[0-9]+$ ]] && [ "$step" -ge 5 ] && [ "$step" -lt 24 ] && [ $((step % 12)) != 0 ] ||
    { fail "checkpoint step '$step' is not mid-epoch"; return 1; }
  run --init --ipc=host -e OMP_NUM_THREADS=1 -v "$WORK/runs-stop:/workspace/runs" "$TAG:runtime" "${TABLE2[@]}" \
    >"$WORK/stop-resume.log" 2>&1 || { tail -20 "$WORK/stop-resume.log"; return 1; }
  grep -q "resuming" "$WORK/stop-resume.log" || { fail "the rerun did not resume"; return 1; }
  run --init --ipc=host -e OMP_NUM_THREADS=1 -v "$WORK/runs-reference:/workspace/runs" "$TAG:runtime" "${TABLE2[@]}" \
    >"$WORK/stop-reference.log" 2>&1 || { tail -20 "$WORK/stop-reference.log"; return 1; }
  local same
  same=$(run -v "$WORK/runs-stop:/a:ro" -v "$WORK/runs-reference:/b:ro" "$TAG:runtime" python -c "$check_py" /a /b same 2>&1 | tail -n1)
  NOTE="exit $code, checkpoint at step $step, resumed: weights $same to an uninterrupted run"
  [ "$same" = identical ] || fail "weights differ"
}
check_make_test() {
  [ -d "$SHARED/data" ] || say "no $SHARED/data: the tests that need it skip"
  local mount=()
  [ -d "$SHARED" ] && mount=(-v "$SHARED:/shared:ro")
  run --init --ipc=host "${mount[@]}" "$TAG:test" make test >"$WORK/make-test.log" 2>&1
  local rc=$?
  NOTE=$(grep -E '^=+ .*(passed|failed).* =+$' "$WORK/make-test.log" | tail -n1 | tr -d '=')
  [ $rc = 0 ] || { grep -E '^(FAILED|ERROR) ' "$WORK/make-test.log" | head -20; return 1; }
}
check_sizes() {
  local t s
  NOTE=
  for t in runtime test uid0; do
    s=$("${ENGINE[@]}" image inspect --format '{{.Size}}' "$TAG:$t") || return 1
    NOTE+="$t $((s / 1000000)) MB; "
  done
  s=$(run --entrypoint du "$TAG:runtime" -sm /opt/venv | cut -f1) || return 1
  NOTE+="/opt/venv $s MiB"
}

check build
check test-stage
check source-edit
check uid0-build
check label
check demo
check user-fallback
check uid0-demo
check shm
check stop
check make-test
check sizes

say "==== summary (HEAD $COMMIT, ${ENGINE[*]}, $(date -u '+%F %H:%M UTC'); logs in $WORK)"
printf '%s\n' "${RESULTS[@]}"
[ $FAILED = 0 ] && say "all checks PASS" || say "some checks FAIL"
exit $FAILED
