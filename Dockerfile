# FroSSL reproducibility artifact (docs/docker.md). `make image` runs the build with the right
# engine and flags; by hand:
#   docker build -t frossl --build-arg UID=$(id -u) --build-arg GID=$(id -g) \
#     --build-arg GIT_COMMIT=$(git rev-parse HEAD) .
#   mkdir -p runs && docker run --rm --gpus all --ipc=host --init --stop-timeout=180 \
#     -v /data:/data:ro -v "$PWD/runs":/workspace/runs frossl make all DATA_DIR=/data
#   docker build --target test -t frossl-test . && docker run --rm frossl-test make test
# A network that re-signs TLS: hand its CA bundle to pip as a build secret (never stored in a layer):
#   docker build --secret id=pip_ca,src=/path/to/bundle.pem ...
#
# Base: Debian 12 slim in every stage, not an nvidia/cuda image. The torch 2.14.1 wheel brings its
# own CUDA 13.0 libraries (the nvidia-* wheels in requirements.lock: cuBLAS, cuDNN, NCCL, ...); the
# host's driver (R580+ for CUDA 13.0) is mounted in by the NVIDIA Container Toolkit under
# --gpus. Debian 12 is also what setup.sh, the tests and `make fresh-machine-test` run on here, with
# the same Python 3.11. Pinned by tag; this project's machines reach no container registry, so the
# digest was not recorded: `docker buildx imagetools inspect debian:12-slim`, then FROM ...@sha256:.
#
# Stages: build (the venv) -> app (what runs) -> test (app + test packages) and runtime (app, the
# LAST stage, so that a plain `docker build .` gives the runtime image).

# ---- build: compile ffcv against OpenCV core/imgproc + libturbojpeg, fill /opt/venv -------------
FROM debian:12-slim AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 VENV=/opt/venv
# python3 only: setup.sh itself installs python3.11-venv/-dev and ffcv's -dev packages with apt
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# only what the install reads, so that a source edit does not reinstall torch
COPY requirements-build.lock requirements.lock requirements-ffcv.lock ./
COPY scripts/setup.sh scripts/setup.sh
# pip_ca: the optional build secret (a CA bundle for a network that re-signs TLS), mounted for
# this step only
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && bash scripts/setup.sh --no-test-deps --no-project

# ---- app: the venv, the libraries ffcv links, a compiler for torch.compile, the project ---------
FROM debian:12-slim AS app
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG UID=1000
ARG GID=1000
# python3 (3.11, the venv's interpreter: /opt/venv/bin/python links to /usr/bin/python3);
# libopencv-core406, libopencv-imgproc406, libturbojpeg0: what ffcv's _libffcv links;
# g++ and python3-dev: torch.compile's inductor compiles C++ kernels on the CPU path and its
# Python bindings include Python.h; make: the interface; tini: an init (signals, zombies) for
# containers started without --init; ca-certificates: torchvision's dataset downloads.
# The user: `frossl` with UID/GID, unless that UID exists already (UID=0: root, e.g. on a rented
# GPU machine where everything runs as root).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-dev g++ make tini ca-certificates \
      libopencv-core406 libopencv-imgproc406 libturbojpeg0 \
 && rm -rf /var/lib/apt/lists/* \
 && (getent group "${GID}" >/dev/null || groupadd -g "${GID}" frossl) \
 && (getent passwd "${UID}" >/dev/null || useradd -l -m -u "${UID}" -g "${GID}" -s /bin/bash frossl) \
 && install -d -o "${UID}" -g "${GID}" /workspace
COPY --from=build /opt/venv /opt/venv
# VENV: the Makefile's virtualenv; SETUP: the image is set up at build time, so make's setup step
# is a no-op (setup.sh would want apt and root); PYTHONPATH: the source, as an editable install
# would; the caches (numba's for ffcv, matplotlib's, torch.compile's and triton's) in /tmp, which
# any UID can write (`--user` with a UID the image does not know has HOME=/);
# NVIDIA_*: what the container toolkit mounts under --gpus
ENV PYTHONUNBUFFERED=1 \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SETUP=true \
    PYTHONPATH=/workspace \
    XDG_CACHE_HOME=/tmp/frossl-cache \
    NUMBA_CACHE_DIR=/tmp/frossl-cache/numba \
    MPLCONFIGDIR=/tmp/frossl-cache/matplotlib \
    TORCHINDUCTOR_CACHE_DIR=/tmp/frossl-cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/frossl-cache/triton \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /workspace
# the project, last (.dockerignore keeps data, runs, results, virtualenvs and .git out), owned by
# the image's user without a second chown layer
COPY --chown=${UID}:${GID} . .
# the commit, last of all: changing it rebuilds nothing above. Runs record it in env.json
# (repro.checkpoint.environment reads FROSSL_GIT_COMMIT when there is no .git to ask).
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.title="frossl-repro"
ENV FROSSL_GIT_COMMIT=${GIT_COMMIT}
USER ${UID}:${GID}
# docker_entry.sh: creates/checks the results folder, then runs the command
ENTRYPOINT ["tini", "-s", "--", "bash", "/workspace/scripts/docker_entry.sh"]
CMD ["make", "help"]

# ---- test: app plus the test-only packages (lightly, hadolint), from their lock -----------------
FROM app AS test
# build arguments are per stage: the same UID/GID as the app stage's
ARG UID=1000
ARG GID=1000
USER 0
# python3.11-venv: tests/test_setup.py makes fresh virtualenvs (the offline install from a wheelhouse)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
COPY requirements-test.lock /tmp/requirements-test.lock
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && /opt/venv/bin/python -m pip install --no-cache-dir -q --require-hashes -r /tmp/requirements-test.lock \
 && rm /tmp/requirements-test.lock
USER ${UID}:${GID}

# ---- runtime: the image users run; last, so the default target -------------------------------
FROM app AS runtime
