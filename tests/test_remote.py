"""Tests of pipelines/remote.py and remote_cli.py against a loopback server that speaks KFP's v2beta1 REST API.

The real ``kfp.Client`` (kfp 2.17.3) is used throughout; only the server is a stand-in
(tests/kfp_stand_in.py). Pipeline versions themselves are tested in tests/test_versions.py.
"""

# No "from __future__ import annotations" here: kfp 2.17.3 reads component signatures from
# real annotation objects and rejects the strings that import would leave
# ("Artifacts must have both a schema_title and a schema_version").
import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import types
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl

from kfp_stand_in import kfp_server  # noqa: F401 - a pytest fixture
from pipelines import remote, remote_cli
from tiny_pipeline import TINY_NAME, TINY_PARAMETERS, compile_tiny, package  # noqa: F401 - package is a pytest fixture

REPO = Path(__file__).resolve().parents[1]
KIND_UP = REPO / "docker" / "kind-up.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# submit / schedule against the loopback server
# --------------------------------------------------------------------------------------------


def test_submit_sends_compiled_spec_and_typed_params(kfp_server, package: str) -> None:
    fake, host = kfp_server
    result = remote.submit(
        host,
        package,
        {"data-uri": "gs://bucket/digits", "epochs": "3", "learning_rate": 0.001},
        run_name="nightly",
    )

    assert fake.calls("GET", "/apis/v2beta1/healthz")
    [lookup] = fake.calls("GET", "/apis/v2beta1/experiments")
    assert json.loads(lookup["query"]["filter"][0])["predicates"][0]["stringValue"] == "kfp-finetune"
    [created] = fake.calls("POST", "/apis/v2beta1/experiments")
    assert created["body"]["display_name"] == "kfp-finetune"

    # The compiled spec goes to the server once, as a pipeline version; the run references it.
    [version] = fake.versions.values()
    with open(package, encoding="utf-8") as f:
        compiled = yaml.safe_load(f)
    assert version["pipeline_spec"]["pipelineInfo"]["name"] == "tiny-finetune"
    assert version["pipeline_spec"]["root"] == compiled["root"]
    assert version["pipeline_spec"]["deploymentSpec"] == compiled["deploymentSpec"]
    [run] = fake.calls("POST", "/apis/v2beta1/runs")
    body = run["body"]
    assert "pipeline_spec" not in body
    assert body["pipeline_version_reference"] == {
        "pipeline_id": version["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert body["runtime_config"]["parameters"] == {
        "data_uri": "gs://bucket/digits",
        "epochs": 3,
        "learning_rate": 0.001,
    }
    assert body["experiment_id"] == "exp-1"
    assert body["display_name"] == "nightly"
    assert "authorization" not in run["headers"]

    assert result["run_id"] == "run-1"
    assert result["experiment_id"] == "exp-1"
    assert result["url"] == f"{host}/#/runs/details/run-1"
    assert "state" not in result


def test_submit_reuses_existing_experiment(kfp_server, package: str) -> None:
    fake, host = kfp_server
    fake.experiments["exp-9"] = {"experiment_id": "exp-9", "display_name": "retrain"}
    result = remote.submit(host, package, {"data_uri": "/d"}, experiment="retrain")
    assert not fake.calls("POST", "/apis/v2beta1/experiments")
    assert fake.calls("POST", "/apis/v2beta1/runs")[0]["body"]["experiment_id"] == "exp-9"
    assert result["experiment_id"] == "exp-9"
    # The default run name comes from the pipeline, not from a temp file name.
    assert result["run_name"].startswith("tiny-finetune ")


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED", "CANCELED"])
def test_submit_wait_polls_until_final_state(kfp_server, package: str, final: str) -> None:
    fake, host = kfp_server
    fake.run_states = ["PENDING", "RUNNING", final]
    result = remote.submit(host, package, {"data_uri": "/d"}, wait=True, timeout_s=10, poll_s=0.01)
    assert result["state"] == final
    assert len(fake.calls("GET", "/apis/v2beta1/runs/run-1")) == 3


def test_submit_wait_times_out_with_run_id(kfp_server, package: str) -> None:
    fake, host = kfp_server
    fake.run_states = ["RUNNING"]
    with pytest.raises(TimeoutError, match="run-1 still RUNNING"):
        remote.submit(host, package, {"data_uri": "/d"}, wait=True, timeout_s=0.2, poll_s=0.05)


def test_token_from_env_at_call_time_and_argument_wins(kfp_server, package: str, monkeypatch) -> None:
    fake, host = kfp_server
    monkeypatch.setenv("KFP_TOKEN", "from-env")
    remote.submit(host, package, {"data_uri": "/d"})
    assert {r["headers"].get("authorization") for r in fake.requests} == {"Bearer from-env"}
    fake.requests.clear()
    remote.submit(host, package, {"data_uri": "/d"}, existing_token="explicit")
    assert {r["headers"].get("authorization") for r in fake.requests} == {"Bearer explicit"}


def test_namespace_goes_to_the_experiment(kfp_server, package: str) -> None:
    fake, host = kfp_server
    remote.submit(host, package, {"data_uri": "/d"}, namespace="team-a")
    # With a namespace kfp.Client skips its multi-user probe: the one health call is our own
    # check of --host (kfp_api.check_host), with the token.
    assert len(fake.calls("GET", "/apis/v2beta1/healthz")) == 1
    assert fake.calls("GET", "/apis/v2beta1/experiments")[0]["query"]["namespace"] == ["team-a"]
    assert fake.calls("POST", "/apis/v2beta1/experiments")[0]["body"]["namespace"] == "team-a"


def test_schedule_sends_six_field_cron_and_limits(kfp_server, package: str) -> None:
    fake, host = kfp_server
    result = remote.schedule(
        host, package, {"data_uri": "/d", "epochs": 4}, cron="30 2 * * *", max_concurrency=2, job_name="nightly"
    )
    [call] = fake.calls("POST", "/apis/v2beta1/recurringruns")
    body = call["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"
    assert int(body["max_concurrency"]) == 2
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == "nightly"
    assert body["experiment_id"] == "exp-1"
    [version] = fake.versions.values()
    assert version["pipeline_spec"]["pipelineInfo"]["name"] == "tiny-finetune"
    assert "pipeline_spec" not in body
    assert body["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    assert body["runtime_config"]["parameters"] == {"data_uri": "/d", "epochs": 4}
    assert result["recurring_run_id"] == "rr-1"
    assert result["cron"] == "0 30 2 * * *"
    assert "0 30 2 * * *" in result["cron_note"]
    assert result["url"] == f"{host}/#/recurringrun/details/rr-1"


def test_schedule_catchup_and_six_field_passthrough(kfp_server, package: str) -> None:
    fake, host = kfp_server
    result = remote.schedule(host, package, {"data_uri": "/d"}, cron="0 0 */6 * * *", no_catchup=False)
    body = fake.calls("POST", "/apis/v2beta1/recurringruns")[0]["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 */6 * * *"
    assert body["no_catchup"] is False
    assert result["cron_note"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 0 3 * * * *"}, "found 7"),
        ({"cron": "0 3 * * *", "max_concurrency": 0}, "max_concurrency"),
        ({"cron": "0 3 * * *", "max_concurrency": 11}, "max_concurrency"),
    ],
)
def test_schedule_refuses_before_any_request(kfp_server, package: str, kwargs: dict, message: str) -> None:
    fake, host = kfp_server
    with pytest.raises(ValueError, match=message):
        remote.schedule(host, package, {"data_uri": "/d"}, **kwargs)
    assert fake.requests == []


def test_submit_refuses_bad_params_before_any_request(kfp_server, package: str) -> None:
    fake, host = kfp_server
    with pytest.raises(ValueError, match="missing required pipeline parameter"):
        remote.submit(host, package, {"epochs": 1})
    assert fake.requests == []


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kfp-finetune")
    remote_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


def test_cli_submit_config_and_param_override(kfp_server, package: str, tmp_path: Path) -> None:
    fake, host = kfp_server
    config = tmp_path / "dev.yaml"
    config.write_text("data-uri: gs://bucket/digits\nepochs: 3\n")
    code, out, err = _cli(
        ["submit", "--host", host, "--package", package, "--config", str(config), "--param", "epochs=5",
         "--param", "learning-rate=0.02", "--run-name", "cli-run"]
    )
    assert code == 0, err
    assert json.loads(out)["run_id"] == "run-1"  # stdout is only the JSON result
    params = fake.calls("POST", "/apis/v2beta1/runs")[0]["body"]["runtime_config"]["parameters"]
    assert params == {"data_uri": "gs://bucket/digits", "epochs": 5, "learning_rate": 0.02}


def test_cli_submit_takes_parameter_flags(kfp_server, package: str) -> None:
    fake, host = kfp_server
    code, out, err = _cli(["submit", "--host", host, "--package", package, "--data-uri", "gs://bucket/digits",
                           "--epochs", "3", "--learning-rate", "0.02"])
    assert code == 0, err
    params = fake.calls("POST", "/apis/v2beta1/runs")[0]["body"]["runtime_config"]["parameters"]
    assert params == {"data_uri": "gs://bucket/digits", "epochs": 3, "learning_rate": 0.02}
    assert json.loads(out)["params"] == params


@pytest.mark.reliability("parameters")
@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_a_value_out_of_range_is_refused_before_any_request(kfp_server, tmp_path: Path, command: str) -> None:
    """Only types were checked before connecting: ``--dropout 1.5`` against a host that does not
    answer reported the connection, and against a server it started a run that failed in a step."""
    from pipelines.pipeline import compile_pipeline

    fake, host = kfp_server
    ours = compile_pipeline(str(tmp_path / "kfp-finetune.yaml"))
    extra = ["--cron", "0 0 3 * * *"] if command == "schedule" else []
    argv = [command, "--host", host, "--package", ours, "--data-uri", "gs://bucket/digits", "--registry-uri",
            "gs://bucket/registry", *extra]
    code, out, err = _cli([*argv, "--dropout", "1.5"])
    assert (code, out) == (2, "")
    assert err == "error: dropout must be in [0, 1), got 1.5\n"
    assert fake.requests == []
    # The same command with a valid value goes through.
    code, _, err = _cli([*argv, "--dropout", "0.5"])
    assert code == 0, err


def test_cli_schedule_takes_parameter_flags(kfp_server, package: str, tmp_path: Path) -> None:
    fake, host = kfp_server
    config = tmp_path / "nightly.yaml"
    config.write_text("data_uri: gs://bucket/digits\nepochs: 3\n")
    code, _, err = _cli(["schedule", "--host", host, "--package", package, "--config", str(config), "--epochs", "6",
                         "--cron", "0 0 3 * * *"])
    assert code == 0, err
    body = fake.calls("POST", "/apis/v2beta1/recurringruns")[0]["body"]
    assert body["runtime_config"]["parameters"] == {"data_uri": "gs://bucket/digits", "epochs": 6}


def test_cli_submit_wait_failed_run_exits_1(kfp_server, package: str) -> None:
    fake, host = kfp_server
    fake.run_states = ["FAILED"]
    code, out, _ = _cli(["submit", "--host", host, "--package", package, "--param", "data_uri=/d", "--wait"])
    assert code == 1
    assert json.loads(out)["state"] == "FAILED"


def test_cli_schedule_says_when_cron_was_rewritten(kfp_server, package: str) -> None:
    fake, host = kfp_server
    code, out, err = _cli(
        ["schedule", "--host", host, "--package", package, "--param", "data_uri=/d", "--cron", "0 3 * * 1",
         "--max-concurrency", "3", "--catchup"]
    )
    assert code == 0, err
    assert "note:" in err and "0 0 3 * * 1" in err
    body = fake.calls("POST", "/apis/v2beta1/recurringruns")[0]["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(body["max_concurrency"]) == 3
    assert body["no_catchup"] is False
    assert json.loads(out)["cron"] == "0 0 3 * * 1"


@pytest.mark.parametrize(
    ("argv_tail", "fragment"),
    [
        (["submit", "--param", "epochz=1", "--param", "data_uri=/d"], "unknown pipeline parameter 'epochz'"),
        (["schedule", "--param", "data_uri=/d", "--cron", "every day"], "invalid cron expression 'every day'"),
        (["submit", "--config", "/nonexistent/run.yaml"], "does not exist"),
        (["submit", "--data-uri", "/d", "--epochs", "3", "--param", "epochs=4"],
         "pipeline parameter 'epochs' is given twice: as --epochs and as --param"),
        (["schedule", "--data-uri", "/d", "--epochs", "three", "--cron", "0 3 * * *"],
         "parameter 'epochs' (NUMBER_INTEGER) must be an integer, got 'three'"),
    ],
)
def test_cli_errors_are_one_line_exit_2(kfp_server, package: str, argv_tail: list[str], fragment: str) -> None:
    fake, host = kfp_server
    code, out, err = _cli([argv_tail[0], "--host", host, "--package", package, *argv_tail[1:]])
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert fragment in err
    assert fake.calls("POST", "/apis/v2beta1/runs") == []


def test_cli_server_refusal_is_reported(kfp_server, package: str) -> None:
    fake, host = kfp_server
    fake.fail[("POST", "/apis/v2beta1/runs")] = (400, "Invalid input error: pipeline spec is bad")
    code, _, err = _cli(["submit", "--host", host, "--package", package, "--param", "data_uri=/d"])
    assert code == 2
    assert err.startswith("error: KFP API answered 400") and "pipeline spec is bad" in err
    assert err.count("\n") == 1


def test_cli_unreachable_host(package: str, monkeypatch) -> None:
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    host = f"http://127.0.0.1:{_free_port()}"
    code, _, err = _cli(["submit", "--host", host, "--package", package, "--param", "data_uri=/d"])
    assert code == 2
    assert err.startswith(f"error: cannot reach KFP at {host}")


def test_cli_without_package_compiles_lazily(kfp_server, monkeypatch) -> None:
    fake, host = kfp_server
    seen: dict[str, Any] = {}

    def compile_pipeline(package_path: str, image: str | None = None, profile: Any = None) -> str:
        seen.update(path=package_path, image=image, profile=profile)
        return compile_tiny(package_path)

    _install_tiny(monkeypatch, compile_pipeline)
    code, out, err = _cli(
        ["submit", "--host", host, "--image", "localhost/kfp-finetune:dev", "--param", "data_uri=/d", "--epochs", "4"]
    )
    assert code == 0, err
    assert (seen["image"], seen["profile"]) == ("localhost/kfp-finetune:dev", None)
    assert not os.path.exists(seen["path"])  # the temporary package is cleaned up
    [run] = fake.calls("POST", "/apis/v2beta1/runs")
    [version] = fake.versions.values()
    assert version["pipeline_spec"]["pipelineInfo"]["name"] == "tiny-finetune"
    assert version["filename"] == "pipeline.yaml"
    assert run["body"]["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    assert run["body"]["runtime_config"]["parameters"] == {"data_uri": "/d", "epochs": 4}


@pytest.mark.parametrize("command", [["submit"], ["schedule", "--cron", "0 3 * * *"]])
def test_cli_without_package_checks_parameters_before_compiling(kfp_server, monkeypatch, command: list[str]) -> None:
    fake, host = kfp_server

    def compile_pipeline(package_path: str, image: str | None = None) -> str:
        raise AssertionError("compiled although a required parameter is missing")

    _install_tiny(monkeypatch, compile_pipeline)
    code, out, err = _cli([*command, "--host", host, "--epochs", "4"])
    assert (code, out) == (2, "")
    assert err == "error: missing required pipeline parameter(s): data_uri\n"
    assert fake.requests == []


def _install_tiny(monkeypatch: pytest.MonkeyPatch, compile_pipeline: Any) -> None:
    # pipelines.pipeline is written by another engineer; remote.py must import it only when
    # building the parser (its PARAMETERS) or compiling, so a stand-in module is enough here.
    stand_in = types.SimpleNamespace(PARAMETERS=TINY_PARAMETERS, PIPELINE_NAME=TINY_NAME, compile_pipeline=compile_pipeline)
    monkeypatch.setitem(sys.modules, "pipelines.pipeline", stand_in)


def test_cli_image_with_package_is_refused(kfp_server, package: str) -> None:
    _, host = kfp_server
    code, _, err = _cli(["submit", "--host", host, "--package", package, "--image", "x:y", "--param", "data_uri=/d"])
    assert code == 2 and "--image" in err


def test_module_import_does_not_compile() -> None:
    # Importing the cluster commands must not import the pipeline (and with it every component module).
    code = "import sys, pipelines.remote, pipelines.remote_cli, pipelines.runs_cli; print('pipelines.pipeline' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# Real cluster / real kind
# --------------------------------------------------------------------------------------------


@dsl.component(base_image="python:3.11-slim")
def _echo(message: str) -> str:
    return message


@dsl.pipeline(name="kfp-finetune-smoke")
def _smoke_pipeline(message: str = "hello"):
    # No GPU request: a kind cluster has none and the run would stay Pending.
    _echo(message=message)


def _cluster_host() -> str:
    host = os.environ.get("KFP_HOST")
    if not host:
        pytest.skip("KFP_HOST is not set: no KFP API server to submit to (e.g. KFP_HOST=http://localhost:8080)")
    return host


@pytest.mark.cluster
def test_submit_to_real_cluster(tmp_path: Path) -> None:
    host = _cluster_host()
    package = str(tmp_path / "smoke.yaml")
    compiler.Compiler().compile(_smoke_pipeline, package)
    result = remote.submit(
        host,
        package,
        {"message": "from test_remote"},
        experiment="kfp-finetune-tests",
        wait=True,
        timeout_s=600,
        poll_s=5,
    )
    assert result["run_id"]
    assert result["state"] == "SUCCEEDED"


@pytest.mark.cluster
def test_versions_runs_and_schedules_on_real_cluster(tmp_path: Path) -> None:
    host = _cluster_host()
    from pipelines import runs
    from pipelines.kfp_api import make_client

    package = str(tmp_path / "smoke.yaml")
    compiler.Compiler().compile(_smoke_pipeline, package)
    common = {"experiment": "kfp-finetune-tests", "pipeline_name": "kfp-finetune-smoke-tests"}
    first = remote.submit(host, package, {"message": "one"}, **common)
    second = remote.submit(host, package, {"message": "two"}, **common)
    assert second["version_id"] == first["version_id"] and second["version_created"] is False
    client = make_client(host, None, None)
    assert runs.get_run(client, host, second["run_id"])["version_id"] == first["version_id"]
    assert runs.cancel_run(client, host, second["run_id"])["state"] in ("CANCELING", "CANCELED")
    created = remote.schedule(host, package, {"message": "cron"}, cron="0 0 3 * * *", **common)
    schedule_id = created["recurring_run_id"]
    try:
        assert runs.set_schedule_enabled(client, host, schedule_id, enabled=False)["status"] == "DISABLED"
        assert runs.set_schedule_enabled(client, host, schedule_id, enabled=True)["status"] == "ENABLED"
    finally:
        runs.delete_schedule(client, schedule_id)


def test_kind_up_script_parses() -> None:
    assert KIND_UP.is_file(), f"{KIND_UP} is missing"
    subprocess.run(["bash", "-n", str(KIND_UP)], check=True)


def test_kind_up_names_the_missing_tool(tmp_path: Path) -> None:
    # A PATH with only what the script needs before its checks: docker/kind/kubectl missing.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))
    result = subprocess.run(
        [shutil.which("bash"), str(KIND_UP)], capture_output=True, text=True, env={"PATH": str(bin_dir), "HOME": str(tmp_path)}
    )
    assert result.returncode != 0
    assert "'docker' is not on PATH" in result.stderr


def _docker_answers() -> bool:
    if not (shutil.which("docker") and shutil.which("kind") and shutil.which("kubectl")):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.mark.kind
def test_kind_up_end_to_end(tmp_path: Path) -> None:
    if not _docker_answers():
        pytest.skip("needs docker, kind and kubectl on PATH and a Docker daemon that answers `docker info`")
    env = {**os.environ, "KFP_FINETUNE_CLUSTER": "kfp-finetune-test", "KFP_FINETUNE_NO_PORT_FORWARD": "1"}
    try:
        subprocess.run(["bash", str(KIND_UP)], check=True, env=env, cwd=REPO, timeout=1800)
        nodes = subprocess.run(
            ["kubectl", "--context", "kind-kfp-finetune-test", "-n", "kubeflow", "get", "deploy", "ml-pipeline"],
            capture_output=True, text=True, check=True,
        )
        assert "ml-pipeline" in nodes.stdout
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", "kfp-finetune-test"], check=False)


# --------------------------------------------------------------------------------------------
# --profile: compiled into the uploaded version; its identity is the default of the flags
# --------------------------------------------------------------------------------------------


def test_cli_submit_with_profile_compiles_it_and_sends_its_identity(kfp_server) -> None:
    fake, host = kfp_server
    code, out, err = _cli(["submit", "--host", host, "--profile", "gke", "--data-uri", "gs://bucket/digits",
                           "--registry-uri", "gs://bucket/registry"])
    assert code == 0, err
    body = fake.calls("POST", "/apis/v2beta1/runs")[0]["body"]
    assert body["service_account"] == "kfp-finetune-runner"
    assert body["runtime_config"]["pipeline_root"] == "gs://kfp-finetune-artifacts/pipeline-root"
    [version] = fake.versions.values()
    finetune = version["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-finetune"]
    assert finetune["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert finetune["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert version["pipeline_spec"]["deploymentSpec"]["executors"]["exec-finetune"]["container"]["image"] == (
        "ghcr.io/kfp-finetune/kfp-finetune:0.1.0-gpu")


def test_cli_schedule_flags_win_over_the_profile(kfp_server) -> None:
    fake, host = kfp_server
    code, _, err = _cli(["schedule", "--host", host, "--profile", "gke", "--cron", "0 0 3 * * *",
                         "--service-account", "trainer", "--pipeline-root", "gs://other/root",
                         "--data-uri", "gs://bucket/digits", "--registry-uri", "gs://bucket/registry"])
    assert code == 0, err
    body = fake.calls("POST", "/apis/v2beta1/recurringruns")[0]["body"]
    assert (body["service_account"], body["runtime_config"]["pipeline_root"]) == ("trainer", "gs://other/root")


@pytest.mark.parametrize("argv, message", [
    (["--profile", "kind", "--package", "PACKAGE", "--data-uri", "gs://b/d"], "--profile applies only when compiling"),
    (["--profile", "kind", "--data-uri", "/home/me/digits", "--registry-uri", "/mnt/kfp-finetune/registry"],
     "data_uri '/home/me/digits' is on no volume of profile kind in step preprocess"),
])
def test_cli_submit_profile_refusals_send_nothing(kfp_server, package: str, argv: list[str], message: str) -> None:
    fake, host = kfp_server
    code, _, err = _cli(["submit", "--host", host, *[package if a == "PACKAGE" else a for a in argv]])
    assert code == 2
    assert message in err
    assert fake.calls("POST", "/apis/v2beta1/runs") == [] and fake.versions == {}
