"""Rows of preprocess on a remote Beam runner: SDK workers in their own container.

``preprocess_sdk_workers_2`` and ``preprocess_sdk_workers_4`` run the step on Beam's portable
runner (the tests' ``beam_job_service``, a local job server) whose 2 or 4 SDK workers come from a
worker pool in the component image (``docker run --network host``, the tests' ``beam_worker_pool``), against the
in-process runner (Beam's FnApiRunner in the step's worker process), on the same files. Both
sides read the images from ``gs://`` and write the artifacts to ``gs://`` (fake-gcs-server on
127.0.0.1, reached through the tests' ``gcs_front``), so the runner is the only difference.

Images/s = usable images / the step's pipeline seconds (``timing.pipeline_s``: listing, the Beam
pipeline with tf.Transform's analysis, statistics; the step's own imports excluded, the SDK
workers' start-up included, as a run pays it). One repetition per side, and the in-process side
is measured once for both rows, to keep ``make bench`` under 15 minutes.

Data: the first ``SLICE`` (1,344) of the 10,752 digit JPEGs the other preprocess rows use
(``bench.data`` makes the same files in the same order); the first 2,688 took 220 s for the
three runs, more than the bench's 15 minutes leave. ``KFP_FINETUNE_BENCH_BEAM_FILES=N`` takes the
first N (up to all 10,752) instead. The image is ``$KFP_FINETUNE_BENCH_IMAGE`` or the CPU component
image (``make image-cpu``), which must hold this source: it is not built here. Skipped, with the
reason, without a Docker daemon or that image.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Any, Iterator

from bench.harness import REPO_ROOT, Context, Goal, Result, row
from bench.rows_preprocess import BASE_MODEL, BIG, IMAGE_SIZE, LARGE, jpeg_dir

# Of the LARGE (10,752) files: 2,688 took 220 s for the three runs (measured here with other
# work on the cores), more than the bench's 15 minutes leave; half of them. Measured on 2 quiet
# cores, 2026-12-05: 1,344 files took 133 s (in-process 64 images/s, 2 workers 33, 4 workers 31);
# KFP_FINETUNE_BENCH_BEAM_FILES=10752 took 468 s (85, 85, 88 images/s), outside make bench's
# budget (the other rows take about 510 s).
FILES_ENV = "KFP_FINETUNE_BENCH_BEAM_FILES"


def slice_size(environ: dict[str, str] | os._Environ = os.environ) -> int:
    """Files the SDK-worker rows take: ``$KFP_FINETUNE_BENCH_BEAM_FILES`` (1 to LARGE), else BIG // 2.

    Raises:
        ValueError: the variable is not an integer in [1, LARGE].
    """
    text = environ.get(FILES_ENV, "").strip()
    if not text:
        return BIG // 2
    if not text.isdigit() or not 1 <= int(text) <= LARGE:
        raise ValueError(f"{FILES_ENV}={text!r}: expected a number of files from 1 to {LARGE}")
    return int(text)


SLICE = slice_size()
WORKER_COUNTS = (2, 4)


def _tests_on_path() -> None:
    """The worker pool, the GCS emulator and its front are the tests' helpers (tests/)."""
    tests = os.path.join(REPO_ROOT, "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def skip_reason(image: str) -> str | None:
    """Why the rows cannot run here (no Docker daemon, no image), or None."""
    _tests_on_path()
    from docker_daemon import docker_daemon_reason

    reason = docker_daemon_reason()
    if reason:
        return reason
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if found.returncode != 0:
        return f"image {image} is not on the Docker daemon (make image-cpu, or set KFP_FINETUNE_BENCH_IMAGE)"
    return None


def bench_image() -> str:
    from components.image import COMPONENT_IMAGE

    return os.environ.get("KFP_FINETUNE_BENCH_IMAGE") or COMPONENT_IMAGE


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _slice_dir(ctx: Context) -> str:
    """The first ``SLICE`` of the ``LARGE`` files: the same generator makes the same first files."""
    return jpeg_dir(ctx, SLICE)


def _measure(ctx: Context, image: str) -> dict[str, Any]:
    """Images/s of the in-process runner and of each worker count, once per bench run."""
    _tests_on_path()
    from beam_worker_pool import CONTAINER_CA_FILE, job_service, portable_args, worker_pool
    from gcs_emulator import new_bucket, running_emulator, upload_folder
    from gcs_front import GcsFront

    def run(data_uri: str, out: str, args: tuple[str, ...]) -> dict[str, Any]:
        result = ctx.run_worker("preprocess", {
            "data_dir": data_uri, "out_dir": out, "image_size": IMAGE_SIZE, "base_model": BASE_MODEL,
            "beam_pipeline_args": list(args),
        })
        rate = result["num_images"] / result["timing"]["pipeline_s"]
        ctx.log(f"  preprocess {result['num_images']} images {' '.join(args) or '(in-process)'}: "
                f"{result['timing']['pipeline_s']:.1f} s pipeline, {rate:.0f} images/s")
        return {"images_per_s": rate, "num_images": result["num_images"], "pipeline_s": result["timing"]["pipeline_s"]}

    with running_emulator() as url, _environment({"STORAGE_EMULATOR_HOST": url}):
        front = GcsFront(url, ctx.fresh_dir("gcs-front"))
        try:
            with _environment(front.environment()):
                bucket = new_bucket(front.url)
                upload_folder(bucket, _slice_dir(ctx), "data")
                data_uri = f"gs://{bucket}/data"
                measured = {"in_process": run(data_uri, f"gs://{bucket}/out-in-process", ())}
                for n in WORKER_COUNTS:
                    with job_service() as job_port, \
                            worker_pool(image, front.environment(CONTAINER_CA_FILE), front.ca_file) as (pool_port, _):
                        measured[f"workers_{n}"] = run(data_uri, f"gs://{bucket}/out-{n}", portable_args(job_port, pool_port, n))
        finally:
            front.close()
    return measured


def _row(ctx: Context, workers: int) -> Result:
    image = bench_image()
    compared = (f"images/s: preprocess with {workers} SDK workers in a container (portable runner) vs the in-process "
                f"runner, gs:// in and out, {SLICE} of the {LARGE} JPEGs")
    reason = ctx.memo("sdk-workers-skip", lambda: skip_reason(image))
    if reason:
        return Result(name=f"preprocess_sdk_workers_{workers}", compared=compared, unit="images/s", goal=Goal(),
                      status="skipped", notes=f"skipped: {reason}")
    measured = ctx.memo("sdk-workers", lambda: _measure(ctx, image))
    a, b = measured[f"workers_{workers}"], measured["in_process"]
    per_count = ", ".join(f"{k.replace('_', ' ')} {v['images_per_s']:.0f}" for k, v in measured.items())
    return Result(
        name=f"preprocess_sdk_workers_{workers}", compared=compared, unit="images/s", goal=Goal(),
        a=[a["images_per_s"]], b=[b["images_per_s"]],
        notes=(f"images/s per worker count: {per_count} ({os.cpu_count()} CPU(s) shared by the step, the job service and "
               "every worker: on 2 cores more workers add start-up and contention, not throughput; a cluster gives each "
               f"worker its own cores). Image {image}; {SLICE} of the {LARGE} files, one run per side."),
        details=measured,
    )


@row("preprocess_sdk_workers_2", "images/s of preprocess with 2 SDK workers in a container (portable runner) vs in-process", slow=True)
def preprocess_sdk_workers_2(ctx: Context) -> Result:
    return _row(ctx, 2)


@row("preprocess_sdk_workers_4", "images/s of preprocess with 4 SDK workers in a container (portable runner) vs in-process", slow=True)
def preprocess_sdk_workers_4(ctx: Context) -> Result:
    return _row(ctx, 4)
