"""export_to_serving_base / ``models export-serving``: a TF Serving base path that follows an alias,
from a local registry and from the GCS emulator."""

from __future__ import annotations

import json
import os

import pytest

from components.registry import ServingExport, ServingExportError, export_to_serving_base, open_registry
from gcs_emulator import gcs_emulator, gcs_registry_uri  # noqa: F401 - pytest fixtures
from test_models_cli import run
from test_registry import METADATA, SAVED_MODEL_FILES, make_source


@pytest.fixture(params=["local", "gcs"])
def registry(request, tmp_path):
    uri = str(tmp_path / "registry") if request.param == "local" else request.getfixturevalue("gcs_registry_uri")
    return open_registry(uri)


def numbered(base) -> list[int]:
    return sorted(int(n) for n in os.listdir(base) if n.isdigit())


def assert_complete_copy(registry, base, version):
    """``base/<version>`` holds exactly the version's files, byte for byte, and nothing else."""
    folder = os.path.join(base, str(version))
    found = {os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs}
    assert found == {*SAVED_MODEL_FILES, "metadata.json"}
    for rel, data in SAVED_MODEL_FILES.items():
        with open(os.path.join(folder, rel), "rb") as f:
            assert f.read() == data
    with open(os.path.join(folder, "metadata.json")) as f:
        assert json.load(f) == registry.get_metadata("digits", version)


def test_export_follows_the_alias_and_its_rollback(registry, tmp_path):
    source = make_source(tmp_path / "export")
    for _ in range(3):
        registry.push("digits", source, METADATA)
    base = str(tmp_path / "serving" / "digits")

    registry.set_alias("digits", "prod", 1)
    assert export_to_serving_base(registry, "digits", "prod", base) == ServingExport(
        "digits", "prod", 1, os.path.join(base, "1"), True, (), (1,)
    )
    registry.set_alias("digits", "prod", 3)
    assert export_to_serving_base(registry, "digits", "prod", base) == ServingExport(
        "digits", "prod", 3, os.path.join(base, "3"), True, (), (1, 3)
    )
    assert numbered(base) == [1, 3]
    # Re-running changes nothing.
    assert export_to_serving_base(registry, "digits", "prod", base).copied is False
    assert sorted(os.listdir(base)) == ["1", "3"]

    # After a rollback, 3 must go: TF Serving serves the highest number.
    assert registry.rollback("digits", "prod") == 1
    assert export_to_serving_base(registry, "digits", "prod", base) == ServingExport(
        "digits", "prod", 1, os.path.join(base, "1"), False, (3,), (1,)
    )
    assert sorted(os.listdir(base)) == ["1"]  # no temp or trash folder left either
    assert_complete_copy(registry, base, 1)


def test_export_keep(registry, tmp_path):
    source = make_source(tmp_path / "export")
    base = str(tmp_path / "serving")
    for version in range(1, 5):
        registry.push("digits", source, METADATA, alias="prod")
        export_to_serving_base(registry, "digits", "prod", base)
    assert numbered(base) == [1, 2, 3, 4]
    registry.push("digits", source, METADATA, alias="prod")
    done = export_to_serving_base(registry, "digits", "prod", base, keep=2)
    assert (done.version, done.removed, done.kept) == (5, (1, 2, 3), (4, 5))
    assert sorted(os.listdir(base)) == ["4", "5"]
    for version in (4, 5):
        assert_complete_copy(registry, base, version)


def test_export_refuses_a_foreign_folder_and_bad_arguments(tmp_path):
    registry = open_registry(str(tmp_path / "registry"))
    registry.push("digits", make_source(tmp_path / "export"), METADATA, alias="prod")
    base = tmp_path / "serving"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"another model")
    with pytest.raises(ServingExportError, match=rf"serving folder {base}/1 does not hold model 'digits' version 1 .*no metadata.json"):
        export_to_serving_base(registry, "digits", "prod", str(base))
    assert (base / "1" / "saved_model.pb").read_bytes() == b"another model"
    for keep in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match=f"invalid keep {keep!r}"):
            export_to_serving_base(registry, "digits", "prod", str(base), keep=keep)
    with pytest.raises(ValueError, match="invalid serving base path 'gs://b/serving'"):
        export_to_serving_base(registry, "digits", "prod", "gs://b/serving")


def test_cli_export_serving(registry, tmp_path, capsys):
    source = make_source(tmp_path / "export")
    registry.push("digits", source, METADATA, alias="prod")
    registry.push("digits", source, METADATA, alias="prod")
    base = str(tmp_path / "serving")
    argv = ["models", "export-serving", "--registry-uri", registry.uri, "--model", "digits", "--alias", "prod",
            "--base-path", base]
    assert run([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "model": "digits", "alias": "prod", "version": 2, "path": os.path.join(base, "2"), "copied": True,
        "removed": [], "kept": [2],
    }
    assert run(["models", "rollback", "--registry-uri", registry.uri, "--model", "digits", "--alias", "prod"]) == 0
    capsys.readouterr()
    assert run(argv) == 0
    assert capsys.readouterr().out == (
        f"exported digits version 1 (prod) at {os.path.join(base, '1')}; removed: 2; versions in base path: 1\n"
    )
    assert run([*argv[:-2], "--base-path", base, "--keep", "0"]) == 2
    assert capsys.readouterr().err == "error: invalid keep 0: use an integer >= 1 (numbered folders to keep)\n"


def test_exported_folder_is_a_loadable_saved_model(tmp_path):
    tf = pytest.importorskip("tensorflow")

    module = tf.Module()
    module.scale = tf.Variable(3.0)
    module.serve = tf.function(lambda x: {"y": x * module.scale}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "export"), signatures={"serving_default": module.serve})
    registry = open_registry(str(tmp_path / "registry"))
    registry.push("digits", str(tmp_path / "export"), METADATA, alias="prod")

    done = export_to_serving_base(registry, "digits", "prod", str(tmp_path / "serving"))
    loaded = tf.saved_model.load(done.path)
    out = loaded.signatures["serving_default"](x=tf.constant([1.0, 2.0]))
    assert out["y"].numpy().tolist() == [3.0, 6.0]
