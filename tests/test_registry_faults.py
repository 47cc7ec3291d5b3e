"""Transient storage faults: HTTP 429 and 503 from a loopback proxy in front of the GCS emulator are
retried with backoff and every registry operation and storage read succeeds; a retried write whose
first attempt had in fact succeeded pushes, moves and audits once; an endpoint that does not answer
fails within 30 s, naming the bucket, instead of retrying for minutes.

The client is the real google-cloud-storage client, the server the real fake-gcs-server; only the
proxy (tests/gcs_fault_proxy.py) stands between them. The backoff's first wait is shortened from
0.5 s to 0.02 s to keep the tests fast; everything else is the production retry policy.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from components import registry as registry_pkg
from components import storage
from components.registry import check_registry, open_registry
from gcs_emulator import gcs_emulator, new_bucket  # noqa: F401 - pytest fixtures
from gcs_fault_proxy import FaultProxy
from test_registry import SAVED_MODEL_FILES, make_source, stored_files

BLESSED = {"metrics": {"accuracy": 0.9}, "blessing": {"blessed": True, "reason": "test"}, "labels": ["a", "b"]}
UNREACHABLE_LIMIT_S = 30.0


def _is_create_only_upload(method: str, path: str) -> bool:
    return method == "POST" and "/upload/" in path and "ifGenerationMatch=0" in path


def _is_alias_swap(method: str, path: str) -> bool:
    return method == "POST" and "/upload/" in path and "ifGenerationMatch=" in path and "ifGenerationMatch=0" not in path


@pytest.fixture()
def proxied(gcs_emulator, monkeypatch):
    """``start(**proxy_options) -> (bucket, proxy)``: a fresh bucket, and STORAGE_EMULATOR_HOST
    pointing at a FaultProxy (tests/gcs_fault_proxy.py) in front of the emulator."""
    proxies = []

    def start(**options):
        bucket = new_bucket(gcs_emulator)
        proxy = FaultProxy(gcs_emulator, **options)
        proxies.append(proxy)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        return bucket, proxy

    monkeypatch.setattr(storage, "GCS_RETRY_INITIAL_S", 0.02)
    yield start
    for proxy in proxies:
        proxy.close()


def _gated_push(registry, source, alias, actor):
    return registry.push("digits", source, BLESSED, alias=alias, actor=actor,
                         compared_with=registry.get_alias("digits", alias))


def _brief(events):
    return [(e["alias"], e["action"], e["from_version"], e["to_version"]) for e in events]


@pytest.mark.reliability("faults")
def test_registry_operations_succeed_through_429_and_503(proxied, tmp_path):
    bucket, proxy = proxied()
    registry = open_registry(f"gs://{bucket}/registry")
    source = make_source(tmp_path / "export")
    for n in (1, 2, 3):
        assert _gated_push(registry, source, "dev", f"run-{n}").version == n
    registry.promote("digits", 2, "staging", actor="ana")
    registry.promote("digits", 3, "staging", actor="ana")
    assert registry.rollback("digits", "staging", actor="bo") == 2

    assert registry.list_models() == ["digits"]
    assert registry.list_versions("digits") == [1, 2, 3]
    assert registry.list_aliases("digits") == {"dev": 3, "staging": 2}
    # One event per move: no retried request moved or audited twice.
    assert _brief(registry.audit("digits")) == [
        ("dev", "push", None, 1), ("dev", "push", 1, 2), ("dev", "push", 2, 3),
        ("staging", "promote", None, 2), ("staging", "promote", 2, 3), ("staging", "rollback", 3, 2),
    ]
    assert [len(registry.alias_history("digits", a)) for a in ("dev", "staging")] == [3, 3]
    assert registry_pkg.champion(registry.uri, "digits", "staging") == {"version": 2, "alias": "staging", "labels": ["a", "b"]}
    local = registry.download_version("digits", 3, str(tmp_path / "download"))
    for rel, data in SAVED_MODEL_FILES.items():
        with open(os.path.join(local, rel), "rb") as f:
            assert f.read() == data
    # Exactly the versions' files, markers, aliases and events: nothing partial, nothing doubled.
    files = stored_files(registry)
    assert {f for f in files if f.startswith("digits/") and f.split("/")[1].isdigit()} == {
        f"digits/{v}/{rel}" for v in (1, 2, 3) for rel in [*SAVED_MODEL_FILES, "metadata.json"]
    }
    assert {f for f in files if "/.reserved/" in f} == {f"digits/.reserved/{v}" for v in (1, 2, 3)}
    assert len([f for f in files if f.startswith("digits/audit/")]) == 6
    assert check_registry(registry) == []
    # Every kind of fault was met and retried.
    assert {kind: len(proxy.faults(kind)) >= 3 for kind in ("429", "503", "503-after")} == {
        "429": True, "503": True, "503-after": True
    }


@pytest.mark.reliability("faults")
def test_storage_reads_are_retried_through_429_and_503(proxied, gcs_emulator):
    images = {f"data/{label}/{i}.png": bytes([i]) * 64 for label in ("cat", "dog") for i in range(3)}
    bucket = new_bucket(gcs_emulator)
    for name, data in images.items():  # straight to the emulator
        storage.gcs_client().bucket(bucket).blob(name).upload_from_string(data)
    _, proxy = proxied()

    listed = storage.list_files(f"gs://{bucket}/data")
    assert listed == sorted(f"gs://{bucket}/{name}" for name in images)
    assert {uri: storage.read_bytes(uri) for uri in listed} == {f"gs://{bucket}/{n}": d for n, d in images.items()}
    assert {kind for _, _, kind in proxy.faults()} == {"429", "503", "503-after"}


@pytest.mark.reliability("faults")
def test_a_retried_create_that_had_succeeded_pushes_once(proxied, tmp_path):
    """Every second create-only upload (markers, files, metadata.json, audit events) is done by the
    emulator and then answered 503: the retry gets 412, which the registry recognizes as its own."""
    bucket, proxy = proxied(kinds=("503-after",), only=_is_create_only_upload)
    registry = open_registry(f"gs://{bucket}/registry")
    source = make_source(tmp_path / "export")
    assert [_gated_push(registry, source, "prod", f"run-{n}").version for n in (1, 2, 3)] == [1, 2, 3]

    assert registry.list_versions("digits") == [1, 2, 3]  # no number lost or skipped
    assert _brief(registry.audit("digits")) == [("prod", "push", None, 1), ("prod", "push", 1, 2), ("prod", "push", 2, 3)]
    files = stored_files(registry)
    assert {f for f in files if "/.reserved/" in f} == {f"digits/.reserved/{v}" for v in (1, 2, 3)}
    assert len(proxy.faults("503-after")) >= 10  # 3 x (marker + 5 files + metadata + event) / 2


@pytest.mark.reliability("faults")
def test_a_retried_alias_swap_that_had_succeeded_moves_once(proxied, tmp_path):
    """Alias compare-and-swaps are done by the emulator and answered 503; the retried swap gets 412.
    Re-applying the move would record it twice, and the gate would refuse its own push."""
    bucket, proxy = proxied(kinds=("503-after",), only=_is_alias_swap)
    registry = open_registry(f"gs://{bucket}/registry")
    source = make_source(tmp_path / "export")
    for n in (1, 2, 3, 4):
        assert _gated_push(registry, source, "dev", f"run-{n}").version == n
    registry.promote("digits", 4, "staging", actor="ana")
    registry.promote("digits", 3, "staging", actor="ana")

    history = registry.alias_history("digits", "dev")
    assert [(e["previous_version"], e["version"], e["gated"], e["compared_with"]) for e in history] == [
        (None, 1, True, None), (1, 2, True, 1), (2, 3, True, 2), (3, 4, True, 3)
    ]
    assert _brief(registry.audit("digits")) == [
        ("dev", "push", None, 1), ("dev", "push", 1, 2), ("dev", "push", 2, 3), ("dev", "push", 3, 4),
        ("staging", "promote", None, 4), ("staging", "promote", 4, 3),
    ]
    assert len(proxy.faults("503-after")) >= 2  # swaps after the first alias object exists


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_BLACKHOLE_PUSH = """
import sys, time
from components.registry import open_registry
from components.storage import StorageUnavailableError
start = time.monotonic()
try:
    open_registry("gs://silent-bucket/registry").push("digits", sys.argv[1], {"a": 1}, alias="prod")
except StorageUnavailableError as err:
    print(f"{time.monotonic() - start:.1f} {err}")
"""


@pytest.mark.reliability("faults")
def test_an_unreachable_endpoint_fails_within_30_s_naming_the_bucket(gcs_emulator, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    source = make_source(tmp_path / "export")
    # A server that accepts connections and never answers, run against a push in another process
    # (the endpoint is read from the environment), while this one meets a refused port.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{silent.getsockname()[1]}",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    blackhole = subprocess.Popen([sys.executable, "-c", _BLACKHOLE_PUSH, source], env=env, stdout=subprocess.PIPE, text=True)
    refused = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", refused)
    outcome = {}

    def read_data() -> None:
        start = time.monotonic()
        try:
            storage.list_files("gs://data-bucket/images")
        except storage.StorageUnavailableError as err:
            outcome["read"] = (time.monotonic() - start, str(err))

    reader = threading.Thread(target=read_data)
    reader.start()
    start = time.monotonic()
    code = main(["models", "list", "--registry-uri", "gs://models-bucket/registry"])
    cli_s = time.monotonic() - start
    reader.join(timeout=60)
    out, _ = blackhole.communicate(timeout=60)
    silent.close()

    err = capsys.readouterr().err
    assert code == 2 and cli_s < UNREACHABLE_LIMIT_S, (code, cli_s)
    assert err.startswith(f"error: GCS bucket 'models-bucket' at {refused} did not answer: gave up after ") and err.count("\n") == 1
    read_s, read_message = outcome["read"]
    assert read_s < UNREACHABLE_LIMIT_S and f"GCS bucket 'data-bucket' at {refused} did not answer" in read_message
    seconds, message = out.strip().split(" ", 1)
    assert float(seconds) < UNREACHABLE_LIMIT_S and message.startswith("GCS bucket 'silent-bucket' at http://127.0.0.1:")
    assert "ReadTimeout" in message or "timed out" in message
    # Nothing reached the real emulator: no bucket of these names was made or written.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    names = {b.name for b in storage.gcs_client().list_buckets()}
    assert not names & {"models-bucket", "data-bucket", "silent-bucket"}
