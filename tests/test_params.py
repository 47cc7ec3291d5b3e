"""Tests of pipelines/params.py: reading, merging and checking pipeline parameters for the CLI."""

import argparse
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pipelines.params import (
    PipelineParameter,
    add_arguments,
    check_params,
    collect_params,
    installed_pipeline,
    load_params,
    params_from_args,
    read_pipeline_package,
)
from tiny_pipeline import TINY_NAME, TINY_PARAMETERS, package  # noqa: F401 - package is a pytest fixture


def test_read_pipeline_package(package: str) -> None:
    pkg = read_pipeline_package(package)
    assert pkg.name == "tiny-finetune"
    assert pkg.parameters["data_uri"].required
    assert not pkg.parameters["epochs"].required
    assert pkg.parameters["epochs"].parameter_type == "NUMBER_INTEGER"
    assert pkg.parameters["learning_rate"].parameter_type == "NUMBER_DOUBLE"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", "5", 5),
        ("epochs", 5.0, 5),
        ("learning-rate", "1e-3", 0.001),
        ("learning_rate", 1, 1.0),
        ("unfreeze", "yes", True),
        ("unfreeze", "False", False),
        ("class_names", '["cat", "dog"]', ["cat", "dog"]),
        ("accelerator_type", "nvidia.com/gpu", "nvidia.com/gpu"),
    ],
)
def test_check_params_converts(package: str, key: str, value: Any, expected: Any) -> None:
    checked = check_params(read_pipeline_package(package), {"data_uri": "/d", key: value})
    assert checked[key.replace("-", "_")] == expected
    assert type(checked[key.replace("-", "_")]) is type(expected)


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"data_uri": "/d", "epochz": 3}, "'epochz'"),
        ({"epochs": 3}, "data_uri"),
        ({"data_uri": "/d", "epochs": "three"}, "'epochs'"),
        ({"data_uri": "/d", "epochs": 2.5}, "'epochs'"),
        ({"data_uri": "/d", "epochs": True}, "'epochs'"),
        ({"data_uri": "/d", "unfreeze": "maybe"}, "'unfreeze'"),
        ({"data_uri": 3}, "'data_uri'"),
        ({"data_uri": "/d", "class_names": "{}"}, "'class_names'"),
    ],
)
def test_check_params_rejects(package: str, params: dict, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        check_params(read_pipeline_package(package), params)


def test_load_params_config_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("data-uri: gs://bucket/digits\nepochs: 3\nlearning_rate: 0.01\n")
    params = load_params(str(config), [("epochs", "7"), ("target-env", "dev")])
    assert params == {"data_uri": "gs://bucket/digits", "epochs": "7", "learning_rate": 0.01, "target_env": "dev"}


def test_load_params_rejects_duplicate_and_non_mapping(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("data-uri: a\ndata_uri: b\n")
    with pytest.raises(ValueError, match="data_uri"):
        load_params(str(dup), [])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_params(str(listing), [])
    with pytest.raises(FileNotFoundError):
        load_params(str(tmp_path / "missing.yaml"), [])




def test_load_params_names_a_config_that_is_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [3\n")
    with pytest.raises(ValueError, match=r"config file '.*bad.yaml' is not valid YAML: "):
        load_params(str(bad), [])


# --------------------------------------------------------------------------------------------
# The installed pipeline, described by PARAMETERS
# --------------------------------------------------------------------------------------------


def test_installed_pipeline_matches_the_compiled_package(tmp_path: Path) -> None:
    # What run-local, submit and schedule check against without compiling must be what
    # compiling would give.
    from pipelines.pipeline import PARAMETERS, compile_pipeline

    compiled = read_pipeline_package(compile_pipeline(str(tmp_path / "pipeline.yaml")))
    installed = installed_pipeline()
    assert installed.path is None
    assert installed.name == compiled.name == "kfp-finetune"
    assert list(installed.parameters) == list(PARAMETERS)
    assert dict(installed.parameters) == dict(compiled.parameters)
    assert installed.parameters["data_uri"] == PipelineParameter("data_uri", "STRING", required=True)
    assert installed.parameters["epochs"] == PipelineParameter("epochs", "NUMBER_INTEGER", required=False)


def _install(monkeypatch: pytest.MonkeyPatch, parameters: dict) -> None:
    """Stands in for pipelines.pipeline with only what params.py reads (no compile_pipeline:
    checking the installed pipeline's parameters must not compile it)."""
    stand_in = types.SimpleNamespace(PARAMETERS=parameters, PIPELINE_NAME=TINY_NAME)
    monkeypatch.setitem(sys.modules, "pipelines.pipeline", stand_in)


def test_installed_pipeline_refuses_a_type_kfp_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, {"data_uri": (str, None, "images"), "crop": (tuple, (1, 2), "crop box")})
    with pytest.raises(TypeError, match=r"pipeline parameter 'crop' has type <class 'tuple'>"):
        installed_pipeline()


# --------------------------------------------------------------------------------------------
# The command line: --config, --param and one flag per parameter
# --------------------------------------------------------------------------------------------


def _parse(monkeypatch: pytest.MonkeyPatch, argv: list[str], parameters: dict = TINY_PARAMETERS) -> argparse.Namespace:
    _install(monkeypatch, parameters)
    parser = argparse.ArgumentParser(prog="kfp-finetune run-local")
    parser.add_argument("--package")
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_are_converted_like_param_values(monkeypatch: pytest.MonkeyPatch) -> None:
    by_flag = params_from_args(_parse(monkeypatch, ["--data-uri", "/d", "--epochs", "3", "--unfreeze", "yes",
                                                    "--learning-rate", "1e-3", "--class-names", '["cat", "dog"]']))
    by_param = params_from_args(_parse(monkeypatch, ["--param", "data_uri=/d", "--param", "epochs=3", "--param", "unfreeze=yes",
                                                     "--param", "learning-rate=1e-3", "--param", 'class_names=["cat", "dog"]']))
    expected = {"data_uri": "/d", "epochs": 3, "unfreeze": True, "learning_rate": 0.001, "class_names": ["cat", "dog"]}
    assert by_flag == by_param == expected
    assert [type(v) for v in by_flag.values()] == [str, int, bool, float, list]


def test_flags_and_param_override_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("data-uri: gs://b/images\nepochs: 1\nlearning_rate: 0.5\naccelerator_count: 0\n")
    args = _parse(monkeypatch, ["--config", str(config), "--param", "epochs=2", "--learning-rate", "0.1"])
    assert collect_params(args) == {"data_uri": "gs://b/images", "epochs": "2", "learning_rate": "0.1", "accelerator_count": 0}
    assert params_from_args(args) == {"data_uri": "gs://b/images", "epochs": 2, "learning_rate": 0.1, "accelerator_count": 0}


def test_a_parameter_given_as_flag_and_param_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _parse(monkeypatch, ["--data-uri", "/d", "--epochs", "3", "--param", "epochs=4"])
    with pytest.raises(ValueError, match=r"pipeline parameter 'epochs' is given twice: as --epochs and as --param"):
        collect_params(args)


@pytest.mark.parametrize(
    ("argv", "config", "message"),
    [
        (["--data-uri", "/d", "--epochs", "three"], None,
         "parameter 'epochs' (NUMBER_INTEGER) must be an integer, got 'three'"),
        (["--data-uri", "/d", "--unfreeze", "maybe"], None, "parameter 'unfreeze' (BOOLEAN) must be true or false, got 'maybe'"),
        ([], "data_uri: /d\nepochz: 3\n", "unknown pipeline parameter 'epochz' (did you mean 'epochs'?); 'tiny-finetune' takes: accelerator_count, "),
        (["--epochs", "3"], "learning-rate: 0.1\n", "missing required pipeline parameter(s): data_uri"),
    ],
)
def test_bad_parameters_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], config: str | None,
                                  message: str) -> None:
    if config is not None:
        (tmp_path / "run.yaml").write_text(config)
        argv = ["--config", str(tmp_path / "run.yaml"), *argv]
    with pytest.raises(ValueError) as excinfo:
        params_from_args(_parse(monkeypatch, argv))
    assert message in str(excinfo.value)


def test_a_package_is_checked_against_its_own_parameters(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    # The installed pipeline here has image_size and no class_names; the package (another
    # version) the other way round: the package decides.
    installed = {"data_uri": (str, None, "images"), "image_size": (int, 224, "pixels")}
    args = _parse(monkeypatch, ["--package", package, "--data-uri", "/d", "--param", 'class_names=["a"]'], installed)
    assert params_from_args(args) == {"data_uri": "/d", "class_names": ["a"]}
    args = _parse(monkeypatch, ["--package", package, "--data-uri", "/d", "--image-size", "64"], installed)
    with pytest.raises(ValueError, match=r"unknown pipeline parameter 'image_size'; 'tiny-finetune' takes: "):
        params_from_args(args)
    args = _parse(monkeypatch, ["--data-uri", "/d", "--image-size", "64"], installed)
    assert params_from_args(args) == {"data_uri": "/d", "image_size": 64}
