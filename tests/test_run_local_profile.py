"""``run-local --profile``: the profile's package runs locally; what no local runner can stand in
for (a volume claim, a Secret-mounted key) is refused before anything runs, naming the key and
the flag that fixes it."""

import pytest
from reliability import snapshot, world  # noqa: F401 - world is a fixture
from test_cli import _fake_run_local

from pipelines.cli import main
from pipelines.docker_runner import DockerOptions
from pipelines.local import check_profile_locally, run_local
from pipelines.profiles import load_profile


def test_the_subprocess_runner_refuses_a_volume_and_a_mounted_key():
    with pytest.raises(ValueError) as caught:
        check_profile_locally(load_profile("kind"), None)
    assert str(caught.value) == ("profile kind: volumes (claim 'kfp-finetune-registry' at /mnt/kfp-finetune) cannot apply to "
                                 "the subprocess runner: use --runner docker with --docker-mount HOST_DIR:/mnt/kfp-finetune "
                                 "standing in for the claim")
    with pytest.raises(ValueError, match=r"^profile eks: gcs_credentials mode secret \(key /var/secrets/google/key.json\) "
                                         r"cannot apply to the subprocess runner"):
        check_profile_locally(load_profile("eks"), None)
    # Nothing to stand in for: accepted (its environment, retries and images still apply).
    check_profile_locally(load_profile("gke"), None)


def test_the_docker_runner_needs_a_mount_where_the_profile_mounts_the_claim(tmp_path):
    kind = load_profile("kind")
    with pytest.raises(ValueError) as caught:
        check_profile_locally(kind, DockerOptions(image="i", mounts=(f"{tmp_path}:/mnt/other",)))
    assert str(caught.value) == ("profile kind: volumes[0] (claim 'kfp-finetune-registry') is mounted at /mnt/kfp-finetune "
                                 "on a cluster; stand in for it with --docker-mount HOST_DIR:/mnt/kfp-finetune")
    check_profile_locally(kind, DockerOptions(image="i", mounts=(f"{tmp_path}:/mnt/kfp-finetune",)))


def test_the_docker_runner_needs_the_key_file_where_the_secret_is_mounted(tmp_path):
    eks = load_profile("eks")
    with pytest.raises(ValueError, match=r"^profile eks: gcs_credentials mounts Secret 'gcs-key' at /var/secrets/google on a "
                                         r"cluster; mount the folder holding key.json with --docker-mount KEY_DIR:/var/secrets/google:ro$"):
        check_profile_locally(eks, DockerOptions(image="i"))
    mounted = DockerOptions(image="i", mounts=(f"{tmp_path}:/var/secrets/google:ro",))
    with pytest.raises(FileNotFoundError, match=f"^profile eks: the GCS key /var/secrets/google/key.json is not on the host at "
                                                f"'{tmp_path}/key.json'$"):
        check_profile_locally(eks, mounted)
    (tmp_path / "key.json").write_text("{}")
    check_profile_locally(eks, mounted)


def test_a_profile_cannot_change_a_compiled_package(tmp_path):
    with pytest.raises(ValueError, match="^a profile applies when compiling; it cannot change a compiled --package$"):
        run_local({}, str(tmp_path / "root"), package_path=str(tmp_path / "p.yaml"), profile=load_profile("gke"))


def test_run_local_refuses_before_anything_runs(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    code = main(["run-local", "--profile", "kind", "--data-uri", str(tmp_path / "data"), "--registry-uri", str(tmp_path / "reg"),
                 "--pipeline-root", str(tmp_path / "root")])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: profile kind: volumes (claim 'kfp-finetune-registry' at /mnt/kfp-finetune) "
                                              "cannot apply to the subprocess runner")
    assert not (tmp_path / "root").exists()


def test_run_local_takes_the_profiles_image_for_the_docker_runner_unless_given(tmp_path, monkeypatch, capsys):
    from pipelines import preflight

    _fake_run_local(monkeypatch, calls := [])
    # What is checked here is the image; the up-front check would ask gs://b for credentials.
    monkeypatch.setattr(preflight, "check_run", lambda *args, **kwargs: None)
    profile = tmp_path / "mine.yaml"
    profile.write_text("image: mirror.example/kfp-finetune:3\n")
    argv = ["run-local", "--runner", "docker", "--profile", str(profile), "--data-uri", "gs://b/d", "--registry-uri", "gs://b/r"]
    assert main(argv) == 0, capsys.readouterr().err
    assert main([*argv, "--image", "other.example/kfp-finetune:4"]) == 0, capsys.readouterr().err
    assert [c["docker"].image for c in calls] == ["mirror.example/kfp-finetune:3", "other.example/kfp-finetune:4"]
    assert calls[0]["profile"] == load_profile(str(profile))


def _gpus_here() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def test_a_gpu_profile_on_a_machine_without_one_is_refused_up_front(world, capsys):
    """Regression (new-user review, 2026-12-05): ``run-local --profile gke`` here ran preprocess,
    then failed the finetune step four times over the profile's 60/120/240 s backoff (485 s)
    before saying no GPU is visible. The profile's GPU makes accelerator_count 1 the default;
    the up-front check refuses it in seconds, and ``--accelerator-count 0`` still runs."""
    if _gpus_here():
        pytest.skip("this machine has a GPU: the gke profile's request would be met")
    before = snapshot(world.root)
    code = main(world.run_local("--profile", "gke"))
    assert code == 2
    assert capsys.readouterr().err == (
        "error: accelerator_count 1: the steps run on this machine, where TensorFlow sees 0 GPU(s); pass "
        "--accelerator-count 0 to train on the CPU (a cluster profile with a GPU makes 1 the default), or run where "
        "the GPUs are\n")
    assert snapshot(world.root) == before


def test_the_docker_runner_needs_gpus_for_the_accelerator_count():
    from pipelines.preflight import check_gpus

    with pytest.raises(ValueError, match=r"^accelerator_count 2: the step containers get 1 GPU\(s\) \(--gpus\); pass --gpus 2, "
                                         r"or --accelerator-count 0 to train on the CPU$"):
        check_gpus(2, 1)
    assert check_gpus(2, 2) is None and check_gpus(2, -1) is None and check_gpus(0, 0) is None
