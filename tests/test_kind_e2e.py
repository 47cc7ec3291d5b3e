"""The kind path: the kind profile's volume holds data, backbone and registry.

Three layers, from what runs everywhere to what needs a kind cluster:

* ``docker/kind-up.sh`` takes the claim and its mount path from the kind profile itself;
* the kind layout in the real CPU image (marked docker): ``run-local --runner docker --profile
  kind`` with the volume's host folder mounted where the profile mounts the claim, so every step
  reads the data and the backbone from it and push writes the registry into it;
* the demo on a kind cluster (marked kind; ``make kind-e2e``): compiled with the kind profile,
  submitted, awaited; the run must succeed and the registry in the volume get a version. It skips,
  with the reason, where ``docker``, ``kind`` or ``kubectl`` is missing or no cluster was made by
  ``make kind-up``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from docker_daemon import cpu_image  # noqa: F401 (pytest fixture)
from test_container_e2e import _run_in_containers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.environ.get("KFP_FINETUNE_CLUSTER", "kfp-finetune")
# Where docker/kind-cluster.yaml mounts the volume's host folder in the kind node.
NODE_VOLUME_PATH = "/mnt/kfp-finetune-volume"
RUN_TIMEOUT_S = 3600


def _volume_layout(root: str, data_dir: str, weights: str) -> None:
    """What kind-up.sh makes (registry/ writable by any uid) and copies in (data/<name>)."""
    os.makedirs(os.path.join(root, "registry"))
    os.chmod(root, 0o777)
    os.chmod(os.path.join(root, "registry"), 0o777)
    shutil.copytree(data_dir, os.path.join(root, "data", "digits"))
    os.makedirs(os.path.join(root, "data", "backbone"))
    shutil.copy(weights, os.path.join(root, "data", "backbone", "backbone.weights.h5"))


def test_kind_up_takes_the_claim_and_mount_path_from_the_kind_profile():
    from pipelines.profiles import load_profile

    [volume] = load_profile("kind").volumes
    out = subprocess.run([os.path.join(REPO_ROOT, "docker", "kind-up.sh"), "--print-volume"], capture_output=True,
                         text=True, check=True).stdout
    assert out == f"{volume.claim} {volume.mount_path}\n" == "kfp-finetune-registry /mnt/kfp-finetune\n"


@pytest.mark.docker
@pytest.mark.slow
def test_the_kind_layout_runs_in_the_image_with_the_volume_where_the_profile_mounts_it(
        cpu_image, tmp_path, small_digits_dir, backbone_weights):  # noqa: F811 (fixture)
    from pipelines.profiles import load_profile

    [volume] = load_profile("kind").volumes
    host = str(tmp_path / "volume")
    _volume_layout(host, small_digits_dir, backbone_weights[0])
    mount = volume.mount_path
    summary = _run_in_containers(
        cpu_image, str(tmp_path / "root"), str(tmp_path / "summary.json"),
        ["--data-uri", f"{mount}/data/digits", "--base-weights", f"{mount}/data/backbone/backbone.weights.h5",
         "--registry-uri", f"{mount}/registry", "--min-accuracy", "0"],
        ["--profile", "kind", "--docker-mount", f"{host}:{mount}"],
    )
    assert summary["pushed"] == {"model": "digits", "version": 1, "uri": f"{mount}/registry/digits/1", "alias": "dev"}
    with open(os.path.join(host, "registry", "digits", "1", "metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["dataset"]["data_uri"] == f"{mount}/data/digits"
    assert metadata["base_weights"] == f"{mount}/data/backbone/backbone.weights.h5"


def _kind_volume() -> str:
    """The host folder behind the kind cluster's volume; skips where there is no cluster."""
    missing = [tool for tool in ("docker", "kind", "kubectl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH: the kind end-to-end needs a cluster made by 'make kind-up' "
                    "(kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
    clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True).stdout.split()
    if CLUSTER not in clusters:
        pytest.skip(f"no kind cluster {CLUSTER!r} (found: {', '.join(clusters) or 'none'}): run 'make kind-up' first, or 'make kind-e2e'")
    mounts = json.loads(subprocess.run(["docker", "inspect", "-f", "{{json .Mounts}}", f"{CLUSTER}-control-plane"],
                                       capture_output=True, text=True, check=True).stdout)
    sources = [m["Source"] for m in mounts if m["Destination"] == NODE_VOLUME_PATH]
    assert sources, f"kind cluster {CLUSTER!r} mounts no host folder at {NODE_VOLUME_PATH}: made by an older kind-up.sh; 'make kind-down kind-up'"
    return sources[0]


@contextlib.contextmanager
def _port_forward() -> Iterator[str]:
    """The KFP UI (which proxies the API) port-forwarded to a free local port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    forward = subprocess.Popen(["kubectl", "--context", f"kind-{CLUSTER}", "-n", "kubeflow", "port-forward",
                                "svc/ml-pipeline-ui", f"{port}:80"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{host}/apis/v2beta1/healthz", timeout=5) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if forward.poll() is not None or time.monotonic() > deadline:
            forward.kill()
            pytest.fail(f"KFP API not reachable through kubectl port-forward: {forward.stderr.read().decode()[-2000:]}")
        time.sleep(1)
    try:
        yield host
    finally:
        forward.terminate()
        forward.wait(timeout=30)


@pytest.mark.kind
@pytest.mark.slow
def test_the_demo_runs_on_kind_with_the_kind_profile_and_pushes_into_the_volume(tmp_path):
    volume_dir = _kind_volume()
    from components import registry
    from pipelines.demo import DEMO_PARAMS, prepare
    from pipelines.profile_apply import check_run_paths
    from pipelines.profiles import load_profile

    profile = load_profile("kind")
    [volume] = profile.volumes
    # The demo writes its data and backbone on the host, straight into the volume (kind-up.sh
    # copies a data folder the same way): pods see them under the profile's mount path.
    prepared = prepare(os.path.join(volume_dir, "data", "demo"), pretrain_epochs=10)
    subprocess.run(["chmod", "-R", "a+rX", os.path.join(volume_dir, "data", "demo")], check=True)

    def in_pod(host_path: str) -> str:
        return volume.mount_path + host_path[len(volume_dir):]

    # A model name of its own: no champion from an earlier run can keep this one from a push.
    model = f"digits-e2e-{time.strftime('%Y%m%d-%H%M%S')}"
    params = {
        **DEMO_PARAMS, "model_name": model, "epochs": 3, "fine_tune_epochs": 0, "min_accuracy": 0.0,
        "data_uri": in_pod(prepared["data_uri"]), "base_weights": in_pod(prepared["base_weights"]),
        "registry_uri": f"{volume.mount_path}/registry",
    }
    check_run_paths(profile, params)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(params))
    package = str(tmp_path / "kind.yaml")
    cli = [sys.executable, "-m", "pipelines"]
    subprocess.run([*cli, "compile", "--profile", "kind", "-o", package], check=True, cwd=REPO_ROOT)
    with _port_forward() as host:
        proc = subprocess.run([*cli, "submit", "--host", host, "--package", package, "--config", str(config), "--wait",
                               "--timeout", str(RUN_TIMEOUT_S)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, f"submit --wait failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout)
    assert result["state"] == "SUCCEEDED"

    pushed = registry.open_registry(os.path.join(volume_dir, "registry"))
    assert pushed.list_versions(model) == [1]
    assert pushed.get_alias(model, "dev") == 1
    assert pushed.get_metadata(model, 1)["dataset"]["data_uri"] == in_pod(prepared["data_uri"])
