"""``models check`` and ``models list`` find damage; nothing is left behind by killed, failed or refused
writers, and what older ones left is removed by the next push or by ``models check --repair``, also
while pushes are in flight. On a local folder and on the GCS emulator, through the command line."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import time

import pytest

from components.registry import LocalRegistry, check_registry, open_registry
from gcs_emulator import gcs_emulator, gcs_registry_uri  # noqa: F401 - pytest fixtures
from pipelines.cli import main
from test_registry import METADATA, SAVED_MODEL_FILES, make_source, stored_files, write_raw
from test_registry_gate import snapshot

BLESSED = {**METADATA, "blessing": {"blessed": True, "reason": "test"}}


@pytest.fixture(autouse=True)
def system_temp(tmp_path, monkeypatch):
    """A system temporary folder of the test's own: ``models check`` searches it for old staging."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(params=["local", "gcs"])
def registry(request, tmp_path):
    uri = str(tmp_path / "registry") if request.param == "local" else request.getfixturevalue("gcs_registry_uri")
    return open_registry(uri)


@pytest.fixture()
def source(tmp_path):
    return make_source(tmp_path / "export")


@pytest.fixture()
def two_versions(registry, source):
    registry.push("digits", source, BLESSED, alias="dev")  # 1
    registry.push("digits", source, BLESSED, alias="dev")  # 2
    return registry


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def delete_raw(registry, rel: str) -> None:
    if isinstance(registry, LocalRegistry):
        os.remove(os.path.join(registry.root, rel))
    else:
        registry._bucket.blob(f"{registry.prefix}/{rel}").delete()


def test_a_sound_registry_checks_clean(two_versions, capsys):
    two_versions.promote("digits", 2, "staging", actor="ana")
    code, out, _ = run_cli(capsys, "check", "--registry-uri", two_versions.uri)
    assert (code, out) == (0, f"{two_versions.uri}: no problems\n")
    code, out, _ = run_cli(capsys, "check", "--registry-uri", two_versions.uri, "--json")
    assert (code, json.loads(out)) == (0, {"registry_uri": two_versions.uri, "problems": 0, "findings": []})


@pytest.mark.reliability("registry")
def test_garbage_metadata_is_marked_by_list_and_reported_by_check(two_versions, capsys):
    registry = two_versions
    write_raw(registry, "digits/2/metadata.json", b"\x00garbage{")
    before = snapshot(registry)
    where = f"{registry.uri}/digits/2/metadata.json"

    code, out, _ = run_cli(capsys, "list", "--registry-uri", registry.uri)
    assert code == 0
    assert "  versions: 1, 2 (DAMAGED)\n" in out
    assert f"  damaged version 2: metadata of model 'digits' version 2 is not valid JSON: {where}" in out
    code, out, _ = run_cli(capsys, "list", "--registry-uri", registry.uri, "--json")
    [damaged] = json.loads(out)["models"][0]["damaged"]
    assert damaged["version"] == 2 and where in damaged["problem"]

    for repair in ([], ["--repair"]):
        code, out, _ = run_cli(capsys, "check", "--registry-uri", registry.uri, *repair)
        assert code == 1
        assert f"damaged version: {registry.uri}/digits/2: metadata of model 'digits' version 2 is not valid JSON" in out
        assert f"damaged alias: {registry.uri}/digits/aliases/dev.json: points at version 2, which is damaged\n" in out
        assert out.endswith(f"{registry.uri}: 2 problem(s)\n")
    assert snapshot(registry) == before  # --repair never touches a version


def _truncate(registry):
    write_raw(registry, "digits/1/variables/variables.index", b"ind")
    return "files differ from the manifest recorded at push: variables/variables.index has 3 bytes, not 11"


def _remove_weights(registry):
    delete_raw(registry, "digits/1/variables/variables.data-00000-of-00001")
    return "files differ from the manifest recorded at push: missing variables/variables.data-00000-of-00001"


def _nest_a_copy(registry):
    """What ``export-serving --base-path <registry>/digits/1`` once did: a copy inside a version."""
    for rel, data in SAVED_MODEL_FILES.items():
        write_raw(registry, f"digits/1/1/{rel}", data)
    return "files differ from the manifest recorded at push: " + "; ".join(f"unexpected 1/{rel}" for rel in sorted(SAVED_MODEL_FILES))


def _copy_to_a_phantom_model(registry):
    """What ``export-serving --base-path <registry>/flowers`` once did: a phantom model in ``list``."""
    local = registry.download_version("digits", 1, "") if isinstance(registry, LocalRegistry) else None
    for rel in [*SAVED_MODEL_FILES, "metadata.json"]:
        if local:
            with open(os.path.join(local, rel), "rb") as f:
                data = f.read()
        else:
            data = registry._bucket.blob(f"{registry.prefix}/digits/1/{rel}").download_as_bytes()
        write_raw(registry, f"flowers/1/{rel}", data)
    return "metadata.json names model 'digits' version 1, not 'flowers' version 1: a copy put here from elsewhere"


@pytest.mark.reliability("registry")
@pytest.mark.parametrize("damage", [_truncate, _remove_weights, _nest_a_copy, _copy_to_a_phantom_model])
def test_a_damaged_version_is_named_by_check(two_versions, capsys, damage):
    registry = two_versions
    problem = damage(registry)
    model = "flowers" if damage is _copy_to_a_phantom_model else "digits"
    before = snapshot(registry)
    code, out, _ = run_cli(capsys, "check", "--registry-uri", registry.uri, "--repair")
    assert code == 1
    assert f"damaged version: {registry.uri}/{model}/1: {problem}\n" in out
    assert snapshot(registry) == before
    code, out, _ = run_cli(capsys, "list", "--registry-uri", registry.uri, "--json")
    assert {m["model"]: [d["version"] for d in m["damaged"]] for m in json.loads(out)["models"]}[model] == [1]


@pytest.mark.reliability("registry")
def test_damaged_aliases_and_stray_folders_are_named_by_check(two_versions, capsys):
    registry = two_versions
    write_raw(registry, "digits/aliases/prod.json", json.dumps({"version": 9, "history": []}).encode())
    write_raw(registry, "digits/aliases/staging.json", b'{"version": "two"}')
    write_raw(registry, "2/saved_model.pb", b"graph")  # an export into the registry root, once
    before = stored_files(registry)  # (a damaged alias file is an error to every other read)
    code, out, _ = run_cli(capsys, "check", "--registry-uri", registry.uri, "--repair")
    assert code == 1
    assert f"damaged alias: {registry.uri}/digits/aliases/prod.json: points at version 9, which is missing\n" in out
    assert (f"damaged alias: {registry.uri}/digits/aliases/staging.json: alias 'staging' of model 'digits' is not an "
            "object with an integer 'version'") in out
    assert f"stray folder: {registry.uri}/2: holds no numbered version folder: not a model" in out
    assert out.endswith(f"{registry.uri}: 3 problem(s)\n")
    assert stored_files(registry) == before


# --- leftovers of killed pushes, with pushes in flight ----------------------------------------------


def _push_in_child(uri, source, copied, proceed, stale_after_s):
    """A push that stops after its second file until ``proceed`` is set (None: until killed)."""
    registry = open_registry(uri)
    registry.stale_after_s = stale_after_s
    real_put = type(registry)._put_file
    done = []

    def put(self, source_file, dest):
        real_put(self, source_file, dest)
        done.append(dest)
        if len(done) == 2:
            copied.set()
            if not proceed.wait(timeout=60):
                os._exit(3)

    type(registry)._put_file = put
    registry.push("digits", source, BLESSED, alias="dev")
    os._exit(0)


def _start_push(registry, source):
    ctx = multiprocessing.get_context("fork")
    copied, proceed = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_push_in_child, args=(registry.uri, source, copied, proceed, registry.stale_after_s))
    child.start()
    assert copied.wait(timeout=30), "the child push never started copying"
    return child, proceed


@pytest.mark.reliability("registry")
def test_check_repair_removes_a_killed_push_and_spares_one_in_flight(two_versions, source, capsys):
    registry = two_versions
    live, proceed = _start_push(registry, source)  # paused after copying two files
    killed, _ = _start_push(registry, source)  # (its own sweep leaves the live push's folder alone)
    os.kill(killed.pid, signal.SIGKILL)
    killed.join(timeout=30)
    local = isinstance(registry, LocalRegistry)

    code, out, _ = run_cli(capsys, "check", "--registry-uri", registry.uri, "--json")
    findings = json.loads(out)["findings"]
    kind = "temporary folder" if local else "partial version"
    assert sorted((f["kind"], f["in_use"]) for f in findings) == (
        [(kind, False), (kind, True)] if local else [(kind, True), (kind, True)]  # GCS: both younger than an hour
    )
    assert code == (1 if local else 0)

    code, out, _ = run_cli(capsys, "check", "--registry-uri", registry.uri, "--repair")
    assert code == 0
    if local:
        assert f"temporary folder: {registry.root}/digits/.tmp-" in out and ": removed\n" in out
        assert out.count(": in use by a live writer, left alone\n") == 1
        assert out.endswith(f"{registry.uri}: no problems, 1 leftover(s) removed\n")
    proceed.set()
    live.join(timeout=60)
    assert live.exitcode == 0  # the push in flight was not disturbed
    assert registry.list_versions("digits") == [1, 2, 3]  # (GCS: the killed push had reserved 4)
    assert registry.get_alias("digits", "dev") == registry.list_versions("digits")[-1]

    # GCS: once stale, the killed push's objects go too (its marker stays: number 4 is not reused).
    code, out, _ = run_cli(capsys, "check", "--registry-uri", registry.uri, "--repair", "--stale-after", "0")
    assert code == 0
    assert check_registry(registry) == []
    files = stored_files(registry)
    assert not [f for f in files if "/.tmp-" in f or f.startswith("digits/4/")]
    assert len(registry.audit("digits")) == 3


def test_the_next_push_removes_what_a_killed_push_left(two_versions, source):
    registry = two_versions
    killed, _ = _start_push(registry, source)
    os.kill(killed.pid, signal.SIGKILL)
    killed.join(timeout=30)
    assert check_registry(registry) != []
    registry.stale_after_s = 0.0  # GCS has no lock to ask: its partial uploads count by age
    registry.push("digits", source, BLESSED)
    assert check_registry(registry) == []


# --- nothing left behind -------------------------------------------------------------------------


@pytest.mark.reliability("registry")
def test_a_rollback_of_an_unset_alias_leaves_no_lock(two_versions, capsys):
    registry = two_versions
    before = snapshot(registry)
    code, _, err = run_cli(capsys, "rollback", "--registry-uri", registry.uri, "--model", "digits", "--alias", "prod")
    assert code == 2
    assert err == f"error: alias 'prod' of model 'digits' is not set in {registry.uri}\n"
    assert snapshot(registry) == before  # the stored files too: no aliases/.prod.lock


@pytest.mark.reliability("faults")
def test_a_gated_push_that_fails_on_a_full_disk_leaves_nothing(registry, source, monkeypatch):
    real_put = type(registry)._put_file
    calls = []

    def put_then_fail(self, source_file, dest):
        calls.append(dest)
        if len(calls) == 4:
            raise OSError(28, f"No space left on device (simulated): {dest}")
        real_put(self, source_file, dest)

    monkeypatch.setattr(type(registry), "_put_file", put_then_fail)
    with pytest.raises(OSError, match=r"No space left on device \(simulated\): .*digits"):
        registry.push("digits", source, BLESSED, alias="prod", compared_with=None)
    assert registry.list_models() == [] and stored_files(registry) == set()
    if isinstance(registry, LocalRegistry):
        assert not os.path.exists(registry.root)  # not even the registry folder the push made


@pytest.mark.reliability("registry")
def test_check_repair_removes_stale_locks_temporary_files_and_empty_folders(tmp_path, source, capsys):
    registry = open_registry(str(tmp_path / "registry"))
    registry.push("digits", source, BLESSED, alias="dev")
    root = registry.root
    aliases = os.path.join(root, "digits", "aliases")
    # What older versions, or writers killed at the wrong moment, left behind:
    open(os.path.join(aliases, ".prod.lock"), "w").close()  # rollback of an unset alias
    with open(os.path.join(aliases, ".dev.json.tmp-0a1b"), "w") as f:  # an alias write killed before its rename
        f.write('{"version": 1')
    os.mkdir(os.path.join(root, "flowers"))  # a failed first push
    with open(os.path.join(root, ".registry.json.tmp-9f8e"), "w") as f:
        f.write("{")
    old = time.time() - 7200
    os.utime(os.path.join(root, ".registry.json.tmp-9f8e"), (old, old))
    before = snapshot(registry)

    code, out, _ = run_cli(capsys, "check", "--registry-uri", root, "--repair")
    assert code == 0
    assert sorted(line.split(": ")[0] for line in out.splitlines()[:-1]) == [
        "empty folder", "stale lock", "temporary file", "temporary file"]
    assert out.endswith(f"{root}: no problems, 4 leftover(s) removed\n")
    assert sorted(os.listdir(aliases)) == [".dev.lock", "dev.json"]  # a set alias keeps its lock
    assert sorted(os.listdir(root)) == ["digits"]
    assert snapshot(registry) == {**before, "files": before["files"] - {
        "digits/aliases/.prod.lock", "digits/aliases/.dev.json.tmp-0a1b", ".registry.json.tmp-9f8e"}}


def test_check_removes_old_staging_folders_of_earlier_push_steps(tmp_path, source):
    registry = open_registry(str(tmp_path / "registry"))
    registry.push("digits", source, BLESSED)
    temp = tmp_path / "tmp"
    for name, age in (("push-old1", 7200), ("push-new2", 0), ("push-other", 7200)):
        version = temp / name / "version"
        shutil.copytree(source, version)
        if name != "push-other":  # not ours: no evaluation.json / training.json
            (version / "evaluation.json").write_text("{}")
            (version / "training.json").write_text("{}")
        for path in (version, temp / name):
            os.utime(path, (time.time() - age, time.time() - age))
    findings = check_registry(registry, repair=True, temp_dir=str(temp))
    assert [(f.kind, os.path.basename(f.location), f.removed, f.in_use) for f in findings] == [
        ("staging folder", "push-new2", False, True), ("staging folder", "push-old1", True, False)]
    assert sorted(os.listdir(temp)) == ["push-new2", "push-other"]
