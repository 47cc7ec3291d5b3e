"""Tests of components.registry against a local folder and a GCS emulator (fake-gcs-server).

Real files, real processes, no mocks of the storage: the concurrency tests fork processes that race
on the same registry.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import traceback

import pytest

from components.registry import (
    AliasNotFoundError,
    CorruptMetadataError,
    GcsRegistry,
    LocalRegistry,
    ModelNotFoundError,
    ModelVersion,
    NoPreviousVersionError,
    RegistryError,
    VersionNotFoundError,
    open_registry,
    validate_name,
)
from gcs_emulator import gcs_emulator, gcs_registry_uri  # noqa: F401 - pytest fixtures

# A SavedModel's shape without TensorFlow: the registry copies bytes and never parses them.
SAVED_MODEL_FILES = {
    "saved_model.pb": b"\x08\x01graph",
    "fingerprint.pb": b"\x01\x02",
    "variables/variables.index": b"index-bytes",
    "variables/variables.data-00000-of-00001": bytes(range(256)) * 64,
    "assets/labels.txt": b"0\n1\n2\n",
}
# The registry's manifest of a version of SAVED_MODEL_FILES: path -> size in bytes.
MANIFEST = {rel: len(data) for rel, data in SAVED_MODEL_FILES.items()}
METADATA = {
    "metrics": {"accuracy": 0.9625, "macro_f1": 0.9581},
    "base_model": "MobileNetV2",
    "weights_source": "imagenet",
    "hyperparameters": {"epochs": 3, "learning_rate": 0.001},
    "pipeline_run_id": "run-42",
}


def make_source(path, files=SAVED_MODEL_FILES) -> str:
    for rel, data in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return str(path)


def stored_files(registry) -> set[str]:
    """Every file or object under the registry root, as paths relative to it."""
    if isinstance(registry, LocalRegistry):
        found = set()
        for dirpath, _, filenames in os.walk(registry.root):
            for name in filenames:
                found.add(os.path.relpath(os.path.join(dirpath, name), registry.root))
        return found
    base = registry.prefix + "/"
    return {b.name[len(base):] for b in registry._client.list_blobs(registry.bucket_name, prefix=base)}


def write_raw(registry, rel: str, data: bytes) -> None:
    """Overwrites or creates one stored file, bypassing the registry (to simulate damage)."""
    if isinstance(registry, LocalRegistry):
        os.makedirs(os.path.dirname(os.path.join(registry.root, rel)), exist_ok=True)
        with open(os.path.join(registry.root, rel), "wb") as f:
            f.write(data)
    else:
        registry._bucket.blob(f"{registry.prefix}/{rel}").upload_from_string(data)


@pytest.fixture(params=["local", "gcs"])
def registry_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue("gcs_registry_uri")


@pytest.fixture()
def registry(registry_uri):
    return open_registry(registry_uri)


@pytest.fixture()
def source(tmp_path) -> str:
    return make_source(tmp_path / "export")


# --- push and read ------------------------------------------------------------------------------


def test_push_twice_gives_versions_1_and_2_with_metadata(registry, registry_uri, source, tmp_path):
    before = datetime.datetime.now(datetime.timezone.utc)
    first = registry.push("digits", source, METADATA)
    second = registry.push("digits", source, {**METADATA, "pipeline_run_id": "run-43"})
    after = datetime.datetime.now(datetime.timezone.utc)

    root = registry.uri
    assert first == ModelVersion("digits", 1, f"{root}/digits/1")
    assert second == ModelVersion("digits", 2, f"{root}/digits/2")
    assert registry.list_models() == ["digits"]
    assert registry.list_versions("digits") == [1, 2]

    meta = registry.get_metadata("digits", 2)
    created = datetime.datetime.fromisoformat(meta.pop("created_at"))
    assert meta == {**METADATA, "pipeline_run_id": "run-43", "model": "digits", "version": 2, "files": MANIFEST}
    assert created.utcoffset() == datetime.timedelta(0)
    assert before - datetime.timedelta(seconds=1) <= created <= after
    assert registry.get_metadata("digits", 1)["pipeline_run_id"] == "run-42"

    version_files = {f"digits/{v}/{rel}" for v in (1, 2) for rel in [*SAVED_MODEL_FILES, "metadata.json"]}
    if isinstance(registry, GcsRegistry):
        version_files |= {"digits/.reserved/1", "digits/.reserved/2"}
    assert stored_files(registry) == version_files

    local = registry.download_version("digits", 2, str(tmp_path / "download"))
    for rel, data in SAVED_MODEL_FILES.items():
        with open(os.path.join(local, rel), "rb") as f:
            assert f.read() == data
    if isinstance(registry, LocalRegistry):
        assert local == os.path.join(registry.root, "digits", "2")
    else:
        assert local == str(tmp_path / "download")


def test_metadata_json_in_source_is_replaced(registry, tmp_path):
    source = make_source(tmp_path / "export", {**SAVED_MODEL_FILES, "metadata.json": b'{"stale": true}'})
    registry.push("digits", source, {"run": 1})
    assert registry.get_metadata("digits", 1) == {
        "run": 1, "model": "digits", "version": 1, "created_at": registry.get_metadata("digits", 1)["created_at"],
        "files": MANIFEST,
    }


def test_push_with_alias_records_a_push_action(registry, source):
    pushed = registry.push("digits", source, METADATA, alias="dev", actor="ci")
    assert registry.get_alias("digits", "dev") == pushed.version == 1
    [entry] = registry.alias_history("digits", "dev")
    assert {k: v for k, v in entry.items() if k not in ("time", "event_id")} == {
        "version": 1, "previous_version": None, "action": "push", "actor": "ci", "reason": None,
        "forced": False, "overridden": [], "gated": False, "compared_with": None,
    }
    assert datetime.datetime.fromisoformat(entry["time"]).utcoffset() == datetime.timedelta(0)
    # The same move, in the audit log, under the same id and time.
    assert registry.audit("digits") == [{
        "id": entry["event_id"], "time": entry["time"], "model": "digits", "alias": "dev", "action": "push",
        "from_version": None, "to_version": 1, "actor": "ci", "reason": None, "forced": False, "overridden": [],
        "gated": False, "compared_with": None,
    }]


def test_unknown_model_and_version(registry, source):
    assert registry.list_models() == []
    assert registry.list_versions("digits") == []
    with pytest.raises(ModelNotFoundError, match="'digits'"):
        registry.resolve("digits")
    registry.push("digits", source, METADATA)
    with pytest.raises(VersionNotFoundError, match=r"'digits' has no complete version 5 .*\(versions: 1\)"):
        registry.get_metadata("digits", 5)
    with pytest.raises(VersionNotFoundError):
        registry.version_uri("digits", 5)
    with pytest.raises(VersionNotFoundError):
        registry.set_alias("digits", "prod", 5)
    assert registry.get_alias("digits", "prod") is None
    assert registry.alias_history("digits", "prod") == []
    assert registry.list_aliases("digits") == {}


def test_resolve(registry, source):
    registry.push("digits", source, METADATA)
    registry.push("digits", source, METADATA)
    registry.set_alias("digits", "prod", 1)
    root = registry.uri
    assert registry.resolve("digits") == ModelVersion("digits", 2, f"{root}/digits/2")
    assert registry.resolve("digits", version=1) == ModelVersion("digits", 1, f"{root}/digits/1")
    assert registry.resolve("digits", alias="prod") == ModelVersion("digits", 1, f"{root}/digits/1")
    with pytest.raises(AliasNotFoundError, match="'staging'"):
        registry.resolve("digits", alias="staging")
    with pytest.raises(ValueError, match="not both"):
        registry.resolve("digits", version=1, alias="prod")


# --- concurrency ----------------------------------------------------------------------------------


def _push_worker(uri, source, worker, barrier, results):
    try:
        registry = open_registry(uri)
        barrier.wait(timeout=30)
        pushed = registry.push("digits", source, {"worker": worker})
        results.put((worker, pushed.version))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((worker, traceback.format_exc()))


def _run_processes(target, args_per_process):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(args_per_process))
    results = ctx.Queue()
    processes = [ctx.Process(target=target, args=(*args, barrier, results)) for args in args_per_process]
    for p in processes:
        p.start()
    got = [results.get(timeout=60) for _ in processes]
    for p in processes:
        p.join(timeout=30)
        assert p.exitcode == 0
    errors = [r for r in got if isinstance(r[1], str)]
    assert not errors, errors
    return got


def test_concurrent_pushes_get_distinct_versions(registry, registry_uri, source):
    got = _run_processes(_push_worker, [(registry_uri, source, w) for w in range(8)])

    assert sorted(version for _, version in got) == list(range(1, 9))
    assert registry.list_versions("digits") == list(range(1, 9))
    for worker, version in got:
        meta = registry.get_metadata("digits", version)
        assert (meta["worker"], meta["version"]) == (worker, version)
    if isinstance(registry, LocalRegistry):
        assert sorted(os.listdir(os.path.join(registry.root, "digits"))) == sorted(str(v) for v in range(1, 9))


def _alias_worker(uri, version, rounds, worker, barrier, results):
    try:
        registry = open_registry(uri)
        barrier.wait(timeout=30)
        for r in range(rounds):
            registry.set_alias("digits", "prod", version, actor=f"w{worker}", reason=f"w{worker}-r{r}")
        results.put((worker, rounds))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((worker, traceback.format_exc()))


def test_concurrent_alias_updates_lose_nothing(registry, registry_uri, source):
    registry.push("digits", source, METADATA)
    registry.push("digits", source, METADATA)
    rounds = 25
    _run_processes(_alias_worker, [(registry_uri, 1, rounds, 1), (registry_uri, 2, rounds, 2)])

    history = registry.alias_history("digits", "prod")
    assert len(history) == 2 * rounds
    assert sorted(e["reason"] for e in history) == sorted(f"w{w}-r{r}" for w in (1, 2) for r in range(rounds))
    for worker in (1, 2):
        # Each writer's own updates keep their order, and each carries the version it set.
        mine = [e for e in history if e["actor"] == f"w{worker}"]
        assert [e["reason"] for e in mine] == [f"w{worker}-r{r}" for r in range(rounds)]
        assert {e["version"] for e in mine} == {worker}
    # No update was computed from a stale read: each one saw its predecessor.
    assert history[0]["previous_version"] is None
    assert all(history[i]["previous_version"] == history[i - 1]["version"] for i in range(1, len(history)))
    assert registry.get_alias("digits", "prod") == history[-1]["version"]
    assert registry.get_alias("digits", "prod") in (1, 2)


# --- failures -------------------------------------------------------------------------------------


def test_failed_push_leaves_no_version_and_no_temp_files(registry, source, monkeypatch):
    calls = []
    real_put = type(registry)._put_file

    def put_then_fail(self, local_path, dest):
        calls.append(local_path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device (simulated)")
        real_put(self, local_path, dest)

    monkeypatch.setattr(type(registry), "_put_file", put_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        registry.push("digits", source, METADATA, alias="prod")

    assert len(calls) == 3
    assert registry.list_versions("digits") == []
    assert registry.list_models() == []
    assert registry.get_alias("digits", "prod") is None
    assert stored_files(registry) == set()
    if isinstance(registry, LocalRegistry):
        # The push made the registry folder and the model folder; it leaves neither behind.
        assert not os.path.exists(registry.root)

    monkeypatch.setattr(type(registry), "_put_file", real_put)
    assert registry.push("digits", source, METADATA).version == 1


def test_damaged_metadata_raises_corrupt_metadata_error(registry, source):
    registry.push("digits", source, METADATA)
    registry.push("digits", source, METADATA)
    write_raw(registry, "digits/2/metadata.json", b'{"metrics": {"accuracy": 0.9')
    location = f"{registry.uri}/digits/2/metadata.json"
    with pytest.raises(CorruptMetadataError) as err:
        registry.get_metadata("digits", 2)
    assert "'digits'" in str(err.value) and "version 2" in str(err.value) and location in str(err.value)
    assert "not valid JSON" in str(err.value)

    write_raw(registry, "digits/2/metadata.json", b"[1, 2]")
    with pytest.raises(CorruptMetadataError, match=r"version 2 is not a JSON object \(got list\)"):
        registry.get_metadata("digits", 2)
    assert registry.get_metadata("digits", 1)["version"] == 1


def test_damaged_alias_file_raises_corrupt_metadata_error(registry, source):
    registry.push("digits", source, METADATA, alias="prod")
    write_raw(registry, "digits/aliases/prod.json", b'{"version": "one"}')
    with pytest.raises(CorruptMetadataError, match=r"alias 'prod' of model 'digits' .*prod\.json"):
        registry.get_alias("digits", "prod")
    with pytest.raises(CorruptMetadataError):
        registry.set_alias("digits", "prod", 1)


# --- aliases and rollback -------------------------------------------------------------------------


def test_promote_and_rollback(registry, source):
    for _ in range(3):
        registry.push("digits", source, METADATA)
    registry.push("digits", source, METADATA, alias="dev", actor="ci")  # version 4
    registry.set_alias("digits", "prod", 1, actor="ana", reason="first release")
    registry.set_alias("digits", "prod", 2, actor="ana")
    registry.set_alias("digits", "prod", 3, actor="bo", reason="better f1")

    assert registry.list_aliases("digits") == {"dev": 4, "prod": 3}
    assert registry.rollback("digits", "prod", actor="bo", reason="bad latency") == 2
    assert registry.get_alias("digits", "prod") == 2

    history = registry.alias_history("digits", "prod")
    assert [(e["version"], e["previous_version"], e["action"], e["actor"], e["reason"]) for e in history] == [
        (1, None, "promote", "ana", "first release"),
        (2, 1, "promote", "ana", None),
        (3, 2, "promote", "bo", "better f1"),
        (2, 3, "rollback", "bo", "bad latency"),
    ]
    # The version before the current one is 3: a second rollback undoes the first.
    assert registry.rollback("digits", "prod") == 3

    with pytest.raises(NoPreviousVersionError, match="alias 'dev' of model 'digits' has no previous version"):
        registry.rollback("digits", "dev")
    with pytest.raises(AliasNotFoundError, match="alias 'staging' of model 'digits' is not set"):
        registry.rollback("digits", "staging")
    assert registry.list_aliases("digits") == {"dev": 4, "prod": 3}


def test_rollback_skips_repeated_promotions_of_the_same_version(registry, source):
    # Regression: promoting a version twice recorded 1 -> 1, and the next rollback "moved" the
    # alias from version 1 to version 1.
    for _ in range(2):
        registry.push("digits", source, METADATA)
    registry.set_alias("digits", "prod", 1)
    registry.set_alias("digits", "prod", 2)
    registry.set_alias("digits", "prod", 2)
    assert registry.rollback("digits", "prod") == 1
    registry.set_alias("digits", "staging", 1)
    registry.set_alias("digits", "staging", 1)
    with pytest.raises(NoPreviousVersionError, match="alias 'staging' of model 'digits' has no previous version"):
        registry.rollback("digits", "staging")


# --- validation and layout (local only: pure rules) -----------------------------------------------


@pytest.mark.parametrize(
    "name", ["", ".hidden", "../up", "a/b", "a b", "ünicode", "x" * 129, "tab\t", "digits\n", None, 3]
)
def test_bad_names_are_rejected(tmp_path, source, name):
    registry = open_registry(str(tmp_path / "registry"))
    with pytest.raises(ValueError, match=r"invalid model name .*letters, digits"):
        registry.push(name, source, METADATA)
    if name is not None:  # alias=None means "no alias"
        with pytest.raises(ValueError, match=r"invalid alias .*not starting with '\.'"):
            registry.push("digits", source, METADATA, alias=name)
    with pytest.raises(ValueError, match="invalid model name"):
        registry.list_versions(name)
    assert not os.path.exists(tmp_path / "registry")


@pytest.mark.parametrize("name", ["digits", "Digits-v2", "a_b.c", "0", "x" * 128])
def test_good_names_are_accepted(name):
    assert validate_name(name) == name
    assert validate_name(name, "alias") == name


@pytest.mark.parametrize("version", [0, -1, True, 1.0, "1", None])
def test_bad_versions_are_rejected(tmp_path, version):
    registry = open_registry(str(tmp_path))
    with pytest.raises(ValueError, match="invalid version"):
        registry.get_metadata("digits", version)


def test_bad_push_arguments(tmp_path, source):
    registry = open_registry(str(tmp_path / "registry"))
    with pytest.raises(NotADirectoryError, match="missing"):
        registry.push("digits", str(tmp_path / "missing"), METADATA)
    with pytest.raises(ValueError, match="not JSON-serializable"):
        registry.push("digits", source, {"when": datetime.datetime.now()})
    with pytest.raises(ValueError, match="invalid alias action 'deploy'"):
        registry.set_alias("digits", "prod", 1, action="deploy")


def test_local_hidden_and_incomplete_folders_are_not_versions(tmp_path, source):
    registry = open_registry(str(tmp_path / "registry"))
    registry.push("digits", source, METADATA)
    model_dir = tmp_path / "registry" / "digits"
    (model_dir / ".tmp-crashed").mkdir()
    (model_dir / ".tmp-crashed" / "metadata.json").write_text("{}")
    (model_dir / "7").mkdir()  # a crashed copy by another tool: no metadata.json
    (model_dir / "7" / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "registry" / ".trash").mkdir()

    assert registry.list_versions("digits") == [1]
    assert registry.list_models() == ["digits"]
    # Number 7 is taken, even though incomplete.
    assert registry.push("digits", source, METADATA).version == 8


def test_open_registry_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_registry("file://" + str(tmp_path / "r")).uri == str(tmp_path / "r")
    assert open_registry("relative/reg").uri == str(tmp_path / "relative" / "reg")
    for bad in ["", "s3://bucket/x", "gs:///x", "file://otherhost/x"]:
        with pytest.raises(ValueError, match="invalid registry URI"):
            open_registry(bad)


def test_open_gcs_registry(gcs_registry_uri):
    registry = open_registry(gcs_registry_uri + "/")
    assert isinstance(registry, GcsRegistry)
    assert registry.uri == gcs_registry_uri
    assert registry.prefix == "registry"


def test_gcs_missing_bucket_is_a_registry_error(gcs_emulator):
    registry = open_registry("gs://no-such-bucket-kfp/registry")
    with pytest.raises(RegistryError, match="bucket 'no-such-bucket-kfp'"):
        registry.list_models()


def test_gcs_download_refuses_non_empty_destination(gcs_registry_uri, source, tmp_path):
    registry = open_registry(gcs_registry_uri)
    registry.push("digits", source, METADATA)
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        registry.download_version("digits", 1, str(tmp_path / "dest"))
