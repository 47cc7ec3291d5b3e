"""The component images (docker/Dockerfile): CUDA libraries, users, no build CA left behind.

The tests marked ``docker`` run containers of images built from this checkout; they run with
``make test-images``, which rebuilds what changed first (so a stale image is never judged) and
sets KFP_FINETUNE_IMAGE_TESTS=1. Without it, or without a Docker daemon or the image, they skip
and say why.
"""

import hashlib
import json
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from components.image import COMPONENT_IMAGE, GPU_COMPONENT_IMAGE

REPO = Path(__file__).resolve().parents[1]
IMAGES = {"cpu": COMPONENT_IMAGE, "gpu": GPU_COMPONENT_IMAGE}
OPT_IN = "KFP_FINETUNE_IMAGE_TESTS"
# The CA bundle docker/build-image.sh hands to pip during the build by default.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def test_build_script_uses_the_names_of_image_py():
    for accelerator, image in IMAGES.items():
        out = subprocess.run([str(REPO / "docker" / "build-image.sh"), "--print-image", accelerator],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == image


@lru_cache(maxsize=None)
def docker_problem() -> str | None:
    """Why no image test can run here, or None."""
    if os.environ.get(OPT_IN) != "1":
        return f"image tests run with `make test-images` (which builds the images first); or set {OPT_IN}=1"
    if shutil.which("docker") is None:
        return "no `docker` client on PATH"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no message"])[-1]
        return f"no Docker daemon reachable (`docker info`: {last})"
    return None


@pytest.fixture(params=sorted(IMAGES))
def image(request) -> str:
    """Each image in turn; skips when Docker or the image is not there."""
    problem = docker_problem()
    if problem:
        pytest.skip(problem)
    ref = IMAGES[request.param]
    if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode != 0:
        pytest.skip(f"image {ref} is missing: build it with `make image-{request.param}`")
    return ref


def run_in(image: str, *command: str, user: str | None = None) -> subprocess.CompletedProcess:
    """``docker run`` without network (nothing in these checks may need one)."""
    args = ["docker", "run", "--rm", "--network", "none"] + (["--user", user] if user else [])
    return subprocess.run(args + [image, *command], capture_output=True, text=True, timeout=300)


@pytest.mark.docker
def test_cuda_libraries(image):
    result = run_in(image, "python", "-m", "components.accelerators", "--json")
    report = json.loads(result.stdout)
    assert report["driver"]["path"] is None  # run without --gpus: no driver library is mounted
    assert report["build_info"]["cuda_version"].startswith("12.") and report["build_info"]["cudnn_version"] == "9"
    if image == COMPONENT_IMAGE:
        assert result.returncode == 1, result.stderr[-2000:]
        assert report["verdict"]["kind"] == "no_cuda_libraries"
        assert report["verdict"]["message"].startswith("not a GPU image: no CUDA libraries")
        return
    assert result.returncode == 0, report["verdict"]
    assert report["verdict"]["kind"] == "ready"
    for status in report["libraries"]:
        assert status["path"].startswith("/opt/venv/lib/python3.11/site-packages/nvidia/"), status
        assert status["error"] is None and len(status["version"]) >= 2, status


REQUIRE_SCRIPT = """
import json, time
import tensorflow
from components.accelerators import AcceleratorNotFoundError, require_accelerators
print(json.dumps(require_accelerators(0, "nvidia.com/gpu")))
start = time.monotonic()
try:
    require_accelerators(1, "nvidia.com/gpu")
except AcceleratorNotFoundError as e:
    print(json.dumps({"seconds": time.monotonic() - start, "message": str(e)}))
"""


@pytest.mark.docker
def test_gpu_asked_for_but_not_seen_fails_fast(image):
    result = run_in(image, "python", "-c", REQUIRE_SCRIPT)
    assert result.returncode == 0, result.stderr[-2000:]
    description, failure = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    assert description["visible_devices"] == ["/physical_device:CPU:0"]
    assert failure["seconds"] < 10, failure
    message = failure["message"]
    assert message.startswith("asked for 1 GPU(s) (nvidia.com/gpu) but TensorFlow sees 0")
    assert "no NVIDIA driver in the container (libcuda.so.1 does not load)" in message
    if image == COMPONENT_IMAGE:
        assert "1. the image cannot drive a GPU: not a GPU image: no CUDA libraries" in message
    else:
        assert "the image cannot drive a GPU" not in message
        assert "1. no NVIDIA driver in the container" in message


# Importing keras writes $KERAS_HOME/keras.json when the folder is writable: written by this uid,
# not left over from the build.
USER_SCRIPT = """
import os, pathlib, keras
config = pathlib.Path(os.environ["KERAS_HOME"]) / "keras.json"
wrote = config.is_file() and config.stat().st_uid == os.getuid()
print(os.getuid(), os.getgid(), os.access(os.environ["HOME"], os.W_OK), wrote)
"""


@pytest.mark.docker
@pytest.mark.parametrize(
    "user, expected",
    [
        (None, "10001 10001 True True"),  # the image's own user
        ("12345:0", "12345 0 True True"),  # OpenShift: an arbitrary uid in group 0
        ("12345:12345", "12345 12345 False True"),  # any uid: caches still go to /tmp
    ],
)
def test_runs_as_non_root_and_as_an_arbitrary_uid(image, user, expected):
    result = run_in(image, "python", "-c", USER_SCRIPT, user=user)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.docker
def test_no_build_ca_left_in_the_image(image):
    # As root: find must read every folder.
    leftovers = run_in(image, "sh", "-c", "ls -A /tmp; find / -xdev \\( -name 'pip-ca.pem' -o -name build-ca \\) -print",
                       user="0")
    assert leftovers.returncode == 0 and leftovers.stdout == "", leftovers.stdout
    if not HOST_CA_BUNDLE.is_file():
        return
    # No file of the image is byte-identical to the bundle the build was given.
    data = HOST_CA_BUNDLE.read_bytes()
    same_size = run_in(image, "sh", "-c", f"find / -xdev -type f -size {len(data)}c -exec sha256sum {{}} +", user="0")
    assert hashlib.sha256(data).hexdigest() not in same_size.stdout, same_size.stdout
