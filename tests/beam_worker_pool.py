"""Beam SDK workers in their own container: a worker pool in the component image.

Beam's portable runners (here ``beam_job_service``, a job server as Flink's or Spark's is) start
SDK workers through a worker pool
(``apache_beam.runners.worker.worker_pool_main``) when the pipeline's environment is
``--environment_type=EXTERNAL --environment_config=<host>:<port>``: the runner asks the pool for
each worker, and the pool starts ``sdk_worker_main`` processes beside itself. Here the pool runs
in the component image with ``docker run --network host`` (so the runner's gRPC servers and the
test's GCS front on 127.0.0.1 are reachable) and no mount but the front's certificate: the
workers see data and outputs only through ``gs://``. This is how Flink on Kubernetes runs Python
workers (a worker-pool sidecar in the task manager pod). Also used by the bench.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

from gcs_emulator import stop_process

# Where a worker container sees the GCS front's certificate.
CONTAINER_CA_FILE = "/etc/gcs-front/ca.pem"
_READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def portable_args(job_port: int, pool_port: int, workers: int) -> tuple[str, ...]:
    """Beam options for the portable runner: jobs go to the job service on ``localhost:job_port``
    (``beam_job_service``), which runs them with ``workers`` SDK workers from the pool on
    ``localhost:pool_port``."""
    return ("--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}", f"--direct_num_workers={workers}")


@contextlib.contextmanager
def job_service() -> Iterator[int]:
    """Runs ``beam_job_service`` in a child process of this Python while the block runs; yields its port.

    Raises:
        RuntimeError: it exited or did not listen within 60 s (with its output).
    """
    import sys
    import tempfile

    port = free_port()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "beam_job_service.py")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([sys.executable, script, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + _READY_TIMEOUT_S
            while not _listening(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the Beam job service did not listen on port {port}: {log.read().decode()[-3000:]}")
                time.sleep(0.2)
            yield port
        finally:
            stop_process(process, 10)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def worker_pool(image: str, environment: dict[str, str], ca_file: str) -> Iterator[tuple[int, str]]:
    """Runs a worker pool container while the block runs; yields ``(port, container name)``.

    Args:
        image: The component image (it must hold this project: the pipeline's functions are
            pickled by reference).
        environment: Variables for the workers (``GcsFront.environment(CONTAINER_CA_FILE)``).
        ca_file: The front's certificate on this machine, mounted read-only at ``CONTAINER_CA_FILE``.

    Raises:
        RuntimeError: the container exited or its port did not open within 60 s (with its log).
    """
    port = free_port()
    name = f"kfp-finetune-beam-pool-{uuid.uuid4().hex[:8]}"
    command = ["docker", "run", "-d", "--rm", "--name", name, "--network", "host",
               "-v", f"{ca_file}:{CONTAINER_CA_FILE}:ro"]
    for key, value in environment.items():
        command += ["-e", f"{key}={value}"]
    command += [image, "python", "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    try:
        _wait_listening(name, port)
        yield port, name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def logs(name: str) -> str:
    """The pool container's output so far (its workers' logs too)."""
    proc = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


def _wait_listening(name: str, port: int) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
        if state.stdout.strip() != "true":
            raise RuntimeError(f"the worker pool container {name} exited: {logs(name)[-3000:]}")
        if _listening(port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the worker pool {name} did not listen on port {port} within {_READY_TIMEOUT_S} s: {logs(name)[-3000:]}")
