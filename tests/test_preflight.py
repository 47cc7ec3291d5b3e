"""run-local's up-front check (pipelines/preflight.py): what passes, and how fast.

The refusals are the reliability catalogue's (test_reliability_*.py); here are the inputs that
must pass (so the check does not stand in the way of a good run) and the check's own costs.
"""

import os
import time

import pytest

from gcs_emulator import gcs_emulator, new_bucket  # noqa: F401 - pytest fixture
from pipelines import preflight
from reliability import world  # noqa: F401 - pytest fixture


@pytest.fixture()
def bucket(gcs_emulator):
    from components import storage

    name = new_bucket(gcs_emulator)
    client = storage.gcs_client().bucket(name)
    client.blob("data/a/0.png").upload_from_string(b"png")
    client.blob("data/.DS_Store").upload_from_string(b"junk")
    client.blob("images.csv").upload_from_string(b"data/a/0.png,a\n")
    return name


def test_a_valid_local_run_passes_within_seconds_and_writes_nothing(world):
    from reliability import snapshot

    params = {"data_uri": world.data, "registry_uri": world.registry, "model_name": "digits", "base_weights": world.weights,
              "width_multiplier": 0.35, "image_size": 32, "fine_tune_epochs": 1, "unfreeze": "from:block_16_expand"}
    before = snapshot(world.root)
    start = time.perf_counter()
    preflight.check_run(params, world.pipeline_root, world.summary)
    assert time.perf_counter() - start < 10
    assert snapshot(world.root) == before  # the probes for the pipeline root and the summary are gone


@pytest.mark.parametrize("uri", ["gs://{b}/data", "gs://{b}/data/", "gs://{b}/images.csv"])
def test_data_and_registry_on_gcs_pass(uri, bucket):
    preflight.check_data_uri(uri.format(b=bucket))
    preflight.check_registry(f"gs://{bucket}/registry")


def test_weights_on_gcs_are_read_and_compared(bucket, world):
    from components import storage
    from components.finetune import FinetuneSettings

    storage.gcs_client().bucket(bucket).blob("w/base.weights.h5").upload_from_filename(world.weights)
    settings = FinetuneSettings(base_weights=f"gs://{bucket}/w/base.weights.h5", width_multiplier=0.35)
    preflight.check_base_model(settings, 32)
    with pytest.raises(FileNotFoundError, match=rf"base_weights 'gs://{bucket}/w/missing.weights.h5': no object 'w/missing.weights.h5'"):
        preflight.check_base_model(FinetuneSettings(base_weights=f"gs://{bucket}/w/missing.weights.h5", width_multiplier=0.35), 32)
    with pytest.raises(ValueError, match=r"does not fit layer 'block_1_project'"):
        preflight.check_base_model(FinetuneSettings(base_weights=f"gs://{bucket}/w/base.weights.h5", width_multiplier=0.5), 32)


def test_no_base_model_is_built_when_there_is_nothing_to_check(monkeypatch):
    """ImageNet weights with the whole base unfrozen: nothing to compare, nothing downloaded."""
    from components.finetune import FinetuneSettings
    from components.finetune import model

    monkeypatch.setattr(model, "load_base_model", lambda *a: pytest.fail("built a base model"))
    preflight.check_base_model(FinetuneSettings(), 224)
    preflight.check_base_model(FinetuneSettings(fine_tune_epochs=2, unfreeze="all"), 224)


def test_folders_still_to_be_made_are_checked_where_they_will_be_made(tmp_path):
    preflight.check_writable_folder("--pipeline-root", str(tmp_path / "a" / "b" / "c"))
    preflight.check_writable_file("--summary", str(tmp_path / "new" / "summary.json"))
    assert os.listdir(tmp_path) == []


def test_a_mounted_path_is_checked_on_the_host(world):
    """Under the Docker runner, data and registry paths are container paths."""
    to_host = {"/data": world.data, "/mnt/registry": world.registry}.get
    preflight.check_data_uri("/data", to_host)
    preflight.check_registry("/mnt/registry", to_host)
    with pytest.raises(FileNotFoundError, match=r"data_uri '/nowhere' \(on the host: '/elsewhere'\) does not exist"):
        preflight.check_data_uri("/nowhere", lambda path: "/elsewhere")
