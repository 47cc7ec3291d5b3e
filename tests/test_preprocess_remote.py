"""Preprocess on a remote Beam runner: SDK workers in their own container, sharing no disk with the step.

Beam's portable runner sends the job to a job service (``beam_job_service``: Beam's local job
server, as Flink's or Spark's job server would take it), which starts two SDK workers through a
worker pool that runs in the component image (``beam_worker_pool``: ``docker run --network host``, nothing
mounted but a certificate). Data and outputs are on ``gs://`` (fake-gcs-server on 127.0.0.1);
TensorFlow's and Beam's file systems reach it through ``gcs_front`` (tf.io.gfile ignores
``STORAGE_EMULATOR_HOST``). The step must write its examples, transform graph and statistics to
the artifacts' URIs, and finetune and evaluate must train and score from there.

Skipped, with the reason, where no Docker daemon answers; the image is built (layers reused) by
``make image-cpu``, or ``$KFP_FINETUNE_TEST_IMAGE`` is used as it is.
"""

from __future__ import annotations

import json
import os

import google.auth.compute_engine._metadata as gce_metadata
import pytest

from beam_worker_pool import CONTAINER_CA_FILE, job_service, logs, portable_args, worker_pool
from docker_daemon import cpu_image  # noqa: F401 (pytest fixture)
from gcs_emulator import gcs_emulator, new_bucket, upload_folder  # noqa: F401 (pytest fixture)
from gcs_front import GcsFront

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CLASSES = ["5", "6", "7", "8", "9"]


@pytest.fixture()
def front(gcs_emulator, tmp_path_factory, monkeypatch):  # noqa: F811 (fixture)
    """The GCS front, with this process (and the step's child process) pointed at it."""
    gcs_front = GcsFront(gcs_emulator, str(tmp_path_factory.mktemp("gcs-front")))
    for key, value in gcs_front.environment().items():
        monkeypatch.setenv(key, value)
    # google-auth reads GCE_METADATA_HOST once, when google.auth.compute_engine._metadata is
    # imported (google-auth 2.x, _metadata.py: _GCE_METADATA_HOST); in a whole test run another
    # test has imported it before this fixture set the variable, and Beam's GCS client then asked
    # metadata.google.internal for credentials (CI, 2026-12-05). The module is imported at the
    # top of this file, so this order is the one every run tests.
    monkeypatch.setattr(gce_metadata, "_GCE_METADATA_HOST", gcs_front.environment()["GCE_METADATA_HOST"])
    yield gcs_front
    gcs_front.close()


def _objects(bucket: str, prefix: str) -> dict[str, int]:
    """Object name (relative to ``prefix``) -> size, through the GCS client."""
    from components.storage import gcs_client

    return {b.name[len(prefix) + 1:]: b.size for b in gcs_client().list_blobs(bucket, prefix=prefix + "/")}


def test_workers_in_their_own_container_write_the_artifact_uris_and_the_next_steps_train_from_them(
        cpu_image, front, gcs_emulator, small_digits_dir, backbone_weights, tmp_path):  # noqa: F811 (fixtures)
    from components.evaluate import EvaluateSettings, run_evaluate_step
    from components.finetune import FinetuneSettings, run_finetune_step
    from components.preprocess import PreprocessSettings, run_preprocess_step
    from components.storage import gcs_client

    bucket = new_bucket(front.url)
    upload_folder(bucket, small_digits_dir, "data/digits")
    task = "pipeline-root/run-1/preprocess"
    uris = {name: f"gs://{bucket}/{task}/{name}" for name in ("examples", "transform_graph", "statistics")}
    local = tmp_path / "step"  # the step's own folder: only the small Markdown report may land here
    local.mkdir()
    with job_service() as job_port, \
            worker_pool(cpu_image, front.environment(CONTAINER_CA_FILE), front.ca_file) as (pool_port, pool):
        settings = PreprocessSettings(
            data_uri=f"gs://{bucket}/data/digits", registry_uri="", model_name="digits", image_size=32,
            base_model="mobilenet_v2", beam_pipeline_args=portable_args(job_port, pool_port, workers=2),
        )
        stats = run_preprocess_step(uris["examples"], uris["transform_graph"], uris["statistics"],
                                    str(local / "statistics.md"), settings)
        pool_log = logs(pool)

    assert stats["num_images"] == 200 and stats["classes"] == CLASSES
    assert sum(sum(c.values()) for c in stats["class_counts"].values()) == 200
    # Two SDK workers were started in the container, and they did the work.
    assert pool_log.count("Starting worker with command") == 2, pool_log[-3000:]
    # Everything landed under the artifacts' URIs.
    examples = _objects(bucket, f"{task}/examples")
    assert {name.split("/")[0] for name in examples} == {"manifest.jsonl", "train", "eval", "test"}
    assert all(size > 0 for name, size in examples.items() if name.startswith("train/"))
    manifest = gcs_client().bucket(bucket).blob(f"{task}/examples/manifest.jsonl").download_as_text().splitlines()
    assert len(manifest) == 200 and {json.loads(line)["status"] for line in manifest} == {"ok"}
    transform = _objects(bucket, f"{task}/transform_graph")
    assert "transform_fn/saved_model.pb" in transform and any(n.startswith("metadata/") for n in transform)
    assert any(n.startswith("transformed_metadata/") for n in transform)
    written = json.loads(gcs_client().bucket(bucket).blob(f"{task}/statistics/statistics.json").download_as_text())
    assert written["num_images"] == 200 and written["fingerprint"] == stats["fingerprint"]
    # The temporary files under --temp_location's default (beside the outputs) are gone.
    assert not any(n.startswith("tft-") for n in _objects(bucket, f"{task}/beam-temp"))
    # Locally: the report, nothing else.
    assert sorted(os.listdir(local)) == ["statistics.md"]

    # The next steps train and score from the URIs.
    model_dir = str(tmp_path / "model")
    summary = run_finetune_step(uris["examples"], uris["transform_graph"], model_dir, FinetuneSettings(
        base_model="mobilenet_v2", base_weights=backbone_weights[0], width_multiplier=0.35, epochs=4, learning_rate=1e-2))
    assert summary["labels"] == CLASSES
    losses = summary["history"]["loss"]
    assert losses[-1] < losses[0] * 0.95, losses
    result = run_evaluate_step(uris["examples"], model_dir, str(tmp_path / "evaluation.json"), str(tmp_path / "report.md"),
                               EvaluateSettings(registry_uri="", model_name="digits", min_accuracy=0.0))
    assert result["class_names"] == CLASSES
    # Every test example was scored, per class as the statistics counted them (a 4-epoch head's
    # accuracy is not the subject here: tests/test_finetune.py holds learning to a floor).
    test_counts = stats["class_counts"]["test"]
    assert result["metrics"]["num_examples"] == sum(test_counts.values())
    matrix = result["metrics"]["confusion_matrix"]
    assert [sum(row) for row in matrix] == [test_counts.get(c, 0) for c in result["class_names"]]
    assert result["blessed"] is True and 0.0 <= result["metrics"]["accuracy"] <= 1.0

