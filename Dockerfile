# FroSSL reproducibility artifact.
#   docker build -t frossl --build-arg UID=$(id -u) --build-arg GID=$(id -g) .
#   docker run --gpus all --ipc=host -v /data:/data -v $PWD/runs:/workspace/runs frossl make all DATA_DIR=/data
#
# Base: NVIDIA's CUDA 13.0 *devel* image on Ubuntu 24.04. torch 2.14.1 / torchvision 0.29.1 are
# CUDA 13.0 builds (tests/test_docker.py checks that the tag's CUDA version matches); "devel"
# because ffcv compiles against OpenCV and libjpeg-turbo and torch.compile needs a compiler.
# Pinned by tag. The digest was not recorded: this project's build machines reach no container
# registry. Pin it where you build with
#   docker buildx imagetools inspect nvidia/cuda:13.0.2-devel-ubuntu24.04
# and write FROM nvidia/cuda:13.0.2-devel-ubuntu24.04@sha256:<digest>.
FROM nvidia/cuda:13.0.2-devel-ubuntu24.04

ARG UID=1000
ARG GID=1000
# VENV: the virtualenv scripts/setup.sh creates and the Makefile runs (make's VENV ?= reads it)
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# 1. system packages: Python with venv, make, git. Versions follow the base image's Ubuntu release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev make git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace

# 2-3. pinned Python packages and the ffcv build: the same recipe a bare machine and CI run
# (apt libraries for ffcv, the virtualenv, pinned requirements, ffcv from source, test packages
# so that `make test` works inside the image too)
COPY requirements.txt requirements-ffcv.txt requirements-test.txt pyproject.toml ./
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh \
 && rm -rf /var/lib/apt/lists/* /root/.cache/pip

# 4. the project, last (.dockerignore keeps data, runs, results, virtualenvs and .git out)
COPY . .

# a non-root user with the host's UID/GID, so results written to bind mounts belong to the host user
# (Ubuntu 24.04 images ship a user "ubuntu" with UID 1000: it is removed first)
RUN (userdel -r ubuntu 2>/dev/null || true) \
 && (getent group "${GID}" >/dev/null || groupadd -g "${GID}" frossl) \
 && useradd -l -m -u "${UID}" -g "${GID}" -s /bin/bash frossl \
 && chown -R "${UID}:${GID}" /workspace
USER ${UID}:${GID}

CMD ["make", "help"]
