"""``run-local``: the compiled pipeline executed on this machine by ``kfp.local``.

By default the steps run as subprocesses of this Python (``SubprocessRunner(use_venv=False)``: the project is
installed here, and ``use_venv=True`` builds a venv per task: measured 7 s per step, and about
40 s when it has to install TensorFlow).
Accelerator settings are ignored by that runner. With ``docker`` (``pipelines.docker_runner``)
each step runs in its component image instead, as on a cluster. With a cluster ``profile`` the
run executes the very package a cluster would get; :func:`check_profile_locally` refuses, before
anything runs, the profile settings a local runner cannot stand in for.
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

from components.step_errors import ERROR_FILE_ENV, one_line, read_errors
from components.step_logging import LOG_LEVEL_ENV
from pipelines import docker_runner
from pipelines.docker_runner import DockerOptions
from pipelines.profiles import Profile


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
    not_pushed: str | None = None
    reports: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """``status``, ``metrics`` (accuracy, macro_f1), ``blessed``, ``reason``, ``pushed``
        (model, version, uri, alias, or None), ``not_pushed`` (why nothing was pushed: the
        blessing's reason, or "the champion changed from vN to vM since evaluation"; None when
        pushed), ``pipeline_root``, ``run_dir``, ``seconds``, ``reports`` (``collect_reports``:
        name -> HTML file)."""
        return {
            "status": self.status,
            "metrics": {"accuracy": self.accuracy, "macro_f1": self.macro_f1},
            "blessed": self.blessed,
            "reason": self.reason,
            "pushed": self.pushed,
            "not_pushed": self.not_pushed,
            "pipeline_root": self.pipeline_root,
            "run_dir": self.run_dir,
            "seconds": self.seconds,
            "reports": self.reports,
        }


def step_failed(record: dict[str, str], pipeline_root: str | None = None, run_dir: str | None = None) -> PipelineRunError:
    """The error of a run whose step failed, from the step's record in the error file
    (``components.step_errors.reported``): ``step <name> failed: <Error>: <message>``."""
    return PipelineRunError(f"step {record['step']} failed: {record['error']}", pipeline_root, run_dir)


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


def check_profile_locally(profile: Profile, docker: DockerOptions | None) -> None:
    """Refuses the settings of a cluster profile that a local run cannot honour.

    kfp.local runs the compiled package's images (Docker runner), environment variables and
    retry policies; it ignores resources, node selectors, tolerations, timeouts, pull secrets
    and the ``platforms.kubernetes`` section as a whole (kfp 2.17.3), so volumes and a
    secret-mounted key would silently be missing. Under the Docker runner a ``--docker-mount``
    can stand in for each; the subprocess runner has nothing to put there.

    Raises:
        ValueError: a volume's mount path, or the GCS key file, that no ``--docker-mount``
            provides (Docker runner), or a profile with either (subprocess runner); the message
            names the profile key and the flag that would fix it.
        FileNotFoundError: the GCS key file is not in the folder mounted for it.
    """
    key_file = profile.gcs_credentials.key_file
    if docker is None:
        if profile.volumes:
            raise ValueError(f"profile {profile.name}: volumes (claim {profile.volumes[0].claim!r} at {profile.volumes[0].mount_path}) "
                             "cannot apply to the subprocess runner: use --runner docker with --docker-mount HOST_DIR:"
                             f"{profile.volumes[0].mount_path} standing in for the claim")
        if key_file is not None:
            raise ValueError(f"profile {profile.name}: gcs_credentials mode secret (key {key_file}) cannot apply to the subprocess "
                             "runner: use --runner docker with the key's folder mounted at "
                             f"{profile.gcs_credentials.mount_path}, or a profile without it (your own credentials then apply)")
        return
    for i, volume in enumerate(profile.volumes):
        if not docker_runner.is_mounted(volume.mount_path, docker):
            raise ValueError(f"profile {profile.name}: volumes[{i}] (claim {volume.claim!r}) is mounted at {volume.mount_path} on "
                             f"a cluster; stand in for it with --docker-mount HOST_DIR:{volume.mount_path}")
    if key_file is not None:
        mount = profile.gcs_credentials.mount_path
        if not docker_runner.is_mounted(key_file, docker):
            raise ValueError(f"profile {profile.name}: gcs_credentials mounts Secret {profile.gcs_credentials.secret_name!r} at "
                             f"{mount} on a cluster; mount the folder holding {profile.gcs_credentials.secret_key} with "
                             f"--docker-mount KEY_DIR:{mount}:ro")
        if not os.path.isfile(docker_runner.host_path(key_file, docker)):
            raise FileNotFoundError(f"profile {profile.name}: the GCS key {key_file} is not on the host at "
                                    f"{docker_runner.host_path(key_file, docker)!r}")


def check_output_locations(
    params: dict[str, Any], pipeline_root: str, summary: str | None = None, docker: DockerOptions | None = None
) -> None:
    """Refuses, before a run starts, any output location inside the registry or the input data.

    The outputs are the pipeline root, the ``--summary`` file and ``checkpoint_dir``; the
    protected locations are ``registry_uri`` and ``data_uri`` (see ``components.locations``).

    Args:
        params: Pipeline parameters.
        pipeline_root: The run's pipeline root.
        summary: The ``--summary`` file, if any.
        docker: The Docker runner's options, if it runs the steps: container paths in ``params``
            are then compared where they lie on the host.

    Raises:
        ValueError: An output inside a protected location; the message names both.
    """
    from components.locations import check_run_outputs

    check_run_outputs(
        params, {"--pipeline-root": pipeline_root, "--summary": summary or ""},
        (lambda path: docker_runner.host_path(path, docker)) if docker is not None else str,
    )


class RunInterrupted(KeyboardInterrupt):
    """A local run stopped by Ctrl-C (SIGINT); ``str()`` is one line naming the step it stopped
    in and where the finished steps' outputs are. ``run_dir`` as in :class:`PipelineRunError`."""

    def __init__(self, message: str, run_dir: str | None = None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


# kfp.local writes this file into a task's folder when the task has finished (kfp 2.17.3,
# kfp/local/executor_output_utils.py); a task folder without it holds a stopped step's partial outputs.
EXECUTOR_OUTPUT_FILE = "executor_output.json"


def remove_unfinished_tasks(run_dir: str) -> list[str]:
    """Removes the folders of a run's tasks that did not finish (no ``executor_output.json``):
    an interrupted step's partial outputs (a TensorBoard log, half an export) are no artifact.

    Args:
        run_dir: One run's folder under the pipeline root (``<pipeline>-<timestamp>``).

    Returns:
        The names of the tasks removed, sorted.
    """
    removed = []
    for name in sorted(os.listdir(run_dir)):
        task_dir = os.path.join(run_dir, name)
        if os.path.isdir(task_dir) and not os.path.exists(os.path.join(task_dir, EXECUTOR_OUTPUT_FILE)):
            shutil.rmtree(task_dir)
            removed.append(name)
    return removed


def _remove_empty_folders(root: str) -> None:
    """Removes every folder under ``root`` (``root`` included) that holds no file at any depth."""
    for folder, _, _ in sorted(os.walk(root), key=lambda w: -w[0].count(os.sep)):
        try:
            os.rmdir(folder)  # only succeeds on an empty folder
        except OSError:
            pass


def run_local(
    params: dict[str, Any], pipeline_root: str, package_path: str | None = None, docker: DockerOptions | None = None,
    profile: Profile | None = None,
) -> LocalRunResult:
    """Runs the compiled pipeline locally and returns its outputs.

    Args:
        params: Pipeline parameters (snake_case names of ``pipelines.pipeline.PARAMETERS``).
        pipeline_root: Local folder for the run's artifacts (created).
        package_path: A compiled pipeline YAML; default: compile the current pipeline (with
            ``docker.image`` as the component image under the Docker runner).
        docker: Run every step in its container image (``pipelines.docker_runner``); None runs
            the steps as subprocesses of this Python, where the project is installed.
        profile: A cluster profile compiled into the pipeline (not with ``package_path``); see
            :func:`check_profile_locally` for what applies. Its ``pipeline_root`` does not: the
            run writes to the local ``pipeline_root``.

    Raises:
        PipelineRunError: a step failed; the message is ``step <name> failed: <Error>: <message>``.
        RunInterrupted: Ctrl-C (SIGINT) stopped the run; the stopped step's folder is removed.
        ValueError: ``pipeline_root`` is a remote URI (kfp.local would write a local folder
            literally named ``gs:``: kfp 2.17.3 does not write to object storage), or it or
            ``checkpoint_dir`` lies inside the registry or the input data; under the
            Docker runner, a local path parameter the containers cannot see, or a missing image;
            a profile given with ``package_path``, or a profile setting no local runner honours.
        PermissionError: under the Docker runner, a pipeline root the containers cannot write.
        RuntimeError: under the Docker runner, no Docker daemon answers.
    """
    from kfp import components, local

    if "://" in pipeline_root:
        raise ValueError(f"pipeline_root {pipeline_root!r} must be a local folder for run-local")
    if profile is not None:
        if package_path is not None:
            raise ValueError("a profile applies when compiling; it cannot change a compiled --package")
        check_profile_locally(profile, docker)
    check_output_locations(params, pipeline_root, docker=docker)
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

            package_path = compile_pipeline(os.path.join(tmp, "pipeline.yaml"), image=docker.image if docker else None,
                                            profile=profile)
        pipeline = components.load_component_from_file(package_path)
        before = set(os.listdir(pipeline_root))
        if docker is None:
            error_file = os.path.join(tmp, "errors.jsonl")
            runner = local.SubprocessRunner(use_venv=False)
        else:
            # The containers see only the pipeline root: their error reports go there.
            error_file = os.path.join(pipeline_root, f".errors-{os.getpid()}-{time.time_ns()}.jsonl")
            gpu_image = profile.gpu_image if profile is not None and profile.steps["finetune"].accelerator else None
            # The step's TensorFlow log level override (components.step_logging) goes along.
            forwarded = {LOG_LEVEL_ENV: os.environ[LOG_LEVEL_ENV]} if os.environ.get(LOG_LEVEL_ENV) else {}
            runner = docker_runner.make_runner(docker, {ERROR_FILE_ENV: error_file, **forwarded}, (gpu_image,) if gpu_image else ())
        local.init(runner=runner, pipeline_root=pipeline_root, raise_on_error=True)
        # kfp.local warns for every step that its image is not a plain Python image; here the
        # project (what the image holds) is installed in this very environment, so it is moot.
        warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom", category=RuntimeWarning)
        previous = os.environ.get(ERROR_FILE_ENV)
        os.environ[ERROR_FILE_ENV] = error_file  # inherited by the step subprocesses
        try:
            task = pipeline(**params)
        except KeyboardInterrupt as e:
            run_dir = _latest_run_dir(pipeline_root, before)
            stopped = remove_unfinished_tasks(run_dir) if run_dir else []
            for name in set(os.listdir(pipeline_root)) - before:
                _remove_empty_folders(os.path.join(pipeline_root, name))
            run_dir = run_dir if run_dir and os.path.isdir(run_dir) else None
            raise RunInterrupted(
                "the run stopped" + (f" in step {', '.join(stopped)} (its partial outputs removed)" if stopped else "")
                + (f"; the finished steps' outputs are in {run_dir}" if run_dir else "")
                + "; run the same command again to start over"
                + (" (the training resumes from checkpoint_dir)" if params.get("checkpoint_dir") else ""),
                run_dir,
            ) from e
        except Exception as e:
            # kfp.local creates each task's output folders before it runs; a failed task's stay
            # empty. Leave only what was written.
            for name in set(os.listdir(pipeline_root)) - before:
                _remove_empty_folders(os.path.join(pipeline_root, name))
            errors = read_errors(error_file)
            where = {"pipeline_root": pipeline_root, "run_dir": _latest_run_dir(pipeline_root, before)}
            if errors:
                raise step_failed(errors[-1], **where) from e
            raise PipelineRunError(f"pipeline failed: {type(e).__name__}: {one_line(str(e))}", **where) from e
        finally:
            if previous is None:
                os.environ.pop(ERROR_FILE_ENV, None)
            else:
                os.environ[ERROR_FILE_ENV] = previous
            if docker is not None and os.path.exists(error_file):
                os.remove(error_file)
    out = task.outputs
    pushed, not_pushed = pushed_output(out["pushed"], out["reason"])
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
        not_pushed=not_pushed,
        reports=collect_reports(run_dir),
    )


def pushed_output(output: str, reason: str) -> tuple[dict | None, str | None]:
    """The pipeline's ``pushed`` output as ``(pushed, not_pushed)``.

    Args:
        output: The push step's JSON (``components.push.run_push_step``), or ``""`` from the
            not-blessed branch.
        reason: The evaluation's reason (why it was or was not blessed).

    Returns:
        ``({"model", "version", "uri", "alias"}, None)`` when a version was pushed; else
        ``(None, why)``: the push step's ``not_pushed`` (the champion changed since evaluation),
        or ``"not blessed: <reason>"``.
    """
    done = json.loads(output) if output else None
    if done is None:
        return None, f"not blessed: {reason}"
    if done.get("version") is None:
        return None, done["not_pushed"]
    return done, None
