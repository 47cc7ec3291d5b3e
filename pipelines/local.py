"""``run-local``: the compiled pipeline executed on this machine by ``kfp.local``.

By default the steps run as subprocesses of this Python (``SubprocessRunner(use_venv=False)``: the project is
installed here, and ``use_venv=True`` builds a venv per task: measured 7 s per step, and about
40 s when it has to install TensorFlow).
Accelerator settings are ignored by that runner. With ``docker`` (``pipelines.docker_runner``)
each step runs in its component image instead, as on a cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import warnings
from typing import Any

from components.step_errors import ERROR_FILE_ENV, read_errors
from components.step_logging import LOG_LEVEL_ENV
from pipelines import docker_runner
from pipelines.docker_runner import DockerOptions


class PipelineRunError(RuntimeError):
    """A local run failed; ``str()`` is one readable line naming the failed step and its error.

    ``pipeline_root`` and ``run_dir`` (the run's folder, None if the run wrote none) say where
    the steps that finished left their outputs.
    """

    def __init__(self, message: str, pipeline_root: str | None = None, run_dir: str | None = None) -> None:
        super().__init__(message)
        self.pipeline_root, self.run_dir = pipeline_root, run_dir


@dataclasses.dataclass
class LocalRunResult:
    """What a finished local run produced (the ``--summary`` JSON is ``summary()``)."""

    status: str
    blessed: bool
    reason: str
    accuracy: float
    macro_f1: float
    pushed: dict | None
    pipeline_root: str
    run_dir: str | None
    seconds: float
    reports: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """``status``, ``metrics`` (accuracy, macro_f1), ``blessed``, ``reason``, ``pushed``
        (model, version, uri, alias, or None), ``pipeline_root``, ``run_dir``, ``seconds``,
        ``reports`` (``collect_reports``: name -> HTML file)."""
        return {
            "status": self.status,
            "metrics": {"accuracy": self.accuracy, "macro_f1": self.macro_f1},
            "blessed": self.blessed,
            "reason": self.reason,
            "pushed": self.pushed,
            "pipeline_root": self.pipeline_root,
            "run_dir": self.run_dir,
            "seconds": self.seconds,
            "reports": self.reports,
        }


#: The run's HTML reports: name -> (task, output artifact of ``components.kfp_components``).
REPORTS = {"evaluation": ("evaluate", "report_html"), "training": ("finetune", "training_html")}


def collect_reports(run_dir: str | None) -> dict[str, str]:
    """Copies each of ``REPORTS`` that the run wrote to ``<run_dir>/<name>.html``.

    Why a copy: kfp.local names an artifact file after its output (``evaluate/report_html``),
    without an extension, and a browser shows a ``file://`` page without one as plain text
    (Chromium does); the ``.html`` copy opens as the page the KFP UI shows.

    Returns:
        ``{name: path of the .html copy}`` for the reports found (none when ``run_dir`` is None).
    """
    found: dict[str, str] = {}
    for name, (task, output) in REPORTS.items():
        source = os.path.join(run_dir, task, output) if run_dir else ""
        if source and os.path.isfile(source):
            found[name] = os.path.join(run_dir, f"{name}.html")
            shutil.copyfile(source, found[name])
    return found


def _latest_run_dir(pipeline_root: str, before: set[str]) -> str | None:
    if not os.path.isdir(pipeline_root):
        return None
    new = sorted(set(os.listdir(pipeline_root)) - before)
    return os.path.join(pipeline_root, new[-1]) if new else None


def step_settings(params: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """The four steps' settings (preprocess, finetune, evaluate, push) from pipeline parameters,
    as the components build them; a parameter left out takes the settings' default.

    Raises:
        ValueError: an invalid setting (named, with the allowed values).
    """
    from components.evaluate import EvaluateSettings
    from components.finetune import FinetuneSettings
    from components.preprocess import PreprocessSettings
    from components.push import PushSettings
    from components.settings import from_parameters

    return tuple(from_parameters(cls, params) for cls in (PreprocessSettings, FinetuneSettings, EvaluateSettings, PushSettings))


def check_settings(params: dict[str, Any], docker: DockerOptions | None = None) -> None:
    """Validates every step's settings before a run starts, so a typo fails in a second instead
    of after preprocessing (the steps validate again, for runs started elsewhere).

    Args:
        params: Pipeline parameters.
        docker: The Docker runner's options, if it runs the steps: local paths in ``params`` are
            then container paths, looked up on the host through its mounts.

    Raises:
        ValueError: an invalid setting (named, with the allowed values), or a ``registry_uri``
            that is a file.
        FileNotFoundError: a local ``base_weights`` file that does not exist.
    """
    from components import preprocess

    def on_host(path: str) -> str:
        return docker_runner.host_path(path, docker) if docker is not None else path

    pre, finetune, _, _ = step_settings(params)
    source = finetune.base_weights
    if source.lower() not in ("imagenet", "none") and "://" not in source and not os.path.isfile(on_host(source)):
        where = f" (on the host: {on_host(source)!r})" if on_host(source) != source else ""
        raise FileNotFoundError(f"base_weights file {source!r} does not exist{where}")
    preprocess.check_beam_args(pre.beam_pipeline_args)
    registry_uri = pre.registry_uri
    if registry_uri and "://" not in registry_uri and os.path.isfile(on_host(registry_uri)):
        raise ValueError(f"registry_uri {registry_uri!r} is a file; use a folder (created by the first push) or gs://bucket/prefix")


def _remove_empty_folders(root: str) -> None:
    """Removes every folder under ``root`` (``root`` included) that holds no file at any depth."""
    for folder, _, _ in sorted(os.walk(root), key=lambda w: -w[0].count(os.sep)):
        try:
            os.rmdir(folder)  # only succeeds on an empty folder
        except OSError:
            pass


def run_local(
    params: dict[str, Any], pipeline_root: str, package_path: str | None = None, docker: DockerOptions | None = None
) -> LocalRunResult:
    """Runs the compiled pipeline locally and returns its outputs.

    Args:
        params: Pipeline parameters (snake_case names of ``pipelines.pipeline.PARAMETERS``).
        pipeline_root: Local folder for the run's artifacts (created).
        package_path: A compiled pipeline YAML; default: compile the current pipeline (with
            ``docker.image`` as the component image under the Docker runner).
        docker: Run every step in its container image (``pipelines.docker_runner``); None runs
            the steps as subprocesses of this Python, where the project is installed.

    Raises:
        PipelineRunError: a step failed; the message is ``step <name> failed: <Error>: <message>``.
        ValueError: ``pipeline_root`` is a remote URI (kfp.local would write a local folder
            literally named ``gs:``: kfp 2.17.3 does not write to object storage); under the
            Docker runner, a local path parameter the containers cannot see, or a missing image.
        PermissionError: under the Docker runner, a pipeline root the containers cannot write.
        RuntimeError: under the Docker runner, no Docker daemon answers.
    """
    from kfp import components, local

    if "://" in pipeline_root:
        raise ValueError(f"pipeline_root {pipeline_root!r} must be a local folder for run-local")
    pipeline_root = os.path.abspath(pipeline_root)
    os.makedirs(pipeline_root, exist_ok=True)
    if docker is not None:
        docker_runner.check_root_writable(pipeline_root, docker.user)
        docker_runner.check_paths_visible(params, docker, pipeline_root)
        docker_runner.check_outputs_writable(params, docker)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kfp-finetune-") as tmp:
        if package_path is None:
            from pipelines.pipeline import compile_pipeline

            package_path = compile_pipeline(os.path.join(tmp, "pipeline.yaml"), image=docker.image if docker else None)
        pipeline = components.load_component_from_file(package_path)
        before = set(os.listdir(pipeline_root))
        if docker is None:
            error_file = os.path.join(tmp, "errors.jsonl")
            runner = local.SubprocessRunner(use_venv=False)
        else:
            # The containers see only the pipeline root: their error reports go there.
            error_file = os.path.join(pipeline_root, f".errors-{os.getpid()}-{time.time_ns()}.jsonl")
            # The step's TensorFlow log level override (components.step_logging) goes along.
            forwarded = {LOG_LEVEL_ENV: os.environ[LOG_LEVEL_ENV]} if os.environ.get(LOG_LEVEL_ENV) else {}
            runner = docker_runner.make_runner(docker, {ERROR_FILE_ENV: error_file, **forwarded})
        local.init(runner=runner, pipeline_root=pipeline_root, raise_on_error=True)
        # kfp.local warns for every step that its image is not a plain Python image; here the
        # project (what the image holds) is installed in this very environment, so it is moot.
        warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom", category=RuntimeWarning)
        previous = os.environ.get(ERROR_FILE_ENV)
        os.environ[ERROR_FILE_ENV] = error_file  # inherited by the step subprocesses
        try:
            task = pipeline(**params)
        except Exception as e:
            # kfp.local creates each task's output folders before it runs; a failed task's stay
            # empty. Leave only what was written.
            for name in set(os.listdir(pipeline_root)) - before:
                _remove_empty_folders(os.path.join(pipeline_root, name))
            errors = read_errors(error_file)
            where = {"pipeline_root": pipeline_root, "run_dir": _latest_run_dir(pipeline_root, before)}
            if errors:
                raise PipelineRunError(f"step {errors[-1]['step']} failed: {errors[-1]['error']}", **where) from e
            raise PipelineRunError(f"pipeline failed: {type(e).__name__}: {e}", **where) from e
        finally:
            if previous is None:
                os.environ.pop(ERROR_FILE_ENV, None)
            else:
                os.environ[ERROR_FILE_ENV] = previous
            if docker is not None and os.path.exists(error_file):
                os.remove(error_file)
    out = task.outputs
    pushed = json.loads(out["pushed"]) if out["pushed"] else None
    run_dir = _latest_run_dir(pipeline_root, before)
    return LocalRunResult(
        status="succeeded",
        blessed=bool(out["blessed"]),
        reason=out["reason"],
        accuracy=float(out["accuracy"]),
        macro_f1=float(out["macro_f1"]),
        pushed=pushed,
        pipeline_root=pipeline_root,
        run_dir=run_dir,
        seconds=round(time.perf_counter() - start, 1),
        reports=collect_reports(run_dir),
    )
