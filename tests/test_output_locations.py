"""Only the registry's own operations write inside a registry: every output location a command takes
(an export base path, the pipeline root, ``--summary``, ``checkpoint_dir``) that lies inside the
registry or the input data is refused before anything runs, naming both paths."""

from __future__ import annotations

import os

import pytest

from components.locations import is_inside
from components.registry import open_registry
from pipelines.cli import main
from test_registry import METADATA, make_source
from reliability import snapshot as tree_snapshot
from test_registry_gate import snapshot

BLESSED = {**METADATA, "blessing": {"blessed": True, "reason": "test"}}


@pytest.mark.parametrize("location, folder, inside", [
    ("/r", "/r", True),
    ("/r/digits/1", "/r", True),
    ("/r/../r/x", "/r", True),
    ("/rr/x", "/r", False),
    ("/", "/r", False),
    ("file:///r/x", "/r", True),
    ("/r/x", "file:///r/", True),
    ("gs://b/reg/digits", "gs://b/reg", True),
    ("gs://b/reg", "gs://b/reg/", True),
    ("gs://b/registry2", "gs://b/reg", False),
    ("gs://b2/reg", "gs://b/reg", False),
    ("gs://b/reg", "/b/reg", False),
])
def test_is_inside(location, folder, inside):
    assert is_inside(location, folder) is inside


def test_is_inside_follows_symbolic_links(tmp_path):
    (tmp_path / "registry").mkdir()
    os.symlink(tmp_path / "registry", tmp_path / "alias")
    assert is_inside(str(tmp_path / "alias" / "digits"), str(tmp_path / "registry"))


@pytest.fixture()
def registry(tmp_path):
    reg = open_registry(str(tmp_path / "registry"))
    source = make_source(tmp_path / "export")
    reg.push("digits", source, BLESSED, alias="dev")
    reg.push("digits", source, BLESSED)
    reg.promote("digits", 1, "staging", actor="ana")
    return reg


@pytest.mark.reliability("registry")
@pytest.mark.parametrize("inside", ["digits", "", "digits/1", "flowers", "digits/aliases"])
def test_export_serving_into_the_registry_is_refused(registry, capsys, inside):
    """``<registry>/<model>`` once lost version 2 (``removed: 2``); the registry root got a stray
    version folder, a version a nested copy, a new name a phantom model."""
    base = os.path.join(registry.root, inside) if inside else registry.root
    before = snapshot(registry)
    code = main(["models", "export-serving", "--registry-uri", registry.root, "--model", "digits",
                 "--alias", "staging", "--base-path", base])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == (f"error: serving base path {base!r} lies inside the registry {registry.root!r}: only the "
                   "registry's own operations write there; choose a location outside it\n")
    assert snapshot(registry) == before
    assert registry.list_models() == ["digits"]


def test_export_serving_beside_the_registry_still_works(registry, tmp_path, capsys):
    base = str(tmp_path / "serving" / "digits")
    assert main(["models", "export-serving", "--registry-uri", registry.root, "--model", "digits",
                 "--alias", "staging", "--base-path", base]) == 0
    assert sorted(os.listdir(base)) == ["1"] and registry.list_versions("digits") == [1, 2]


def _export_refused(tmp_path, capsys, reg, base, *extra: str) -> str:
    """Runs ``models export-serving`` of alias dev into ``base``; asserts exit 2, nothing on stdout and
    nothing changed under ``tmp_path``; returns stderr."""
    before = tree_snapshot(str(tmp_path))
    code = main(["models", "export-serving", "--registry-uri", reg.root, "--model", "digits", "--alias", "dev",
                 "--base-path", str(base), *extra])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert tree_snapshot(str(tmp_path)) == before
    return err


@pytest.mark.reliability("registry")
def test_export_serving_to_a_base_path_holding_the_registry_is_refused(tmp_path, capsys):
    """A registry in a numbered folder of the base path (``<base>/7``) was taken for an old export
    and removed whole (``removed: 7``, exit 0); now refused before anything is written."""
    base = tmp_path / "x"
    reg = open_registry(str(base / "7"))
    reg.push("digits", make_source(tmp_path / "export"), METADATA, alias="dev")
    err = _export_refused(tmp_path, capsys, reg, base)
    assert err == (f"error: the registry {reg.root!r} lies inside the serving base path {str(base)!r}: the export "
                   "removes numbered folders there; choose a base path that does not contain the registry\n")
    assert reg.list_versions("digits") == [1]


@pytest.mark.reliability("registry")
@pytest.mark.parametrize("keep", [None, 1])
def test_export_serving_never_removes_a_folder_that_is_not_this_models_export(tmp_path, capsys, keep):
    """The export removes numbered folders above the exported version (and below it with --keep):
    one that holds something else (here a folder of data) stops it."""
    reg = open_registry(str(tmp_path / "registry"))
    source = make_source(tmp_path / "export")
    for _ in range(3):
        reg.push("digits", source, METADATA)
    reg.set_alias("digits", "dev", 2)
    base = tmp_path / "serving"
    folder = "9" if keep is None else "1"
    (base / folder).mkdir(parents=True)
    (base / folder / "data.csv").write_text("a,b\n")
    err = _export_refused(tmp_path, capsys, reg, base, *([] if keep is None else ["--keep", str(keep)]))
    assert err == (f"error: serving base path {base} holds folder {folder}, which is not an export of model 'digits' "
                   "(no metadata.json); the export would remove it: move it away or use another base path\n")


@pytest.mark.reliability("registry")
def test_export_serving_to_a_file_is_refused(tmp_path, capsys):
    reg = open_registry(str(tmp_path / "registry"))
    reg.push("digits", make_source(tmp_path / "export"), METADATA, alias="dev")
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    err = _export_refused(tmp_path, capsys, reg, target)
    assert err == (f"error: serving base path {str(target)!r} is a file: expected a folder (TF Serving's "
                   "--model_base_path)\n")


def _run_local_argv(tmp_path, data, registry, **overrides):
    argv = ["run-local", "--data-uri", data, "--registry-uri", registry,
            "--pipeline-root", overrides.pop("pipeline_root", str(tmp_path / "root"))]
    if "summary" in overrides:
        argv += ["--summary", overrides.pop("summary")]
    for name, value in overrides.items():
        argv += ["--param", f"{name}={value}"]
    return argv


@pytest.mark.reliability("cli")
@pytest.mark.parametrize("flag, where, value, protected", [
    ("--pipeline-root", "registry", "runs", "registry_uri"),
    ("--pipeline-root", "data", "runs", "data_uri"),
    ("--summary", "registry", "summary.json", "registry_uri"),
    ("--summary", "data", "cat/summary.json", "data_uri"),
    ("checkpoint_dir", "registry", "digits/checkpoints", "registry_uri"),
    ("checkpoint_dir", "data", "checkpoints", "data_uri"),
])
def test_run_local_refuses_outputs_inside_the_registry_or_the_data(registry, tmp_path, capsys, flag, where, value, protected):
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "1.png").write_bytes(b"png")
    folder = registry.root if where == "registry" else str(data)
    output = os.path.join(folder, value)
    key = {"--pipeline-root": "pipeline_root", "--summary": "summary"}.get(flag, flag)
    before, data_before = snapshot(registry), sorted(os.listdir(data))
    code = main(_run_local_argv(tmp_path, str(data), registry.root, **{key: output}))
    out, err = capsys.readouterr()
    assert code == 2
    assert err == (f"error: {flag} {output!r} lies inside the {protected} {folder!r}: "
                   + ("only the registry's own operations write there" if where == "registry"
                      else "a run must not change its own input data")
                   + "; choose a location outside it\n")
    assert snapshot(registry) == before and sorted(os.listdir(data)) == data_before
    assert not os.path.exists(output) and not os.path.exists(tmp_path / "root")  # refused before anything ran


@pytest.mark.reliability("cli")
def test_submit_refuses_a_checkpoint_dir_inside_the_registry(capsys):
    """Refused here, before the pipeline is compiled or the KFP host (none listens) is contacted."""
    code = main(["submit", "--host", "http://127.0.0.1:9", "--data-uri", "gs://b/images",
                 "--registry-uri", "gs://b/registry", "--param", "checkpoint_dir=gs://b/registry/ckpt"])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: checkpoint_dir 'gs://b/registry/ckpt' lies inside the registry_uri 'gs://b/registry': only the "
        "registry's own operations write there; choose a location outside it\n")


def test_outputs_beside_the_registry_and_the_data_pass_the_check(registry, tmp_path):
    from pipelines.local import check_output_locations

    params = {"data_uri": str(tmp_path / "data"), "registry_uri": registry.root,
              "checkpoint_dir": str(tmp_path / "ckpt")}
    assert check_output_locations(params, str(tmp_path / "root"), str(tmp_path / "summary.json")) is None


@pytest.mark.reliability("cli")
@pytest.mark.parametrize("registry_at, data_at, message", [
    ("data", "data", "registry_uri {registry!r} and data_uri {data!r} are the same folder: a push would write into the "
                     "folder the run reads its images from; keep the data and the registry apart"),
    ("data/registry", "data", "registry_uri {registry!r} lies inside the data_uri {data!r}: a run must not change its "
                              "own input data; choose a location outside it"),
    ("data/cat/registry", "data", "registry_uri {registry!r} lies inside the data_uri {data!r}: a run must not change "
                                  "its own input data; choose a location outside it"),
    ("wrap", "wrap/data", "data_uri {data!r} lies inside the registry_uri {registry!r}: a push would write into the "
                          "folder the run reads its images from; keep the data and the registry apart"),
], ids=["same-folder", "registry-in-data", "registry-in-a-class", "data-in-registry"])
def test_run_local_refuses_a_registry_and_data_that_overlap(tmp_path, capsys, registry_at, data_at, message):
    """Regression (new-user review, 2026-12-05): a registry inside the data was taken; the push
    wrote the model into the images folder and every later run on it failed ("11 of 907 input
    files are unusable"), or read ``registry`` as a class."""
    data, registry = tmp_path / data_at, tmp_path / registry_at
    (data / "cat").mkdir(parents=True)
    (data / "dog").mkdir()
    for label in ("cat", "dog"):
        (data / label / "1.png").write_bytes(b"png")
    before = tree_snapshot(str(tmp_path))
    code = main(_run_local_argv(tmp_path, str(data), str(registry)))
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err == "error: " + message.format(registry=str(registry), data=str(data)) + "\n"
    assert tree_snapshot(str(tmp_path)) == before  # nothing created: no registry, no pipeline root
