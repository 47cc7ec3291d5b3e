"""A push killed midway (SIGKILL while it copies or uploads) leaves no visible version, and the next
push succeeds (on a local folder, removing what the killed push left); on a local folder and on the
GCS emulator."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from components.registry import LocalRegistry, open_registry
from gcs_emulator import gcs_emulator, gcs_registry_uri  # noqa: F401 - pytest fixtures
from test_registry import METADATA, SAVED_MODEL_FILES, make_source, stored_files

MANY_FILES = {**SAVED_MODEL_FILES, **{f"assets/extra-{i:03d}.bin": bytes([i]) * 512 for i in range(40)}}
ROUNDS = 3


@pytest.fixture(params=["local", "gcs"])
def registry(request, tmp_path):
    uri = str(tmp_path / "registry") if request.param == "local" else request.getfixturevalue("gcs_registry_uri")
    return open_registry(uri)


def _slow_push(uri, source, started):
    """Runs in the child: a push whose every file takes 50 ms, announcing the first one done."""
    registry = open_registry(uri)
    real_put = type(registry)._put_file
    done = []

    def slow_put(self, local_path, dest):
        real_put(self, local_path, dest)
        done.append(dest)
        if len(done) == 3:
            started.set()  # files are in the temporary folder (local) or uploaded (GCS)
        time.sleep(0.05)  # 43 files: about 2 s, far longer than the parent needs to kill

    type(registry)._put_file = slow_put
    registry.push("digits", source, METADATA, alias="prod")
    os._exit(0)  # reached only if the kill came too late; the parent then fails


def test_killed_push_leaves_no_version(registry, tmp_path):
    source = make_source(tmp_path / "export", MANY_FILES)
    registry.push("digits", source, METADATA, alias="prod")  # version 1
    ctx = multiprocessing.get_context("fork")
    for _ in range(ROUNDS):
        before = registry.list_versions("digits")
        started = ctx.Event()
        child = ctx.Process(target=_slow_push, args=(registry.uri, source, started))
        child.start()
        assert started.wait(timeout=30), "the child push never started copying"
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
        assert child.exitcode == -signal.SIGKILL

        assert registry.list_versions("digits") == before
        assert registry.get_alias("digits", "prod") == before[-1]
        assert registry.list_models() == ["digits"]
        files = stored_files(registry)
        if isinstance(registry, LocalRegistry):
            # The copy is a hidden temporary folder: no numbered folder, so TF Serving sees nothing.
            leftovers = sorted(n for n in os.listdir(os.path.join(registry.root, "digits")) if n.startswith(".tmp-"))
            # The dead push's folder and its lease, no more: the next push removed the earlier ones.
            assert len(leftovers) == 2 and leftovers[1] == leftovers[0] + ".lease"
            assert sorted(n for n in os.listdir(os.path.join(registry.root, "digits")) if n.isdigit()) == [
                str(v) for v in before
            ]
        else:
            # The dead push had reserved the next number; its partial folder has no metadata.json.
            dead = before[-1] + 1
            assert f"digits/.reserved/{dead}" in files
            assert f"digits/{dead}/metadata.json" not in files
            assert len([f for f in files if f.startswith(f"digits/{dead}/")]) >= 3

        pushed = registry.push("digits", source, METADATA, alias="prod")
        # Local numbers are taken at the final rename, so the next push gets max + 1; on GCS the
        # killed push's reserved number stays taken and the next push skips it.
        expected = before[-1] + 1 if isinstance(registry, LocalRegistry) else before[-1] + 2
        assert pushed.version == expected
        assert registry.list_versions("digits") == [*before, expected]
        assert registry.get_alias("digits", "prod") == expected
        assert registry.get_metadata("digits", expected)["version"] == expected
        if isinstance(registry, LocalRegistry):
            # The dead push's lease was free, so this push removed its folder and lease first.
            assert not [n for n in os.listdir(os.path.join(registry.root, "digits")) if n.startswith(".tmp-")]
    # Only the completed pushes moved the alias.
    assert [e["to_version"] for e in registry.audit("digits")] == registry.list_versions("digits")
