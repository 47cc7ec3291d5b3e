"""``run-local``: the compiled pipeline executed on this machine by ``kfp.local``.

The steps run as subprocesses of this Python (``SubprocessRunner(use_venv=False)``: the project is
installed here, and a per-task venv would reinstall TensorFlow for every step, see TRAPS.md).
Accelerator settings are ignored by local runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import tempfile
import time
import warnings
from typing import Any

from components.step_errors import ERROR_FILE_ENV, read_errors


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

    def summary(self) -> dict[str, Any]:
        """``status``, ``metrics`` (accuracy, macro_f1), ``blessed``, ``reason``, ``pushed``
        (model, version, uri, alias, or None), ``pipeline_root``, ``run_dir``, ``seconds``."""
        return {
            "status": self.status,
            "metrics": {"accuracy": self.accuracy, "macro_f1": self.macro_f1},
            "blessed": self.blessed,
            "reason": self.reason,
            "pushed": self.pushed,
            "pipeline_root": self.pipeline_root,
            "run_dir": self.run_dir,
            "seconds": self.seconds,
        }


def _latest_run_dir(pipeline_root: str, before: set[str]) -> str | None:
    if not os.path.isdir(pipeline_root):
        return None
    new = sorted(set(os.listdir(pipeline_root)) - before)
    return os.path.join(pipeline_root, new[-1]) if new else None


def step_settings(params: dict[str, Any]) -> tuple[Any, Any]:
    """``(PreprocessSettings, FinetuneSettings)`` from pipeline parameters, as the components
    build them (``beam_pipeline_args`` split like a shell line); a parameter left out takes the
    settings' default.

    Raises:
        ValueError: an invalid preprocess or finetune setting (named, with the allowed values).
    """
    from components import finetune, preprocess

    def pick(cls: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        return {f.name: params[f.name] for f in dataclasses.fields(cls) if f.name in params and f.name not in skip}

    pre = preprocess.PreprocessSettings(**pick(preprocess.PreprocessSettings, ("beam_pipeline_args",)),
                                        beam_pipeline_args=tuple(shlex.split(params.get("beam_pipeline_args", ""))))
    return pre, finetune.settings_from_parameters(**pick(finetune.FinetuneSettings))


def check_settings(params: dict[str, Any]) -> None:
    """Validates the steps' settings before a run starts, so a typo fails in a second instead of
    after preprocessing (the steps validate again, for runs started elsewhere).

    Raises:
        ValueError: an invalid preprocess or finetune setting (named, with the allowed values).
        FileNotFoundError: a local ``base_weights`` file that does not exist.
    """
    from components import preprocess
    from components.base_models import check_image_size

    pre, settings = step_settings(params)
    check_image_size(settings.base_model, int(params.get("image_size", 224)))
    source = settings.base_weights
    if source.lower() not in ("imagenet", "none") and "://" not in source and not os.path.isfile(source):
        raise FileNotFoundError(f"base_weights file {source!r} does not exist")
    preprocess.check_beam_args(pre.beam_pipeline_args)
    # The evaluate and push steps' settings, checked here rather than after training.
    from components.registry import validate_name

    for name, low, high in (("min_accuracy", 0.0, 1.0), ("champion_tolerance", 0.0, 1.0)):
        if name in params and not low <= float(params[name]) <= high:
            raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {params[name]}")
    if "model_name" in params:
        validate_name(params["model_name"], "model_name")
    if "target_env" in params:
        validate_name(params["target_env"], "target_env")
    registry_uri = str(params.get("registry_uri") or "")
    if registry_uri and "://" not in registry_uri and os.path.isfile(registry_uri):
        raise ValueError(f"registry_uri {registry_uri!r} is a file; use a folder (created by the first push) or gs://bucket/prefix")
    if int(params.get("accelerator_count", 0)) < 0:
        raise ValueError(f"accelerator_count must be >= 0 (0: CPU), got {params['accelerator_count']}")


def _remove_empty_folders(root: str) -> None:
    """Removes every folder under ``root`` (``root`` included) that holds no file at any depth."""
    for folder, _, _ in sorted(os.walk(root), key=lambda w: -w[0].count(os.sep)):
        try:
            os.rmdir(folder)  # only succeeds on an empty folder
        except OSError:
            pass


def run_local(params: dict[str, Any], pipeline_root: str, package_path: str | None = None) -> LocalRunResult:
    """Runs the compiled pipeline locally and returns its outputs.

    Args:
        params: Pipeline parameters (snake_case names of ``pipelines.pipeline.PARAMETERS``).
        pipeline_root: Local folder for the run's artifacts (created).
        package_path: A compiled pipeline YAML; default: compile the current pipeline.

    Raises:
        PipelineRunError: a step failed; the message is ``step <name> failed: <Error>: <message>``.
        ValueError: ``pipeline_root`` is a remote URI (kfp.local would write a local folder
            literally named ``gs:``, see TRAPS.md).
    """
    from kfp import components, local

    if "://" in pipeline_root:
        raise ValueError(f"pipeline_root {pipeline_root!r} must be a local folder for run-local")
    pipeline_root = os.path.abspath(pipeline_root)
    os.makedirs(pipeline_root, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kfp-finetune-") as tmp:
        if package_path is None:
            from pipelines.pipeline import compile_pipeline

            package_path = compile_pipeline(os.path.join(tmp, "pipeline.yaml"))
        pipeline = components.load_component_from_file(package_path)
        error_file = os.path.join(tmp, "errors.jsonl")
        before = set(os.listdir(pipeline_root))
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root, raise_on_error=True)
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
    out = task.outputs
    pushed = json.loads(out["pushed"]) if out["pushed"] else None
    return LocalRunResult(
        status="succeeded",
        blessed=bool(out["blessed"]),
        reason=out["reason"],
        accuracy=float(out["accuracy"]),
        macro_f1=float(out["macro_f1"]),
        pushed=pushed,
        pipeline_root=pipeline_root,
        run_dir=_latest_run_dir(pipeline_root, before),
        seconds=round(time.perf_counter() - start, 1),
    )
