#!/usr/bin/env bash
# Runs `make test-fast` (every test not marked slow) on Python 3.13, in a Debian 13 ("trixie")
# container: a base image made from Debian packages with debootstrap (docker/build-base.sh), this
# working tree copied in, and the project with its pinned dependencies installed by the Makefile
# into a virtual environment kept on the host between runs (installed again only when
# pyproject.toml changes). `make test-py313` calls it; .ci/run calls that after `make test` when
# a Docker daemon answers. The component images stay on Python 3.11 (docker/Dockerfile).
#
# Usage: docker/test-py313.sh [PYTEST_ARGS...]   (default: make test-fast, i.e. -q -m "not slow")
# Environment:
#   PIP_CA_BUNDLE      a PEM CA bundle pip must trust (a TLS-intercepting proxy between this
#                      machine and PyPI); default: /etc/ssl/certs/ca-certificates.crt when
#                      present, empty for none. Mounted read-only into the container.
#   KFP_FINETUNE_CACHE where the Python 3.13 virtual environment is kept (about 3.3 GB);
#                      default: ~/.cache/kfp-finetune. A bind mount, not an image layer: a
#                      committed layer would need the space twice while it is written.
# Needs: root (debootstrap, first run only), `debootstrap`, a running Docker daemon, and pip
# reaching PyPI (directly or through that proxy) on the first run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
say() { printf '[test-py313] %s\n' "$*" >&2; }
die() { printf '[test-py313] error: %s\n' "$*" >&2; exit 1; }

base=kfp-finetune/python-base:3.13-trixie
venv="${KFP_FINETUNE_CACHE:-${HOME}/.cache/kfp-finetune}/venv-py3.13-trixie"

command -v docker >/dev/null 2>&1 || die "'docker' is not on PATH"
docker info >/dev/null 2>&1 || die "no Docker daemon answers 'docker info'"
start=${SECONDS}

# `make` is in this base for the test run only (the component images' base has none).
"${here}/build-base.sh" --suite trixie --include make "${base}"
mkdir -p "${venv}"

ca_bundle="${PIP_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
ca_args=()
if [[ -n "${ca_bundle}" ]]; then
  [[ -f "${ca_bundle}" ]] || die "PIP_CA_BUNDLE=${ca_bundle} is not a file"
  ca_args=(-v "${ca_bundle}:/etc/kfp-finetune-ca.pem:ro"
           -e PIP_CERT=/etc/kfp-finetune-ca.pem -e SSL_CERT_FILE=/etc/kfp-finetune-ca.pem
           -e REQUESTS_CA_BUNDLE=/etc/kfp-finetune-ca.pem)
fi

# The tree is copied, not tested in place: make writes its stamp and pytest its caches, and the
# host's .venv (Python 3.11) must stay out of sight. The copy is always at /tmp/src, where the
# editable install of an earlier run points. Host networking keeps the GCS emulator's traffic on
# loopback, as in the other container tests.
pytest_args=""
if [[ $# -gt 0 ]]; then printf -v pytest_args '%q ' "$@"; fi
docker run --rm --network host -v "${repo}:/repo:ro" -v "${venv}:/opt/venv" "${ca_args[@]}" \
  -e PYTEST_ARGS="${pytest_args}" -e PYTHONDONTWRITEBYTECODE=1 -e PIP_NO_CACHE_DIR=1 \
  -e PIP_DISABLE_PIP_VERSION_CHECK=1 -e MPLCONFIGDIR=/tmp/matplotlib "${base}" bash -euo pipefail -c '
    mkdir /tmp/src
    tar -C /repo --exclude=./.venv --exclude=./.git --exclude=./.pytest_cache --exclude="*/__pycache__" \
      --exclude=./kfp-local-root --exclude=./demo-work -c . | tar -C /tmp/src -x
    cd /tmp/src
    echo "python: $(python3 --version), $(. /etc/os-release && echo "${PRETTY_NAME}")"
    make /opt/venv/.installed VENV=/opt/venv
    if [[ -n "${PYTEST_ARGS}" ]]; then
      eval "/opt/venv/bin/python -m pytest ${PYTEST_ARGS}"
    else
      make test-fast VENV=/opt/venv
    fi'
say "done in $((SECONDS - start)) s"
