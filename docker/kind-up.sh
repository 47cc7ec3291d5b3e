#!/usr/bin/env bash
# Creates a local kind cluster with standalone Kubeflow Pipelines and the kfp-finetune component
# image, with one volume for data and the model registry, then port-forwards the KFP UI (which
# also proxies the API) to http://localhost:8080.
#
# Usage: docker/kind-up.sh [DATA_DIR ...]   (from anywhere; needs docker, kind, kubectl)
#        docker/kind-up.sh --print-volume   (prints "CLAIM MOUNT_PATH" of the kind profile; needs nothing)
#   DATA_DIR  a host folder copied into the volume as data/<its name>; pods then read it at
#             /mnt/kfp-finetune/data/<its name> (the kind profile's mount path)
# Environment:
#   KFP_FINETUNE_CLUSTER            cluster name (default kfp-finetune)
#   KFP_VERSION                     KFP backend manifests tag (default 2.17.3, matching kfp==2.17.3)
#   KFP_FINETUNE_IMAGE              image to build and load (default: components/image.py's)
#   KFP_FINETUNE_VOLUME_DIR         host folder behind the volume: registry/ and data/ inside
#                                   (default ~/.kfp-finetune/kind-volume)
#   KFP_FINETUNE_PORT               local port for the UI/API (default 8080)
#   KFP_FINETUNE_SKIP_BUILD=1       do not build the image (load an existing one)
#   KFP_FINETUNE_NO_PORT_FORWARD=1  stop after setup instead of port-forwarding
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"

cluster="${KFP_FINETUNE_CLUSTER:-kfp-finetune}"
kfp_version="${KFP_VERSION:-2.17.3}"
volume_dir="${KFP_FINETUNE_VOLUME_DIR:-${HOME}/.kfp-finetune/kind-volume}"
port="${KFP_FINETUNE_PORT:-8080}"
context="kind-${cluster}"
manifests="github.com/kubeflow/pipelines/manifests/kustomize"

say() { printf '[kind-up] %s\n' "$*" >&2; }
die() { printf '[kind-up] error: %s\n' "$*" >&2; exit 1; }

# The claim's name and where pods see it are kept in the kind profile (the one place the
# compiled pipeline takes them from); read with sed, like the image below.
read_volume() {
  local profile="${repo}/pipelines/cluster_profiles/kind.yaml"
  claim="$(sed -n 's/^ *- claim: *//p' "${profile}" | head -n 1)"
  mount_path="$(sed -n 's/^ *mount_path: *//p' "${profile}" | head -n 1)"
  [[ -n "${claim}" && "${mount_path}" == /* ]] || die "could not read the volume's claim and mount_path from ${profile}"
}
if [[ "${1:-}" == --print-volume ]]; then
  read_volume
  printf '%s %s\n' "${claim}" "${mount_path}"
  exit 0
fi

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH; install it: $2"
}
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
docker info >/dev/null 2>&1 || die "docker is installed but no Docker daemon answers 'docker info' (is it running, and may this user use it?)"
for data in "$@"; do
  [[ -d "${data}" ]] || die "data folder '${data}' does not exist (arguments are folders to copy into the volume)"
done
read_volume

# The default image is the one the compiled pipeline names (components/image.py), so
# `kfp-finetune compile` needs no --image for this cluster. Read with sed: no Python needed here.
image_py="${repo}/components/image.py"
default_image="$(sed -n 's/^IMAGE_NAME = "\(.*\)"$/\1/p' "${image_py}"):$(sed -n 's/^IMAGE_TAG = "\(.*\)"$/\1/p' "${image_py}")"
image="${KFP_FINETUNE_IMAGE:-${default_image}}"
[[ "${image}" == *?:?* ]] || die "could not read IMAGE_NAME/IMAGE_TAG from ${image_py}; set KFP_FINETUNE_IMAGE"
# kind-loaded images are only used when the pod does not pull: ':latest' means pull Always.
[[ "${image}" != *:latest ]] || die "image '${image}' is tagged latest; kind-loaded images need another tag"

# Fail early with a clear message when the manifests tag does not exist (kubectl's kustomize
# error for a missing ref is a long git trace).
if command -v git >/dev/null 2>&1; then
  if ! git ls-remote --exit-code --tags https://github.com/kubeflow/pipelines "refs/tags/${kfp_version}" >/dev/null 2>&1; then
    die "kubeflow/pipelines has no tag '${kfp_version}' (or GitHub is unreachable); set KFP_VERSION to a released backend version"
  fi
fi

# 1. Cluster, with the volume's host folder mounted into the node.
mkdir -p "${volume_dir}/registry" "${volume_dir}/data"
volume_dir="$(cd "${volume_dir}" && pwd)"
# Steps run as uid 10001 (docker/Dockerfile): a registry folder they cannot write would make
# every push fail after the whole training.
chmod a+rwx "${volume_dir}" "${volume_dir}/registry"
chmod a+rx "${volume_dir}/data"
if kind get clusters 2>/dev/null | grep -qx "${cluster}"; then
  say "cluster '${cluster}' exists; reusing it"
  mounted="$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/mnt/kfp-finetune-volume"}}{{.Source}}{{end}}{{end}}' \
    "${cluster}-control-plane" 2>/dev/null || true)"
  [[ "${mounted}" == "${volume_dir}" ]] || die "cluster '${cluster}' mounts '${mounted:-no folder}' as its volume, not ${volume_dir}; set KFP_FINETUNE_VOLUME_DIR=${mounted:-...} or delete the cluster (make kind-down)"
else
  config="$(mktemp)"
  trap 'rm -f "${config}"' EXIT
  sed -e "s|__VOLUME_HOST_DIR__|${volume_dir}|" -e "s|^name: .*|name: ${cluster}|" \
    "${here}/kind-cluster.yaml" >"${config}"
  say "creating cluster '${cluster}' (volume folder ${volume_dir})"
  kind create cluster --config "${config}" --wait 180s
  rm -f "${config}"
fi
kc() { kubectl --context "${context}" "$@"; }

# Data reaches the pods through the same volume: the host folder is the node's hostPath, so
# a copy here is at once in the volume (also later: cp -r DIR "${volume_dir}/data/").
for data in "$@"; do
  name="$(basename "$(cd "${data}" && pwd)")"
  say "copying ${data} into the volume: pods read it at ${mount_path}/data/${name}"
  mkdir -p "${volume_dir}/data/${name}"
  cp -R "${data}/." "${volume_dir}/data/${name}/"
  chmod -R a+rX "${volume_dir}/data/${name}"
done

# 2. Standalone KFP (the official kustomize manifests; platform-agnostic: no GCP pieces,
#    MinIO and MySQL in-cluster).
say "installing Kubeflow Pipelines ${kfp_version}"
kc apply -k "${manifests}/cluster-scoped-resources?ref=${kfp_version}"
kc wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kc apply -k "${manifests}/env/platform-agnostic?ref=${kfp_version}"

# 3. The component image, built here and loaded into the node (no registry push needed).
if [[ "${KFP_FINETUNE_SKIP_BUILD:-0}" != 1 ]]; then
  say "building ${image}"
  IMAGE="${image}" "${here}/build-image.sh" cpu
fi
say "loading ${image} into kind"
kind load docker-image "${image}" --name "${cluster}"

# 4. The volume as a PVC in the namespace where KFP runs steps; the kind profile mounts it
#    (kfp.kubernetes.mount_pvc) at ${mount_path} in every step that reads or writes storage.
#    ReadWriteOnce is enough: kind has one node, and RWO is per node, not per pod.
kc apply -f - <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: ${claim}
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: kfp-finetune-host
  hostPath: {path: /mnt/kfp-finetune-volume, type: Directory}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ${claim}
  namespace: kubeflow
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: kfp-finetune-host
  volumeName: ${claim}
  resources: {requests: {storage: 20Gi}}
YAML

say "waiting for KFP deployments (first start pulls images; often 5-10 minutes)"
kc -n kubeflow wait --for=condition=Available deployment --all --timeout=20m

image_flag=""
[[ "${image}" == "${default_image}" ]] || image_flag=" --image ${image}"
say "ready: image ${image}; volume ${volume_dir} at ${mount_path} in the steps"
say "compile with: kfp-finetune compile --profile kind${image_flag} -o kfp-finetune.yaml"
say "run parameters: registry_uri=${mount_path}/registry data_uri=${mount_path}/data/<folder>"
if [[ "${KFP_FINETUNE_NO_PORT_FORWARD:-0}" == 1 ]]; then
  say "port-forward skipped; run: kubectl --context ${context} -n kubeflow port-forward svc/ml-pipeline-ui ${port}:80"
  exit 0
fi
say "KFP UI and API on http://localhost:${port} (Ctrl-C stops the port-forward, not the cluster)"
say "submit with: kfp-finetune submit --host http://localhost:${port} --package kfp-finetune.yaml --config YOUR.yaml"
exec kubectl --context "${context}" -n kubeflow port-forward svc/ml-pipeline-ui "${port}:80"
