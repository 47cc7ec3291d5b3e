#!/usr/bin/env bash
# Builds a Python base image from a Debian mirror, for machines that cannot pull
# `python:3.11-slim` (no route to Docker Hub or any container registry, as in an air-gapped
# company network). Needs root (debootstrap), `debootstrap` and a running Docker daemon.
#
# Usage: docker/build-base.sh [--force] [--suite SUITE] [--include PKG,...] [TAG]
#   TAG        image to create (default kfp-finetune/python-base:3.11-bookworm for bookworm,
#              kfp-finetune/python-base:3.13-trixie for trixie)
#   --force    rebuild even when TAG exists (otherwise an existing TAG is kept: idempotent)
#   --suite    the Debian release: bookworm (default; Debian 12, Python 3.11: the component
#              images) or trixie (Debian 13, Python 3.13: `make test-py313`)
#   --include  more Debian packages, comma-separated (e.g. make)
# Environment:
#   DEBIAN_MIRROR  Debian mirror URL (default: the first mirror serving SUITE in this machine's
#                  apt sources, /etc/apt/sources.list.d/*.sources or *.list, else the first
#                  Debian archive (a URI ending in /debian) they name: one archive serves every
#                  release)
#
# What it makes: Debian minbase with python3 (3.11 in bookworm, 3.13 in trixie), python3-venv
# and ca-certificates (debootstrap, about 40 s), imported with `docker import`, plus one layer
# with a virtual environment at /usr/local so that `python` and `pip` are on PATH as in the
# python:*-slim images.
set -euo pipefail

say() { printf '[build-base] %s\n' "$*" >&2; }
die() { printf '[build-base] error: %s\n' "$*" >&2; exit 1; }

force=0
tag=""
suite=bookworm
extra=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) force=1 ;;
    --suite) [[ $# -ge 2 ]] || die "--suite needs a value"; suite="$2"; shift ;;
    --include) [[ $# -ge 2 ]] || die "--include needs a value"; extra=",$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) die "unknown option '$1' (known: --force, --suite, --include)" ;;
    *) [[ -z "${tag}" ]] || die "more than one TAG given ('${tag}', '$1')"; tag="$1" ;;
  esac
  shift
done
# The Python each supported release ships (Debian's python3 package).
case "${suite}" in
  bookworm) python_version=3.11 ;;
  trixie) python_version=3.13 ;;
  *) die "unknown --suite '${suite}' (known: bookworm (Python 3.11), trixie (Python 3.13))" ;;
esac
tag="${tag:-kfp-finetune/python-base:${python_version}-${suite}}"

command -v docker >/dev/null 2>&1 || die "'docker' is not on PATH"
docker info >/dev/null 2>&1 || die "no Docker daemon answers 'docker info'"
if [[ "${force}" == 0 ]] && docker image inspect "${tag}" >/dev/null 2>&1; then
  say "${tag} exists; keeping it (--force rebuilds)"
  exit 0
fi
command -v debootstrap >/dev/null 2>&1 || die "'debootstrap' is not on PATH (Debian: apt-get install debootstrap)"
[[ "$(id -u)" == 0 ]] || die "debootstrap needs root (run with sudo)"

# The mirror the machine's own apt uses is the one known to be reachable (possibly through a
# proxy); deb.debian.org may not be.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r "${f}" ]] || continue
    # deb822 stanzas: a stanza whose Suites list has the bare suite name (not -security/-updates).
    awk -v suite="${suite}" '
      /^[[:space:]]*$/ { if (uris != "" && hit) { print uris; exit } uris=""; hit=0; next }
      /^URIs:/ { uris=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) hit=1 }
      END { if (uris != "" && hit) print uris }
    ' "${f}"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "${f}" ]] || continue
    # One-line form: deb [options] URI SUITE COMPONENTS...
    awk -v suite="${suite}" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) print $i }
    ' "${f}"
  done
}
# Any stanza or line of the main archive (URI ending in /debian, not -security or -ports).
find_archive() {
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "${f}" ]] || continue
    grep -hoE '(https?://[^ ]+/debian)/?([[:space:]]|$)' "${f}" | tr -d '[:space:]' | sed 's:/$::'
  done
}
mirror="${DEBIAN_MIRROR:-$( { find_mirror; find_archive; } | head -n 1)}"
[[ -n "${mirror}" ]] || die "no apt source serves '${suite}' in /etc/apt; set DEBIAN_MIRROR to a Debian mirror URL"

root="$(mktemp -d /tmp/kfp-finetune-rootfs.XXXXXX)"
trap 'rm -rf "${root}"' EXIT
say "debootstrap ${suite} from ${mirror} into ${root}"
debootstrap --variant=minbase --include="python3,python3-venv,ca-certificates${extra}" \
  "${suite}" "${root}" "${mirror}" >"${root}.log" 2>&1 \
  || { tail -n 20 "${root}.log" >&2; die "debootstrap failed (full log: ${root}.log)"; }
rm -f "${root}.log"
# Package lists and caches are build-time only; the image must not carry them.
rm -rf "${root}"/var/cache/apt/archives/*.deb "${root}"/var/lib/apt/lists/*

rootfs_tag="${tag}-rootfs"
say "importing the root filesystem as ${rootfs_tag}"
tar -C "${root}" -c . | docker import - "${rootfs_tag}" >/dev/null

# The venv at /usr/local puts python/pip first on the default PATH; removing EXTERNALLY-MANAGED
# lets pip install into it as in python:*-slim (PEP 668 applies to Debian's own python3 only).
say "adding the Python layer, tagging ${tag}"
docker build -q -t "${tag}" - >/dev/null <<DOCKERFILE
FROM ${rootfs_tag}
RUN python3 -m venv /usr/local && rm -f /usr/lib/python${python_version}/EXTERNALLY-MANAGED \
 && python --version | grep -qF "Python ${python_version}." && pip --version
ENV LANG=C.UTF-8
CMD ["python3"]
DOCKERFILE
say "done: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "${tag}")"
