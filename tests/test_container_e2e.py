"""The compiled pipeline in its real container image, step by step, as a cluster runs it.

``kfp.local.DockerRunner`` starts every step in the CPU component image, as an arbitrary non-root
uid (OpenShift assigns one per namespace), sharing nothing with the host but the pipeline root:
the data, the backbone weights and the registry are on ``gs://`` (fake-gcs-server on 127.0.0.1;
the containers use host networking to reach it), or a folder registry is mounted at a fixed path
the way a PersistentVolumeClaim is mounted in a pod. Then the host's own CLI reads what the
containers pushed (``models describe``, ``predict``).

Skipped, with the reason, where no Docker daemon answers; ``.ci/run`` starts one where it can.
The image is built (or found up to date, layers reused) by ``make image-cpu``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from docker_daemon import cpu_image  # noqa: F401 (pytest fixture)
from gcs_emulator import gcs_emulator, new_bucket, upload_folder  # noqa: F401 (pytest fixture)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Any uid that is not the image's (10001) and not root, with gid 0 as OpenShift gives it.
ARBITRARY_USER = "23456:0"


@pytest.fixture(scope="module")
def gcs_inputs(gcs_emulator, small_digits_dir, backbone_weights):  # noqa: F811 (fixture)
    """The digits and the test backbone on the emulator: ``(data_uri, base_weights, bucket)``."""
    from components.storage import gcs_client

    bucket = new_bucket(gcs_emulator)
    client = gcs_client()
    upload_folder(bucket, small_digits_dir, "data/digits")
    client.bucket(bucket).blob("weights/backbone.weights.h5").upload_from_filename(backbone_weights[0])
    return f"gs://{bucket}/data/digits", f"gs://{bucket}/weights/backbone.weights.h5", bucket


def _run_in_containers(image: str, root: str, summary: str, params: list[str], docker_args: list[str]) -> dict:
    """``kfp-finetune run-local --runner docker`` in a child process (kfp.local keeps global
    state), returning its summary; the child's output is shown when it fails."""
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o777)  # the containers' arbitrary uid writes the run's outputs here
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    command = [
        sys.executable, "-m", "pipelines", "run-local", "--runner", "docker", "--image", image,
        "--docker-user", ARBITRARY_USER, "--pipeline-root", root, "--summary", summary,
        *(["--docker-env", f"STORAGE_EMULATOR_HOST={emulator}"] if emulator else []),
        *docker_args,
        "--base-model", "mobilenet_v2", "--width-multiplier", "0.35", "--image-size", "32", "--epochs", "3",
        "--learning-rate", "0.01", "--model-name", "digits", *params,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=REPO_ROOT)
    assert proc.returncode == 0, f"run-local --runner docker failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    with open(summary) as f:
        return json.load(f)


def test_every_step_runs_in_the_image_as_a_non_root_uid_with_gcs_data_and_registry(cpu_image, gcs_inputs, tmp_path, small_digits_dir):
    data_uri, weights, bucket = gcs_inputs
    registry = f"gs://{bucket}/registry"
    blessed = _run_in_containers(
        cpu_image, str(tmp_path / "root"), str(tmp_path / "blessed.json"),
        ["--data-uri", data_uri, "--base-weights", weights, "--registry-uri", registry, "--min-accuracy", "0"], [],
    )
    assert blessed["status"] == "succeeded" and blessed["blessed"] is True
    assert blessed["pushed"] == {"model": "digits", "version": 1, "uri": f"{registry}/digits/1", "alias": "dev"}
    # Every output of the steps was written by the containers' uid, inside the pipeline root only;
    # the .html copies of the reports are run-local's own (host side, pipelines.local.collect_reports).
    copies = set(blessed["reports"].values())
    assert copies == {os.path.join(blessed["run_dir"], f"{name}.html") for name in ("evaluation", "training")}
    owners = {os.stat(os.path.join(d, f)).st_uid for d, _, files in os.walk(blessed["run_dir"]) for f in files
              if os.path.join(d, f) not in copies}
    assert owners == {int(ARBITRARY_USER.split(":")[0])}

    not_blessed = _run_in_containers(
        cpu_image, str(tmp_path / "root"), str(tmp_path / "not-blessed.json"),
        ["--data-uri", data_uri, "--base-weights", weights, "--registry-uri", registry, "--min-accuracy", "1.0"], [],
    )
    assert not_blessed["status"] == "succeeded" and not_blessed["blessed"] is False
    assert not_blessed["pushed"] is None and "below the floor" in not_blessed["reason"]

    # The host's CLI reads what the containers pushed.
    describe = tmp_path / "describe.json"
    with open(describe, "w") as out:
        code = subprocess.run([sys.executable, "-m", "pipelines", "models", "describe", "--registry-uri", registry,
                               "--model", "digits", "--alias", "dev", "--json"], stdout=out, cwd=REPO_ROOT).returncode
    assert code == 0
    with open(describe) as f:
        described = json.load(f)
    assert described["version"] == 1 and described["aliases"] == ["dev"]
    assert described["metadata"]["dataset"]["data_uri"] == data_uri and described["metadata"]["base_weights"] == weights
    image = os.path.join(small_digits_dir, "7", sorted(os.listdir(os.path.join(small_digits_dir, "7")))[0])
    predicted = subprocess.run([sys.executable, "-m", "pipelines", "predict", "--registry-uri", registry, "--model", "digits",
                                "--alias", "dev", image], capture_output=True, text=True, cwd=REPO_ROOT)
    assert predicted.returncode == 0, predicted.stderr
    row = json.loads(predicted.stdout.strip().splitlines()[-1])
    assert row["label"] in {"5", "6", "7", "8", "9"} and sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_a_folder_registry_mounted_at_a_fixed_path_like_a_volume_claim(cpu_image, gcs_inputs, tmp_path):
    data_uri, weights, _ = gcs_inputs
    host_registry = tmp_path / "pvc"
    host_registry.mkdir()
    os.chmod(host_registry, 0o777)
    summary = _run_in_containers(
        cpu_image, str(tmp_path / "root"), str(tmp_path / "summary.json"),
        ["--data-uri", data_uri, "--base-weights", weights, "--registry-uri", "/mnt/registry", "--min-accuracy", "0"],
        ["--docker-mount", f"{host_registry}:/mnt/registry"],
    )
    assert summary["pushed"] == {"model": "digits", "version": 1, "uri": "/mnt/registry/digits/1", "alias": "dev"}
    # What the containers wrote at the mount point is on the host, as a volume outlives its pods.
    with open(host_registry / "digits" / "1" / "metadata.json") as f:
        assert json.load(f)["version"] == 1
    with open(host_registry / "digits" / "aliases" / "dev.json") as f:
        assert json.load(f)["version"] == 1
