# syntax=docker/dockerfile:1
# capsearch retrieval service: `capsearch serve` on port 8000, artifacts on the /data volume.
#
#   docker build -t capsearch .            # elsewhere: python:3.11-slim-bookworm, CPU torch
#   scripts/build_container.sh             # here: a Debian 12 base made with debootstrap, built with podman
#
# Build arguments:
#   BASE_IMAGE        a Debian/Ubuntu image with Python 3.11 and its venv module (python3 -m venv)
#   INDEX_URL         the package index pip uses (empty: pip's default)
#   TORCH_INDEX_URL   where the pinned torch/torchvision come from (default: the CPU-only wheels;
#                     empty: INDEX_URL, whose Linux wheels of torch are the larger CUDA build)
#   CAPSEARCH_EXTRAS  extras of the capsearch wheel to install, comma-separated (default: none)
# Build secret (optional): pip_cert, a CA bundle for pip where TLS to the index is intercepted by a proxy;
# it is mounted only while pip runs and is not part of any layer.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG INDEX_URL=""
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=180 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
# pip_cert: the secret's path when it was given
RUN printf '#!/bin/sh\nif [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi\nexec /opt/venv/bin/pip "$@"\n' >/usr/local/bin/venv-pip \
 && chmod 755 /usr/local/bin/venv-pip
RUN --mount=type=secret,id=pip_cert \
    python3 -m venv /opt/venv \
 && venv-pip install ${INDEX_URL:+--index-url "$INDEX_URL"} --upgrade "pip>=24" wheel
# torch first, from the CPU-only index unless told otherwise, at the versions pyproject pins
COPY pyproject.toml /tmp/pyproject.toml
RUN --mount=type=secret,id=pip_cert \
    mapfile -t pins < <(sed -n 's/^ *"\(torch\(vision\)\{0,1\}==[0-9.]*\)",$/\1/p' /tmp/pyproject.toml) \
 && test "${#pins[@]}" -eq 2 \
 && echo "torch pins: ${pins[*]}" \
 && index="${TORCH_INDEX_URL:-$INDEX_URL}" \
 && venv-pip install ${index:+--index-url "$index"} "${pins[@]}"
# the capsearch wheel and the rest of its dependencies (torch is already satisfied)
COPY pyproject.toml README.md /src/
COPY core /src/core
COPY tui /src/tui
ARG CAPSEARCH_EXTRAS=""
RUN --mount=type=secret,id=pip_cert \
    venv-pip wheel ${INDEX_URL:+--index-url "$INDEX_URL"} --no-deps --wheel-dir /wheels /src \
 && wheel="$(ls /wheels/capsearch-*.whl)" \
 && venv-pip install ${INDEX_URL:+--index-url "$INDEX_URL"} "${wheel}${CAPSEARCH_EXTRAS:+[$CAPSEARCH_EXTRAS]}" \
 && venv-pip check \
 && /opt/venv/bin/capsearch --version

FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN groupadd --system --gid 10001 capsearch \
 && useradd --system --uid 10001 --gid capsearch --home-dir /home/capsearch --create-home \
        --shell /usr/sbin/nologin capsearch \
 && mkdir -p /data \
 && chown capsearch:capsearch /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    CAPSEARCH_ARTIFACTS=/data \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/capsearch
VOLUME ["/data"]
EXPOSE 8000
# /healthz answers without a token; the first start trains the demo model (about a minute), hence the grace
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["capsearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
