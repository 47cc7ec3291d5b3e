"""Applying a cluster profile (``pipelines.profiles``) to the pipeline's tasks when compiling.

``pipelines.pipeline.make_pipeline(image, profile)`` wires the tasks, then hands them to
:func:`apply_profile` by step name; the settings go into the compiled YAML through KFP's task
methods (``deploymentSpec.executors``: resources, image, environment; the task's
``retryPolicy``) and kfp-kubernetes (the ``platforms.kubernetes`` section: volumes, secrets,
node selectors, tolerations, pull secrets and policy, ``activeDeadlineSeconds``). What a
profile sets that the compiled YAML cannot hold, the run's service account, is passed with
each run by ``submit``/``schedule``. The pipeline root goes into ``defaultPipelineRoot`` (see
``pipelines.pipeline``) and also with each run. :func:`check_run_paths` checks a run's
parameters against the profile's volumes before it is sent.

Nothing here reads the environment: a credential file named by the compiling machine's
``GOOGLE_APPLICATION_CREDENTIALS`` never reaches the YAML (a test holds this).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfp import kubernetes
from kfp.dsl import PipelineTask

from pipelines.profiles import STORAGE_STEPS, Profile, StepSettings

CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"


def parameter_defaults(profile: Profile) -> dict[str, Any]:
    """Pipeline parameter defaults a profile changes: a profile whose finetune step has an
    accelerator makes it the run form's default (``accelerator_type``, ``accelerator_count``),
    so a run on that cluster asks for the GPU its finetune step is placed and built for; a run
    can still ask for another count. Empty when the profile sets no accelerator."""
    accelerator = profile.steps["finetune"].accelerator
    if accelerator is None:
        return {}
    return {"accelerator_type": accelerator.type, "accelerator_count": accelerator.count}


def apply_profile(tasks: Mapping[str, PipelineTask], profile: Profile) -> None:
    """Sets a profile's settings on the pipeline's tasks (in place).

    Args:
        tasks: Step name (``pipelines.profiles.STEPS``) -> the KFP task of that step, as wired by
            the pipeline function; every step must be present.

    Raises:
        KeyError: a step of ``STEPS`` is missing from ``tasks``, or ``tasks`` has another name.
    """
    missing = set(profile.steps) ^ set(tasks)
    if missing:
        raise KeyError(f"apply_profile needs exactly the tasks of steps {sorted(profile.steps)}; differs in {sorted(missing)}")
    for step, task in tasks.items():
        _apply_step(task, profile.steps[step])
        if profile.image_pull_secrets:
            kubernetes.set_image_pull_secrets(task, list(profile.image_pull_secrets))
        if profile.image_pull_policy is not None:
            kubernetes.set_image_pull_policy(task, profile.image_pull_policy)
        for volume in profile.volumes:
            if step in volume.steps:
                kubernetes.mount_pvc(task, pvc_name=volume.claim, mount_path=volume.mount_path)
        credentials = profile.gcs_credentials
        if credentials.mode == "secret" and step in STORAGE_STEPS:
            kubernetes.use_secret_as_volume(task, secret_name=credentials.secret_name, mount_path=credentials.mount_path)
            task.set_env_variable(CREDENTIALS_ENV, credentials.key_file)
    if profile.steps["finetune"].accelerator is not None:
        # The CPU image has no CUDA libraries: a GPU finetune step needs the GPU image.
        tasks["finetune"].set_container_image(profile.gpu_image)


def _apply_step(task: PipelineTask, settings: StepSettings) -> None:
    r = settings.resources
    for value, setter in ((r.cpu_request, task.set_cpu_request), (r.cpu_limit, task.set_cpu_limit),
                          (r.memory_request, task.set_memory_request), (r.memory_limit, task.set_memory_limit)):
        if value is not None:
            setter(value)
    if settings.retry is not None:
        t = settings.retry
        task.set_retry(num_retries=t.num_retries, backoff_duration=t.backoff_duration, backoff_factor=t.backoff_factor,
                       backoff_max_duration=t.backoff_max_duration)
    if settings.timeout_seconds is not None:
        kubernetes.set_timeout(task, settings.timeout_seconds)
    for key, value in settings.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in settings.tolerations:
        kubernetes.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect,
                                  toleration_seconds=tol.toleration_seconds)
    for name, value in settings.env.items():
        task.set_env_variable(name, value)


# The pipeline parameters that can name a local path, and the steps that read or write it.
PATH_PARAMETERS = {"data_uri": ("preprocess",), "registry_uri": ("preprocess", "evaluate", "push"),
                   "base_weights": ("finetune",), "checkpoint_dir": ("finetune",)}


def check_run_paths(profile: Profile, params: Mapping[str, Any]) -> None:
    """Refuses run parameters that name a local path no volume of ``profile`` holds in a step that
    reads or writes it: in a pod, such a path is the container's own filesystem, so data is not
    found, and a registry or checkpoints written there are lost when the pod ends (after all the
    training). For ``submit``/``schedule`` to call before sending a run compiled with ``profile``.

    Args:
        profile: The profile the run's package was compiled with.
        params: Pipeline parameters; URIs (``gs://...``), ``imagenet``/``none`` weights and empty
            values are not paths.

    Raises:
        ValueError: names the parameter, its value, the step and the mount paths there.
    """
    for name, steps in PATH_PARAMETERS.items():
        value = str(params.get(name) or "")
        if not value or "://" in value or (name == "base_weights" and value.lower() in ("imagenet", "none")):
            continue
        for step in steps:
            mounted = [vol.mount_path for vol in profile.volumes if step in vol.steps]
            if not any(value == m or value.startswith(m + "/") for m in mounted):
                raise ValueError(f"{name} {value!r} is on no volume of profile {profile.name} in step {step} (mounted there: "
                                 f"{', '.join(mounted) or 'none'}): a pod's own filesystem is lost when it ends; use a path "
                                 "under a mounted volume, or a gs:// URI")
