"""``beam_pipeline_args``: which Beam runner preprocess uses, and what a remote one needs.

A runner is *in-process* when its workers share the step's process or machine (Beam's
FnApiRunner, the DirectRunner family, Prism): they can write to the artifacts' local ``.path``.
Every other runner (``DataflowRunner``, ``FlinkRunner``, ``SparkRunner``, ``PortableRunner``, ...)
is *remote*: its SDK workers run in their own containers on other machines and share no disk
with the step, so the step's outputs must go to the artifacts' ``.uri`` on object storage (a
``gs://`` URI on a cluster), the way TFX components write them. What a remote run also needs:

* ``--temp_location``: where Beam and tf.Transform stage temporary files, readable by every
  worker. Default: ``beam-temp`` beside the step's outputs under the pipeline root
  (``default_temp_location``).
* ``--sdk_container_image``: the image the runner starts SDK workers from; it must hold this
  project (the pipeline's functions are pickled by reference). Default: the component image.

docs/distributed-preprocessing.md gives the exact arguments for Dataflow, Flink and Spark.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import posixpath
from typing import Any

# Runners whose workers run in the step's process or on its machine (Beam's names and aliases).
IN_PROCESS_RUNNERS = frozenset({
    "directrunner", "direct", "bundlebaseddirectrunner", "switchingdirectrunner", "fnapirunner", "prismrunner", "prism",
})
# The variable a compiled pipeline sets on the preprocess task to the image it runs in
# (``pipelines.pipeline``): the default SDK worker image of a remote runner. Read at run time only.
COMPONENT_IMAGE_VARIABLE = "KFP_FINETUNE_COMPONENT_IMAGE"
# From this many input files on, and with at least LOCAL_PARALLEL_MIN_CORES cores, a local run
# uses one Beam worker process per core (at most 8). Each extra worker costs ~8 s of start-up
# (it imports TensorFlow and tf.Transform; ``make bench``, preprocess_parallel_throughput). On 2
# cores, which the runner's own threads share with the workers, two workers measured no clear
# per-image gain (0.84 vs 0.89 of tf.data in one run, 2.3 vs 1.3 in another), so 2-core
# machines stay with one process; with 4 or more cores, 50,000 files repay the start-up.
LOCAL_PARALLEL_MIN_FILES = 50_000
LOCAL_PARALLEL_MIN_CORES = 4


def option_value(beam_pipeline_args: tuple[str, ...], name: str) -> str | None:
    """The value of option ``--name`` (``--name=value`` or ``--name value``); None when absent."""
    args = list(beam_pipeline_args)
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}":
            return args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
    return None


def runner_name(beam_pipeline_args: tuple[str, ...]) -> str | None:
    """The ``--runner`` named in the arguments, as written; None when none is named."""
    return option_value(beam_pipeline_args, "runner")


def is_remote(beam_pipeline_args: tuple[str, ...]) -> bool:
    """True when ``--runner`` names a runner other than an in-process one (``IN_PROCESS_RUNNERS``,
    compared without case); False for no ``--runner``."""
    name = runner_name(beam_pipeline_args)
    return bool(name) and name.rsplit(".", 1)[-1].lower() not in IN_PROCESS_RUNNERS


def is_uri(location: str) -> bool:
    """True for a ``scheme://...`` location (object storage, e.g. ``gs://b/p``), False for a local path."""
    return "://" in location and not location.startswith("file://")


def check_beam_args(beam_pipeline_args: tuple[str, ...]) -> None:
    """Parses ``beam_pipeline_args`` with Beam's own option parser before any work starts.

    Raises:
        ValueError: a ``--runner`` Beam does not know by name (``StandardOptions.ALL_KNOWN_RUNNERS``;
            a dotted class path is not checked), an argument that is not an option (``--name=value`` or
            ``--name value``), or a value Beam refuses (e.g. ``--direct_num_workers=abc``); the message names the
            argument and gives Beam's own complaint instead of its usage text.
    """
    if not beam_pipeline_args:
        return  # nothing to parse, and no reason to import Beam (run-local checks in its own process)
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    args = list(beam_pipeline_args)
    runner = runner_name(beam_pipeline_args)
    # Beam resolves a short name through StandardOptions.ALL_KNOWN_RUNNERS (with or without
    # "Runner", any case: apache_beam.runners.runner.create_runner) and imports a dotted path as
    # written; any other name fails only when the pipeline runs.
    known = sorted({path.rsplit(".", 1)[-1] for path in StandardOptions.ALL_KNOWN_RUNNERS})
    if runner is not None and "." not in runner and not {runner.lower(), runner.lower() + "runner"} & {k.lower() for k in known}:
        close = difflib.get_close_matches(runner, known, n=1, cutoff=0.75)
        raise ValueError(f"beam_pipeline_args --runner={runner}: not a Beam runner"
                         + (f" (did you mean {close[0]}?)" if close else "")
                         + f"; expected one of {', '.join(known)}, or a dotted path to a runner class")
    for i, arg in enumerate(args):
        if not arg.startswith("--") and (i == 0 or not args[i - 1].startswith("--") or "=" in args[i - 1]):
            raise ValueError(f"beam_pipeline_args: {arg!r} is not an option; write --{arg.lstrip('-')}")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            PipelineOptions(args).get_all_options()
    except SystemExit:
        complaint = stderr.getvalue().strip().splitlines()[-1:] or ["rejected"]
        raise ValueError(f"beam_pipeline_args {' '.join(args)!r}: {complaint[0].split(': error: ')[-1]}") from None


def check_output_locations(beam_pipeline_args: tuple[str, ...], outputs: dict[str, str]) -> None:
    """Refuses a local output location with a remote runner (its workers could not reach it).

    Args:
        beam_pipeline_args: The Beam options.
        outputs: Output name -> location, e.g. ``{"examples": "gs://b/root/run/examples"}``.

    Raises:
        ValueError: a remote runner and a local path; names the runner, the output and the path.
    """
    if not is_remote(beam_pipeline_args):
        return
    for name, location in outputs.items():
        if not is_uri(location):
            raise ValueError(
                f"--runner={runner_name(beam_pipeline_args)} runs on remote workers that cannot write the local "
                f"{name} path {location!r}: give an object-storage URI (gs://...), the artifact's .uri"
            )


def default_temp_location(output_uri: str) -> str:
    """``beam-temp`` beside an output under the pipeline root: ``gs://b/root/run/task/examples``
    -> ``gs://b/root/run/task/beam-temp``."""
    return posixpath.join(posixpath.dirname(output_uri.rstrip("/")), "beam-temp")


def default_sdk_image() -> str:
    """The image remote SDK workers start from: ``$KFP_FINETUNE_COMPONENT_IMAGE`` (set by the
    compiled pipeline on the preprocess task), else ``components.image.COMPONENT_IMAGE``."""
    from components.image import COMPONENT_IMAGE

    return os.environ.get(COMPONENT_IMAGE_VARIABLE) or COMPONENT_IMAGE


def remote_args(beam_pipeline_args: tuple[str, ...], output_uri: str, sdk_image: str | None = None) -> tuple[str, ...]:
    """``beam_pipeline_args`` with what a remote runner's workers need, where not given.

    Appends ``--temp_location=default_temp_location(output_uri)`` and
    ``--sdk_container_image=<sdk_image or default_sdk_image()>``. In-process runners get the
    arguments unchanged.
    """
    if not is_remote(beam_pipeline_args):
        return tuple(beam_pipeline_args)
    extra = []
    if option_value(beam_pipeline_args, "temp_location") is None:
        extra.append(f"--temp_location={default_temp_location(output_uri)}")
    if option_value(beam_pipeline_args, "sdk_container_image") is None:
        extra.append(f"--sdk_container_image={sdk_image or default_sdk_image()}")
    return (*beam_pipeline_args, *extra)


def local_parallelism(beam_pipeline_args: tuple[str, ...], num_files: int, cpu_count: int | None = None) -> tuple[str, ...]:
    """``beam_pipeline_args``, plus one worker process per core for a large local run.

    When no ``--runner`` and no ``--direct_num_workers`` is given, ``num_files`` is at least
    ``LOCAL_PARALLEL_MIN_FILES`` and the machine has at least ``LOCAL_PARALLEL_MIN_CORES`` cores
    (``cpu_count``, default ``os.cpu_count()``), appends ``--direct_num_workers=<cores, at most 8>
    --direct_running_mode=multi_processing``. Otherwise returns the arguments unchanged.
    """
    given = {a.split("=", 1)[0] for a in beam_pipeline_args}
    cores = min(8, cpu_count or os.cpu_count() or 1)
    if "--runner" in given or "--direct_num_workers" in given or num_files < LOCAL_PARALLEL_MIN_FILES or cores < LOCAL_PARALLEL_MIN_CORES:
        return tuple(beam_pipeline_args)
    return (*beam_pipeline_args, f"--direct_num_workers={cores}", "--direct_running_mode=multi_processing")


def default_runner(beam_pipeline_args: tuple[str, ...]) -> Any:
    """The runner when the arguments name none: Beam's in-process FnApiRunner; else None (Beam
    picks the named one).

    Why not ``DirectRunner``: since Beam 2.6x it first tries the Prism runner, which downloads a
    binary at run time (impossible on an air-gapped node), leaves its gRPC server behind when it
    falls back, and the step process then crashed at exit (signal 11) after finishing its work.
    The FnApiRunner honours ``--direct_num_workers`` and ``--direct_running_mode``.
    """
    if runner_name(beam_pipeline_args) is not None:
        return None
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    return fn_runner.FnApiRunner()
