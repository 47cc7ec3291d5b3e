"""Tests of pipelines/errors.py: the one mapping from exceptions to exit codes and error lines."""

import argparse
import json

import kfp_server_api
import pytest
import urllib3

from components.registry import ModelNotFoundError
from pipelines import errors
from pipelines.cli import build_parser
from pipelines.local import PipelineRunError

ARGS = argparse.Namespace(host="http://127.0.0.1:8080")


def _api_error(status: int, reason: str, body: object) -> kfp_server_api.ApiException:
    error = kfp_server_api.ApiException(status=status, reason=reason)
    error.body = body
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PipelineRunError("step finetune failed: ValueError: bad"), (1, "step finetune failed: ValueError: bad")),
        (ValueError("dropout must be in [0, 1), got 1.5"), (2, "dropout must be in [0, 1), got 1.5")),
        (FileNotFoundError("config file 'x.yaml' does not exist"), (2, "config file 'x.yaml' does not exist")),
        (TimeoutError("run run-1 still RUNNING after 10 s"), (2, "run run-1 still RUNNING after 10 s")),
        (ModelNotFoundError("no model 'roses' in /r"), (2, "no model 'roses' in /r")),
        (urllib3.exceptions.ProtocolError("Connection aborted."),
         (2, "cannot reach KFP at http://127.0.0.1:8080: Connection aborted.")),
        (_api_error(400, "Bad Request", json.dumps({"error": "e", "message": "pipeline  spec\nis bad"})),
         (2, "KFP API answered 400 Bad Request: pipeline spec is bad")),
    ],
)
def test_exit_code_for(error: BaseException, expected: tuple[int, str]) -> None:
    assert errors.exit_code_for(error, ARGS) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": "only error"}', "KFP API answered 403 Forbidden: only error"),
        ("not json " + "x" * 400, "KFP API answered 403 Forbidden: not json " + "x" * 291),
        (b"\xff\xfe", "KFP API answered 403 Forbidden: \ufffd\ufffd"),
        ("", "KFP API answered 403 Forbidden"),
        (None, "KFP API answered 403 Forbidden"),
    ],
)
def test_api_error_message(body: object, expected: str) -> None:
    assert errors.api_error_message(_api_error(403, "Forbidden", body)) == expected


def test_other_exceptions_are_not_mapped() -> None:
    assert errors.exit_code_for(KeyError("bug"), ARGS) is None
    assert errors.exit_code_for(RuntimeError("bug"), ARGS) is None


def test_command_prints_one_line_and_returns_the_code(capsys: pytest.CaptureFixture) -> None:
    def fails(args: argparse.Namespace) -> int:
        raise ValueError("epochs must be >= 0, got -1")

    assert errors.command(fails)(ARGS) == 2
    assert capsys.readouterr() == ("", "error: epochs must be >= 0, got -1\n")
    assert errors.command(lambda args: 0)(ARGS) == 0


def test_command_lets_a_bug_propagate() -> None:
    def buggy(args: argparse.Namespace) -> int:
        return {}["missing"]

    with pytest.raises(KeyError, match="missing"):
        errors.command(buggy)(ARGS)


def _leaf_functions(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_leaf_functions(sub, (*path, name)))
    if not found and "func" in parser._defaults:
        found[path] = parser._defaults["func"]
    return found


def test_every_command_maps_errors_here() -> None:
    leaves = _leaf_functions(build_parser())
    assert {("run-local",), ("submit",), ("schedule",), ("compile",), ("demo",), ("predict",), ("models", "promote"),
            ("runs", "list"), ("runs", "get"), ("runs", "cancel"), ("schedules", "list"), ("schedules", "pause"),
            ("schedules", "resume"), ("schedules", "delete")} <= set(leaves)
    assert [path for path, func in leaves.items() if not getattr(func, "maps_errors", False)] == []
