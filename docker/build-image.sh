#!/usr/bin/env bash
# Builds the CPU or the GPU component image from docker/Dockerfile, named and tagged as in
# components/image.py (the one place they are kept). `make image-cpu`, `make image-gpu` and
# `make images` call it.
#
# Usage: docker/build-image.sh [--print-image] cpu|gpu
#   --print-image  print the image reference and exit (builds nothing)
# Environment:
#   BASE_IMAGE     the Python 3.11 base image. Default: python:3.11-slim when it is here or can be
#                  pulled; otherwise the one docker/build-base.sh makes from a Debian mirror
#                  (kfp-finetune/python-base:3.11-bookworm), built once and then reused.
#   PIP_CA_BUNDLE  a PEM CA bundle pip must trust during the build (a TLS-intercepting proxy).
#                  Default: this machine's /etc/ssl/certs/ca-certificates.crt when present; set it
#                  empty for none. Only the builder stages see it; the image does not contain it.
#   IMAGE          the image reference to build (default: from components/image.py)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"

say() { printf '[build-image] %s\n' "$*" >&2; }
die() { printf '[build-image] error: %s\n' "$*" >&2; exit 1; }

print_only=0
accelerator=""
for arg in "$@"; do
  case "${arg}" in
    --print-image) print_only=1 ;;
    cpu|gpu) accelerator="${arg}" ;;
    *) die "unknown argument '${arg}' (usage: $0 [--print-image] cpu|gpu)" ;;
  esac
done
[[ -n "${accelerator}" ]] || die "say which image: $0 cpu|gpu"

# Read with sed, not Python: the host needs no project environment to build the images.
image_py="${repo}/components/image.py"
read_constant() { sed -n "s/^$1 = \"\(.*\)\"\$/\1/p" "${image_py}"; }
name="$(read_constant IMAGE_NAME)"
if [[ "${accelerator}" == gpu ]]; then tag="$(read_constant GPU_IMAGE_TAG)"; else tag="$(read_constant IMAGE_TAG)"; fi
[[ -n "${name}" && -n "${tag}" ]] || die "could not read IMAGE_NAME/IMAGE_TAG/GPU_IMAGE_TAG from ${image_py}"
image="${IMAGE:-${name}:${tag}}"
if [[ "${print_only}" == 1 ]]; then printf '%s\n' "${image}"; exit 0; fi

command -v docker >/dev/null 2>&1 || die "'docker' is not on PATH"
docker info >/dev/null 2>&1 || die "no Docker daemon answers 'docker info' (is dockerd running, and may this user use it?)"

if [[ -z "${BASE_IMAGE:-}" ]]; then
  BASE_IMAGE=python:3.11-slim
  if ! docker image inspect "${BASE_IMAGE}" >/dev/null 2>&1 \
     && ! docker pull -q "${BASE_IMAGE}" >/dev/null 2>&1; then
    BASE_IMAGE=kfp-finetune/python-base:3.11-bookworm
    say "python:3.11-slim cannot be pulled here; using ${BASE_IMAGE} (docker/build-base.sh)"
    "${here}/build-base.sh" "${BASE_IMAGE}"
  fi
fi

ca_bundle="${PIP_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
staged_ca="${here}/build-ca/pip-ca.pem"
rm -f "${staged_ca}"
if [[ -n "${ca_bundle}" ]]; then
  if [[ -f "${ca_bundle}" ]]; then
    cp "${ca_bundle}" "${staged_ca}"
    trap 'rm -f "${staged_ca}"' EXIT
  elif [[ -n "${PIP_CA_BUNDLE+set}" ]]; then
    die "PIP_CA_BUNDLE=${ca_bundle} is not a file"
  fi
fi

say "building ${image} (ACCELERATOR=${accelerator}, BASE_IMAGE=${BASE_IMAGE}, CA bundle: ${ca_bundle:-none})"
start=${SECONDS}
docker build -f "${here}/Dockerfile" \
  --build-arg "BASE_IMAGE=${BASE_IMAGE}" --build-arg "ACCELERATOR=${accelerator}" \
  -t "${image}" "${repo}"
say "built ${image} in $((SECONDS - start)) s: $(docker image ls --format '{{.Size}}' "${image}")"
