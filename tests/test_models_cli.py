"""Tests of ``kfp-finetune models`` (pipelines.models_cli) through a parser built with add_parser."""

from __future__ import annotations

import argparse
import json

import pytest

from components.registry import open_registry
from gcs_emulator import gcs_emulator, gcs_registry_uri  # noqa: F401 - pytest fixtures
from pipelines.models_cli import add_parser

METADATA = {
    "metrics": {"accuracy": 0.9625, "macro_f1": 0.9581},
    "base_model": "MobileNetV2",
    "blessing": {"blessed": True, "reason": "accuracy 0.9625 >= floor 0.5"},
}
# The manifest the registry records for the `populated` versions: path -> size in bytes.
MANIFEST = {"saved_model.pb": 5, "variables/variables.index": 5}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kfp-finetune")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


@pytest.fixture(params=["local", "gcs"])
def registry_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue("gcs_registry_uri")


@pytest.fixture()
def populated(registry_uri, tmp_path):
    """digits versions 1-3 (dev -> 3, prod -> 1) and flowers version 1; returns the registry."""
    source = tmp_path / "export"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"graph")
    (source / "variables" / "variables.index").write_bytes(b"index")
    registry = open_registry(registry_uri)
    registry.push("digits", str(source), {**METADATA, "pipeline_run_id": "run-1"}, alias="prod", actor="ci")
    registry.push("digits", str(source), {**METADATA, "pipeline_run_id": "run-2"})
    registry.push("digits", str(source), {**METADATA, "pipeline_run_id": "run-3"}, alias="dev", actor="ci")
    registry.push("flowers", str(source), METADATA)
    return registry


def test_list_json(populated, capsys):
    assert run(["models", "list", "--registry-uri", populated.uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "registry_uri": populated.uri,
        "models": [
            {"model": "digits", "versions": [1, 2, 3], "aliases": {"dev": 3, "prod": 1}, "damaged": []},
            {"model": "flowers", "versions": [1], "aliases": {}, "damaged": []},
        ],
    }


def test_list_text(populated, capsys):
    assert run(["models", "list", "--registry-uri", populated.uri]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "digits",
        "  versions: 1, 2, 3",
        "  aliases:  dev -> 3, prod -> 1",
        "flowers",
        "  versions: 1",
        "  aliases:  -",
    ]


def test_list_empty_registry(tmp_path, capsys):
    assert run(["models", "list", "--registry-uri", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no models in {tmp_path}\n"


def test_list_missing_registry_folder_is_an_error(tmp_path, capsys):
    # Regression: a mistyped path used to print "no models" and exit 0.
    assert run(["models", "list", "--registry-uri", str(tmp_path / "regsitry")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: no registry at {tmp_path / 'regsitry'}: the folder does not exist (the first push creates it)\n"
    for command in (["describe", "--model", "digits", "--alias", "dev"], ["promote", "--model", "digits", "--version", "1", "--to", "dev"]):
        assert run(["models", *command[:1], "--registry-uri", str(tmp_path / "regsitry"), *command[1:]]) == 2
        assert capsys.readouterr().err.startswith(f"error: no registry at {tmp_path / 'regsitry'}")


def test_describe_alias_json(populated, capsys):
    assert run(["models", "describe", "--registry-uri", populated.uri, "--model", "digits",
                "--alias", "dev", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    created_at = populated.get_metadata("digits", 3)["created_at"]
    assert out == {
        "model": "digits",
        "version": 3,
        "uri": f"{populated.uri}/digits/3",
        "aliases": ["dev"],
        "metadata": {**METADATA, "pipeline_run_id": "run-3", "model": "digits", "version": 3,
                     "created_at": created_at, "files": MANIFEST},
    }


def test_describe_version_text(populated, capsys):
    assert run(["models", "describe", "--registry-uri", populated.uri, "--model", "digits", "--version", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        "model:    digits",
        "version:  1",
        f"uri:      {populated.uri}/digits/1",
        "aliases:  prod",
        "metadata:",
    ]
    assert '    "pipeline_run_id": "run-1",' in lines


def test_describe_model_json_and_text(populated, capsys, monkeypatch):
    monkeypatch.setenv("USER", "ana")
    # Version 2 was never in staging: only a forced promotion may skip it.
    assert run(["models", "promote", "--registry-uri", populated.uri, "--model", "digits",
                "--version", "2", "--to", "prod", "--force", "--reason", "better f1"]) == 0
    out, err = capsys.readouterr()
    assert out == (
        "promoted prod of digits to version 2 (was version 1)\n"
        "forced (better f1); overrode: version 2 was never in 'staging' (environment order: "
        "dev -> staging -> prod); promote it there first\n"
    )
    assert err == ""

    assert run(["models", "describe", "--registry-uri", populated.uri, "--model", "digits", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "digits" and out["versions"] == [1, 2, 3]
    assert sorted(out["aliases"]) == ["dev", "prod"]
    assert out["aliases"]["prod"]["version"] == 2
    assert [(e["version"], e["previous_version"], e["action"], e["actor"], e["reason"])
            for e in out["aliases"]["prod"]["history"]] == [
        (1, None, "push", "ci", None),
        (2, 1, "promote", "ana", "better f1"),
    ]

    assert run(["models", "describe", "--registry-uri", populated.uri, "--model", "digits"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["model:    digits", "versions: 1, 2, 3", "aliases:  dev -> 3, prod -> 2", "history of dev:"]
    assert lines[-1].endswith("promote   1 -> 2  by ana  (better f1)")


def test_promote_and_rollback(populated, capsys, monkeypatch):
    monkeypatch.setenv("USER", "bo")
    uri = populated.uri
    assert run(["models", "promote", "--registry-uri", uri, "--model", "digits", "--version", "3",
                "--to", "staging"]) == 0
    assert capsys.readouterr().out == "promoted staging of digits to version 3 (was unset)\n"
    assert run(["models", "promote", "--registry-uri", uri, "--model", "digits", "--version", "3",
                "--to", "prod", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "model": "digits", "alias": "prod", "version": 3, "previous_version": 1, "forced": False, "overridden": []
    }

    assert run(["models", "rollback", "--registry-uri", uri, "--model", "digits", "--alias", "prod",
                "--reason", "latency regression"]) == 0
    assert capsys.readouterr().out == "rolled back prod of digits to version 1 (was version 3)\n"
    assert populated.get_alias("digits", "prod") == 1
    last = populated.alias_history("digits", "prod")[-1]
    assert (last["action"], last["actor"], last["reason"], last["previous_version"]) == (
        "rollback", "bo", "latency regression", 3
    )


def test_actor_defaults(populated, capsys, monkeypatch):
    uri = populated.uri
    monkeypatch.delenv("USER", raising=False)
    populated.set_env_order(["qa", "dev", "staging", "prod"])
    run(["models", "promote", "--registry-uri", uri, "--model", "digits", "--version", "2", "--to", "qa"])
    run(["models", "promote", "--registry-uri", uri, "--model", "digits", "--version", "3", "--to", "qa",
         "--actor", "release-bot"])
    assert [e["actor"] for e in populated.alias_history("digits", "qa")] == ["unknown", "release-bot"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["promote", "--model", "digits", "--version", "9", "--to", "prod"],
         "model 'digits' has no complete version 9"),
        (["promote", "--model", "digits", "--version", "0", "--to", "prod"], "invalid version 0"),
        (["promote", "--model", "digits", "--version", "1", "--to", ".prod"], "invalid alias '.prod'"),
        (["rollback", "--model", "flowers", "--alias", "prod"], "alias 'prod' of model 'flowers' is not set"),
        (["rollback", "--model", "digits", "--alias", "dev"], "alias 'dev' of model 'digits' has no previous version"),
        # Regression (new-user review): a mistyped model name read as a missing alias or version.
        (["describe", "--model", "roses"], "no model 'roses' in"),
        (["describe", "--model", "digit", "--alias", "dev"], "(models: digits, flowers)"),
        (["audit", "--model", "nosuch"], "no model 'nosuch' in"),
        (["describe", "--model", "digits", "--alias", "qa"], "alias 'qa' of model 'digits' is not set"),
        (["describe", "--model", "../etc", "--version", "1"], "invalid model name '../etc'"),
    ],
)
def test_errors_print_one_line_and_exit_2(populated, capsys, argv, message):
    command, rest = argv[0], argv[1:]
    assert run(["models", command, "--registry-uri", populated.uri, *rest]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n")


def test_corrupt_metadata_is_an_error(tmp_path, capsys):
    source = tmp_path / "export"
    source.mkdir()
    (source / "saved_model.pb").write_bytes(b"graph")
    registry = open_registry(str(tmp_path / "registry"))
    registry.push("digits", str(source), METADATA)
    (tmp_path / "registry" / "digits" / "1" / "metadata.json").write_text("{broken")
    assert run(["models", "describe", "--registry-uri", registry.uri, "--model", "digits", "--version", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: metadata of model 'digits' version 1 is not valid JSON: ")
    assert str(tmp_path / "registry" / "digits" / "1" / "metadata.json") in err


def test_bad_registry_uri_is_an_error(capsys):
    assert run(["models", "list", "--registry-uri", "s3://bucket/x"]) == 2
    assert "scheme 's3' is not supported" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    parser = build_parser()
    for argv in (["models"], ["models", "describe", "--registry-uri", "r", "--model", "m", "--version", "1",
                              "--alias", "prod"], ["models", "promote", "--registry-uri", "r", "--model", "m",
                                                   "--version", "one", "--to", "prod"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2


def test_a_forced_promotion_is_reported_once(populated):
    """In a real process (pytest's log capture hides logging's last-resort handler) the override
    came a second time on stderr, as a logged warning."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "models", "promote", "--registry-uri", populated.uri,
                           "--model", "digits", "--version", "2", "--to", "prod", "--force", "--reason", "better f1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("overrode:") == 1 and done.stderr == ""
