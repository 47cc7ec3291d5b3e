"""Command-line checks that need no training: parameter validation before a run starts."""

import pytest

from gcs_emulator import gcs_emulator, new_bucket  # noqa: F401 - pytest fixture
from pipelines.cli import main
from tiny_pipeline import package  # noqa: F401 - pytest fixture


@pytest.fixture()
def bucket(gcs_emulator):
    """A bucket on the GCS emulator holding one image under ``data/`` (run-local's up-front
    check reads the data URI and the registry's bucket)."""
    from components import storage

    name = new_bucket(gcs_emulator)
    storage.gcs_client().bucket(name).blob("data/cat/a.png").upload_from_string(b"png")
    return name


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
        (["--optimizer", "adamx"], "optimizer 'adamx' is not one of adam, adamw, sgd, rmsprop"),
        (["--unfreeze", "top:x"], "unfreeze 'top:x' must be 'all', 'top:N'"),
        (["--image-size", "16"], "image_size 16 is below the minimum input size 32 px"),
        (["--base-weights", "/nonexistent/w.weights.h5"], "base_weights file '/nonexistent/w.weights.h5' does not exist"),
        (["--eval-fraction", "0.6", "--test-fraction", "0.5"], "eval_fraction + test_fraction must be below 1"),
        # Regression (new-user review): these failed only in evaluate or push, after training.
        (["--min-accuracy", "1.5"], "min_accuracy must be in [0, 1], got 1.5"),
        (["--champion-tolerance", "-0.5"], "champion_tolerance must be in [0, 1], got -0.5"),
        (["--model-name", "bad/name"], "invalid model_name 'bad/name'"),
        (["--target-env", "pr od"], "invalid target_env 'pr od'"),
        (["--accelerator-count", "-1"], "accelerator_count must be >= 0 (0: CPU), got -1"),
        (["--base-model", "resnet50", "--width-multiplier", "0.35"],
         "width_multiplier 0.35 is only supported by MobileNet base models, not 'resnet50'"),
        (["--beam-pipeline-args=--direct_num_workers=abc"],
         "beam_pipeline_args '--direct_num_workers=abc': argument --direct_num_workers: invalid int value: 'abc'"),
        (["--registry-uri", "REPLACED"], "is a file; use a folder (created by the first push) or gs://bucket/prefix"),
        (["--beam-pipeline-args=direct_num_workers=2"], "beam_pipeline_args: 'direct_num_workers=2' is not an option; write --direct_num_workers=2"),
    ],
)
def test_run_local_refuses_bad_settings_before_running(flags, message, tmp_path, capsys):
    """Regression: these were only caught inside the finetune step, after preprocessing ran."""
    (tmp_path / "a-file").write_text("")
    code = main(["run-local", "--data-uri", str(tmp_path), "--registry-uri", str(tmp_path / "reg"),
                 "--pipeline-root", str(tmp_path / "root"), *[str(tmp_path / "a-file") if f == "REPLACED" else f for f in flags]])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").iterdir())


def test_a_plain_file_as_data_uri_is_named(tmp_path):
    from components import sources

    (tmp_path / "make.py").write_text("print(1)")
    with pytest.raises(ValueError, match=r"data_uri '.*make.py' is a file, but not a .csv manifest or a .tfrecord"):
        sources.discover(str(tmp_path / "make.py"))


def test_predict_takes_a_finetune_model_output_or_its_serving_folder(tmp_path):
    # Regression (new-user review): --model-dir <run>/finetune/model failed with "holds no
    # saved_model.pb"; the serving SavedModel is its serving/ folder.
    from pipelines.predict import resolve_model_dir

    serving = tmp_path / "model" / "serving"
    serving.mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(b"")
    assert resolve_model_dir(str(tmp_path / "model"), None, None, None, None, str(tmp_path))[0] == str(serving)
    assert resolve_model_dir(str(serving), None, None, None, None, str(tmp_path))[0] == str(serving)
    with pytest.raises(FileNotFoundError, match=r"holds no saved_model.pb, nor serving/saved_model.pb"):
        resolve_model_dir(str(tmp_path), None, None, None, None, str(tmp_path))


def _fake_run_local(monkeypatch, calls: list):
    """Replaces the kfp.local run (minutes) by one that records what run-local passed it."""
    from pipelines import local

    def run_local(params, pipeline_root, package_path=None, docker=None, profile=None):
        calls.append({"params": params, "pipeline_root": pipeline_root, "package_path": package_path, "docker": docker,
                      "profile": profile})
        return local.LocalRunResult(status="succeeded", blessed=True, reason="accuracy 0.9 >= floor 0.5", accuracy=0.9,
                                    macro_f1=0.88, pushed=None, pipeline_root=pipeline_root, run_dir=None, seconds=0.0)

    monkeypatch.setattr(local, "run_local", run_local)


def test_run_local_takes_param_like_submit(tmp_path, monkeypatch, capsys):
    calls: list = []
    _fake_run_local(monkeypatch, calls)
    # The data folder beside the pipeline root: a root inside the input data is refused.
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "a.png").write_bytes(b"png")
    code = main(["run-local", "--param", f"data_uri={tmp_path / 'data'}", "--registry-uri", str(tmp_path / "reg"),
                 "--param", "epochs=3", "--nesterov", "true", "--pipeline-root", str(tmp_path / "root")])
    assert code == 0, capsys.readouterr().err
    [call] = calls
    assert call["params"] == {"data_uri": str(tmp_path / "data"), "epochs": 3, "registry_uri": str(tmp_path / "reg"), "nesterov": True}
    assert type(call["params"]["epochs"]) is int
    # The installed pipeline is checked against PARAMETERS; run_local compiles it itself.
    assert call["package_path"] is None
    assert "test accuracy 0.9000, macro F1 0.8800" in capsys.readouterr().out


def test_run_local_checks_settings_given_by_param(tmp_path, monkeypatch, capsys):
    _fake_run_local(monkeypatch, calls := [])
    code = main(["run-local", "--data-uri", str(tmp_path), "--registry-uri", str(tmp_path / "reg"),
                 "--param", "dropout=1.5"])
    assert code == 2 and calls == []
    assert capsys.readouterr().err == "error: dropout must be in [0, 1), got 1.5\n"


def test_run_local_checks_a_package_against_its_own_parameters(tmp_path, monkeypatch, capsys, package):
    _fake_run_local(monkeypatch, calls := [])
    code = main(["run-local", "--package", package, "--data-uri", str(tmp_path), "--registry-uri", str(tmp_path / "reg")])
    assert code == 2 and calls == []
    assert capsys.readouterr().err.startswith("error: unknown pipeline parameter 'registry_uri'; 'tiny-finetune' takes: ")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("data-uri: /d\nregistry_uri: /r\nepochz: 3\n",
         "error: unknown pipeline parameter 'epochz' (did you mean 'epochs'?); 'kfp-finetune' takes: "),
        ("data-uri: /d\nepochs: 3\n", "error: missing required pipeline parameter(s): registry_uri\n"),
    ],
)
def test_run_local_submit_and_schedule_refuse_a_bad_config_alike(tmp_path, monkeypatch, capsys, config, message):
    _fake_run_local(monkeypatch, calls := [])
    (tmp_path / "run.yaml").write_text(config)
    # Nothing answers on this host: the parameters are refused before any request is sent.
    host = "http://127.0.0.1:9"
    errors = []
    for argv in (["run-local"], ["submit", "--host", host], ["schedule", "--host", host, "--cron", "0 3 * * *"]):
        assert main([*argv, "--config", str(tmp_path / "run.yaml")]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        errors.append(captured.err)
    assert errors[0] == errors[1] == errors[2]
    assert errors[0].startswith(message) and errors[0].count("\n") == 1
    assert calls == []


def test_run_local_docker_flags_become_the_runners_options(tmp_path, monkeypatch, capsys, bucket):
    from pipelines.docker_runner import DockerOptions

    _fake_run_local(monkeypatch, calls := [])
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "a.png").write_bytes(b"png")
    code = main(["run-local", "--runner", "docker", "--image", "example/kfp-finetune:1", "--data-uri", "/data",
                 "--registry-uri", f"gs://{bucket}/reg", "--docker-mount", f"{data}:/data:ro", "--docker-env", "A=1=2",
                 "--docker-user", "23456:0", "--gpus", "1"])
    assert code == 0, capsys.readouterr().err
    assert calls[0]["docker"] == DockerOptions(image="example/kfp-finetune:1", mounts=(f"{data}:/data:ro",),
                                               environment=(("A", "1=2"),), user="23456:0", gpus=1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--docker-user", "1000"], "error: --docker-user applies only with --runner docker\n"),
        (["--runner", "docker", "--docker-env", "NOEQUALS"], "error: --docker-env 'NOEQUALS' must be NAME=VALUE\n"),
        (["--runner", "docker", "--docker-mount", "/nowhere-xyz:/data"], "error: mount '/nowhere-xyz:/data': the host path '/nowhere-xyz' does not exist\n"),
        (["--runner", "docker", "--docker-mount", "/tmp:data"], "error: mount '/tmp:data': the container path 'data' must be absolute\n"),
        (["--runner", "docker", "--docker-user", "kfp"], "error: user 'kfp' must be UID or UID:GID (numbers)\n"),
    ],
)
def test_bad_runner_flags_are_refused_before_anything_runs(args, message, tmp_path, monkeypatch, capsys):
    _fake_run_local(monkeypatch, calls := [])
    code = main(["run-local", "--data-uri", str(tmp_path), "--registry-uri", "gs://b/reg", *args])
    assert (code, calls, capsys.readouterr().err) == (2, [], message)


def test_docker_runner_checks_base_weights_through_the_mounts(tmp_path, monkeypatch, capsys, bucket):
    """Regression (new-user review): the README's example failed because a container path was
    looked up on the host."""
    from components.base_models import build_base_model

    _fake_run_local(monkeypatch, calls := [])
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    build_base_model("mobilenet_v2", 32, None, 0.35).save_weights(str(backbone / "b.weights.h5"))
    base = ["run-local", "--runner", "docker", "--data-uri", f"gs://{bucket}/data", "--registry-uri", f"gs://{bucket}/reg",
            "--docker-mount", f"{backbone}:/backbone:ro", "--image-size", "32", "--width-multiplier", "0.35"]
    assert main([*base, "--base-weights", "/backbone/b.weights.h5"]) == 0, capsys.readouterr().err
    assert calls[0]["params"]["base_weights"] == "/backbone/b.weights.h5"
    assert main([*base, "--base-weights", "/backbone/missing.weights.h5"]) == 2
    assert capsys.readouterr().err == (f"error: base_weights file '/backbone/missing.weights.h5' does not exist "
                                       f"(on the host: '{backbone}/missing.weights.h5')\n")


def test_no_parser_takes_an_abbreviated_option():
    """Regression (new-user review): --data was taken for --data-uri; a later option sharing
    the prefix would silently change its meaning."""
    from pipelines.cli import Parser, build_parser, parsers

    every = parsers(build_parser())
    assert len(every) > 10 and all(p.allow_abbrev is False and isinstance(p, Parser) for p in every)


def test_version_is_the_installed_distribution(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"kfp-finetune {version('kfp-finetune')}\n"


@pytest.mark.parametrize("ref", [
    "ghcr.io/kfp-finetune/kfp-finetune:0.1.0", "python:3.11-slim", "ubuntu", "localhost:5000/team/img",
    "registry.example.com:443/a/b/c:v1.2_3", "[::1]:5000/img:tag", "img@sha256:" + "a" * 64, "a.b-c__d/e:latest@sha512:" + "F" * 128,
])
def test_valid_image_references_are_taken(ref):
    from components.image import check_reference

    assert check_reference(ref) == ref


@pytest.mark.parametrize("ref", ["", "img:", ":tag", "img:-tag", "ghcr.io/Team/img", "img//x", "img@md5:abc", "img:" + "t" * 129, "a" * 256])
def test_invalid_image_references_are_refused(ref):
    from components.image import check_reference

    with pytest.raises(ValueError, match=r"is not a valid image reference|has a name longer than 255 characters"):
        check_reference(ref)
