"""The Docker runner's checks that run before any container starts (the containers themselves
run in tests/test_container_e2e.py)."""

import os

import pytest

from pipelines import docker_runner
from pipelines.docker_runner import DockerOptions


@pytest.mark.parametrize(
    "mode, user, writable",
    [
        (0o755, None, False),      # root-owned, the image's uid 10001 cannot write
        (0o777, None, True),
        (0o755, "0", True),        # root can
        (0o770, "23456:0", True),  # OpenShift: arbitrary uid in group 0, group-writable
        (0o750, "23456:0", False),
        (0o757, "23456:5", True),  # world-writable
    ],
)
def test_a_pipeline_root_the_containers_cannot_write_is_refused_up_front(tmp_path, mode, user, writable):
    root = tmp_path / "root"
    root.mkdir()
    os.chown(root, 0, 0)
    os.chmod(root, mode)
    if writable:
        docker_runner.check_root_writable(str(root), user)
    else:
        with pytest.raises(PermissionError, match=rf"pipeline root '{root}' \(owner uid 0, gid 0, mode {mode:o}\) is not writable by uid \d+.*chmod a\+rwx"):
            docker_runner.check_root_writable(str(root), user)


def test_a_host_path_the_containers_cannot_see_is_named_with_the_mount_that_fixes_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    options = DockerOptions(image="i", mounts=(f"{data}:/data:ro",))
    root = str(tmp_path / "root")
    ok = {"data_uri": "/data/cats", "registry_uri": f"{root}/registry", "base_weights": "imagenet", "checkpoint_dir": ""}
    docker_runner.check_paths_visible(ok, options, root)
    docker_runner.check_paths_visible({**ok, "registry_uri": "gs://b/r", "base_weights": "gs://b/w.weights.h5"}, options, root)
    with pytest.raises(ValueError, match=rf"data_uri '{data}' is a path the step containers cannot see: mount it \(--docker-mount {data}:{data}"):
        docker_runner.check_paths_visible({**ok, "data_uri": str(data)}, options, root)
    with pytest.raises(ValueError, match="base_weights '/models/b.weights.h5' is a path"):
        docker_runner.check_paths_visible({**ok, "base_weights": "/models/b.weights.h5"}, options, root)


def test_the_runner_refuses_an_image_the_daemon_does_not_have_or_says_no_daemon_answers():
    options = DockerOptions(image="kfp-finetune/no-such-image:never")
    try:
        import docker

        docker.from_env().ping()
    except Exception:  # noqa: BLE001 (no daemon: the other branch is the one to test)
        with pytest.raises(ConnectionError, match="no Docker daemon answers"):
            docker_runner.make_runner(options, {})
        return
    with pytest.raises(ValueError, match="image 'kfp-finetune/no-such-image:never' is not on this machine: build it with 'make image-cpu'"):
        docker_runner.make_runner(options, {})


def test_container_paths_map_to_the_host_through_the_longest_mount(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    options = DockerOptions(image="i", mounts=(f"{a}:/mnt", f"{b}:/mnt/registry"))
    assert docker_runner.host_path("/mnt/registry/digits/1", options) == f"{b}/digits/1"
    assert docker_runner.host_path("/mnt/data", options) == f"{a}/data"
    assert docker_runner.host_path("/mntx/data", options) == "/mntx/data"


def test_an_output_folder_on_a_read_only_or_unwritable_mount_is_refused_before_training(tmp_path):
    registry = tmp_path / "registry"
    registry.mkdir()
    os.chown(registry, 0, 0)
    os.chmod(registry, 0o755)
    params = {"registry_uri": "/mnt/registry/models", "checkpoint_dir": ""}
    with pytest.raises(ValueError, match=r"registry_uri '/mnt/registry/models' is on the read-only mount .*drop ':ro'"):
        docker_runner.check_outputs_writable(params, DockerOptions(image="i", mounts=(f"{registry}:/mnt/registry:ro",)))
    # The first push creates .../models: the nearest existing folder must be writable.
    with pytest.raises(PermissionError, match=rf"registry_uri '{registry}' \(owner uid 0, gid 0, mode 755\) is not writable by uid 10001"):
        docker_runner.check_outputs_writable(params, DockerOptions(image="i", mounts=(f"{registry}:/mnt/registry",)))
    os.chmod(registry, 0o777)
    docker_runner.check_outputs_writable(params, DockerOptions(image="i", mounts=(f"{registry}:/mnt/registry",)))
    docker_runner.check_outputs_writable({"registry_uri": "gs://b/r"}, DockerOptions(image="i"))
