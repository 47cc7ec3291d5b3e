"""The Docker daemon and the CPU component image, for the tests that run containers.

Import the fixture into a test module (``from docker_daemon import cpu_image``). Tests that need
containers skip, with the reason, where no Docker daemon answers; ``.ci/run`` starts one where
Debian's docker.io can run.
"""

from __future__ import annotations

import os
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_BUILD_TIMEOUT_S = 1800


def docker_daemon_reason() -> str | None:
    """None when a Docker daemon answers a ping; else why the container tests skip."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.close()
    except Exception as e:  # noqa: BLE001 (any failure means the same: no daemon to use)
        return f"no Docker daemon answers ({type(e).__name__}); .ci/run starts one where Debian's docker.io can run"
    return None


@pytest.fixture(scope="session")
def cpu_image() -> str:
    """The CPU component image, built by ``make image-cpu`` (layers reused when nothing changed),
    or ``$KFP_FINETUNE_TEST_IMAGE`` used as it is (an image already on the daemon: no build)."""
    reason = docker_daemon_reason()
    if reason:
        pytest.skip(reason)
    from components.image import COMPONENT_IMAGE

    if os.environ.get("KFP_FINETUNE_TEST_IMAGE"):
        return os.environ["KFP_FINETUNE_TEST_IMAGE"]

    proc = subprocess.run(["make", "-C", REPO_ROOT, "image-cpu"], capture_output=True, text=True, timeout=IMAGE_BUILD_TIMEOUT_S)
    assert proc.returncode == 0, f"make image-cpu failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return COMPONENT_IMAGE
