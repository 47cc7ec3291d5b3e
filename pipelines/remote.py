"""Submitting the compiled pipeline to a real Kubeflow Pipelines (KFP v2) API server.

Two entry points, both thin wrappers over ``kfp.Client`` (kfp 2.17.3, REST API ``v2beta1``):

* :func:`submit` starts one run of a compiled pipeline package in an experiment, optionally
  waiting for its final state.
* :func:`schedule` creates a recurring run (a cron trigger) of the same package.

Both first make the package a *pipeline version* on the server
(:func:`pipelines.versions.ensure_pipeline_version`): a named pipeline (``--pipeline-name``,
default the package's ``pipelineInfo.name``) and a version named by the package's content
(``sha256-<12 hex>``), reused when the same content was uploaded before. The run or recurring run
starts from that version, so it shows under Pipelines in the KFP UI. The run's Kubernetes service
account and its ``pipeline_root`` go to the server with it.

Both read the pipeline package (KFP IR YAML) first and check the parameters against its
``root.inputDefinitions`` (:func:`pipelines.params.check_params`): unknown names, missing
required parameters and values of the wrong type are refused here, with the parameter named,
instead of as an opaque server error or a run that fails minutes later. A cron expression is
checked and normalized to the six-field, seconds-first form the KFP backend reads by
:func:`pipelines.cron.normalize_cron`, and its next fire times are computed by
:func:`pipelines.cron.next_fire_times`.

The command line (``kfp-finetune submit`` / ``kfp-finetune schedule``) is
:mod:`pipelines.remote_cli`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any

from pipelines.cron import next_fire_times, normalize_cron
from pipelines.kfp_api import make_client, ui_url
from pipelines.params import PipelinePackage, check_params, read_pipeline_package
from pipelines.runs import DEFAULT_POLL_S, wait_for_run
from pipelines.versions import PipelineVersionRef, ensure_pipeline_version

DEFAULT_EXPERIMENT = "kfp-finetune"
DEFAULT_TIMEOUT_S = 6 * 60 * 60
NEXT_FIRE_COUNT = 3

# The KFP API server rejects max_concurrency outside 1..10 (backend apiserver validation,
# "Support 1-10"); checked here so the message names the flag before any request is sent.
MAX_CONCURRENCY_RANGE = (1, 10)

# A Kubernetes ServiceAccount name is a DNS-1123 subdomain: lowercase alphanumerics, '-' and
# '.', starting and ending alphanumeric, at most 253 characters.
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_SERVICE_ACCOUNT_CHARS = 253
# KFP writes artifacts under pipeline_root through its object-store clients (gs://, s3://,
# minio://, ...): a URI with a scheme; a bare local path would name a folder inside each pod.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def check_run_identity(service_account: str | None, pipeline_root: str | None) -> None:
    """Refuses a service account or pipeline root the cluster could not use, before any request.

    Args:
        service_account: the Kubernetes ServiceAccount the run's pods run as, or ``None`` for
            the server's default (``pipeline-runner`` in standalone KFP).
        pipeline_root: where the run's artifacts go, a URI such as ``gs://bucket/root``, or
            ``None`` for the package's (or else the server's) default.

    Raises:
        ValueError: the service account is not a DNS-1123 subdomain of at most 253 characters,
            or the pipeline root is not a ``scheme://...`` URI without spaces; the message names
            the flag and the value.
    """
    if service_account is not None and (
        len(service_account) > _MAX_SERVICE_ACCOUNT_CHARS or not _DNS1123_SUBDOMAIN.fullmatch(service_account)
    ):
        raise ValueError(
            f"--service-account {service_account!r} is not a Kubernetes service account name "
            "(lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)"
        )
    if pipeline_root is not None and not _URI.fullmatch(pipeline_root):
        raise ValueError(
            f"--pipeline-root {pipeline_root!r} is not a URI such as gs://bucket/root, s3://bucket/root or minio://bucket/root"
        )


@dataclasses.dataclass(frozen=True)
class _Prepared:
    package: PipelinePackage
    arguments: dict[str, Any]
    client: Any
    experiment_id: str
    version: PipelineVersionRef
    service_account: str | None
    pipeline_root: str | None

    def source(self) -> dict[str, Any]:
        """What a run and a recurring run take alike: experiment, version, parameters, identity."""
        return {
            "experiment_id": self.experiment_id,
            "params": self.arguments,
            "pipeline_id": self.version.pipeline_id,
            "version_id": self.version.version_id,
            "pipeline_root": self.pipeline_root,
            "service_account": self.service_account,
        }


def _prepare(
    host: str,
    package_path: str,
    params: Mapping[str, Any],
    experiment: str,
    namespace: str | None,
    existing_token: str | None,
    pipeline_name: str | None,
    service_account: str | None,
    pipeline_root: str | None,
) -> _Prepared:
    # Every check that needs no server comes before the first request.
    check_run_identity(service_account, pipeline_root)
    package = read_pipeline_package(package_path)
    arguments = check_params(package, params)
    _check_settings(package, arguments)
    client = make_client(host, namespace, existing_token)
    experiment_obj = client.create_experiment(name=experiment, namespace=namespace)
    version = ensure_pipeline_version(
        client,
        package_path,
        pipeline_name or package.name,
        namespace=namespace,
        description=f"Compiled {package.name!r} packages; each version is named sha256-<12 hex> of its content.",
    )
    return _Prepared(package, arguments, client, experiment_obj.experiment_id, version, service_account, pipeline_root)


def _check_settings(package: PipelinePackage, arguments: Mapping[str, Any]) -> None:
    """Checks the values as the steps will (ranges, choices: ``dropout`` in [0, 1)), before any
    request, when the package is this project's pipeline; another pipeline's are its own affair.

    Raises:
        ValueError: an invalid setting, named with what is allowed.
    """
    from pipelines.local import step_settings
    from pipelines.pipeline import PARAMETERS

    if set(package.parameters) <= set(PARAMETERS):
        step_settings(dict(arguments))


def _common_summary(host: str, prepared: _Prepared, experiment: str) -> dict[str, Any]:
    version = prepared.version
    return {
        "experiment_id": prepared.experiment_id,
        "experiment": experiment,
        "pipeline_id": version.pipeline_id,
        "pipeline_name": version.pipeline_name,
        "version_id": version.version_id,
        "version_name": version.version_name,
        "version_created": version.created,
        "pipeline_url": ui_url(host, f"pipelines/details/{version.pipeline_id}/version/{version.version_id}"),
        "service_account": prepared.service_account,
        "pipeline_root": prepared.pipeline_root,
        "params": prepared.arguments,
    }


def _default_name(package: PipelinePackage) -> str:
    return f"{package.name} {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H-%M-%S}Z"


def submit(
    host: str,
    package_path: str,
    params: Mapping[str, Any],
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    namespace: str | None = None,
    wait: bool = False,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    *,
    existing_token: str | None = None,
    poll_s: float = DEFAULT_POLL_S,
    pipeline_name: str | None = None,
    service_account: str | None = None,
    pipeline_root: str | None = None,
) -> dict[str, Any]:
    """Starts one run of a compiled pipeline on a KFP API server, from a pipeline version.

    The experiment is looked up by name and created when missing; the package becomes a version
    of the named pipeline (see :func:`pipelines.versions.ensure_pipeline_version`) and the run
    references that version.

    Args:
        host: the API server's base URL, e.g. ``http://localhost:8080`` (the ``ml-pipeline-ui``
            service port-forwarded, which proxies ``/apis``) or ``http://localhost:8888``
            (``ml-pipeline`` itself).
        package_path: the compiled pipeline (KFP IR ``.yaml``).
        params: pipeline parameters (see :func:`check_params`); pipeline defaults fill the rest.
        experiment: experiment display name.
        run_name: run display name; default ``"<pipeline name> <UTC time>"``.
        namespace: Kubernetes namespace of a multi-user deployment; ``None`` for standalone KFP.
        wait: poll the run until it ends.
        timeout_s: with ``wait``, seconds to wait before raising ``TimeoutError``.
        existing_token: bearer token for the API; default the ``KFP_TOKEN`` environment
            variable (read at call time), else none.
        poll_s: with ``wait``, seconds between two polls.
        pipeline_name: the pipeline's display name on the server; default the package's
            ``pipelineInfo.name``.
        service_account: the Kubernetes service account of the run's pods (the run's
            ``service_account``); ``None``: the server's default.
        pipeline_root: the run's artifact root (``runtime_config.pipeline_root``), e.g.
            ``gs://bucket/root``; ``None``: the package's, else the server's default.

    Returns:
        ``{"run_id", "run_name", "url", "experiment_id", "experiment", "pipeline_id",
        "pipeline_name", "version_id", "version_name", "version_created", "pipeline_url",
        "service_account", "pipeline_root", "params"}``, plus ``"state"`` (a
        :data:`pipelines.runs.FINAL_RUN_STATES` value) when ``wait``.

    Raises:
        FileNotFoundError: ``package_path`` does not exist.
        ValueError: the package, a parameter, the service account or the pipeline root is
            invalid (see :func:`check_params`, :func:`check_run_identity`).
        TimeoutError: with ``wait``, the run did not end within ``timeout_s``.
        kfp_server_api.ApiException: the server refused a request (status and body inside).
        urllib3.exceptions.HTTPError: the server could not be reached.
    """
    prepared = _prepare(
        host, package_path, params, experiment, namespace, existing_token, pipeline_name, service_account, pipeline_root
    )
    name = run_name or _default_name(prepared.package)
    run = prepared.client.run_pipeline(job_name=name, **prepared.source())
    summary: dict[str, Any] = {
        "run_id": run.run_id,
        "run_name": name,
        "url": ui_url(host, f"runs/details/{run.run_id}"),
        **_common_summary(host, prepared, experiment),
    }
    if wait:
        summary["state"] = wait_for_run(prepared.client, run.run_id, timeout_s=timeout_s, poll_s=poll_s)
    return summary


def schedule(
    host: str,
    package_path: str,
    params: Mapping[str, Any],
    cron: str,
    experiment: str = DEFAULT_EXPERIMENT,
    job_name: str | None = None,
    max_concurrency: int = 1,
    no_catchup: bool = True,
    namespace: str | None = None,
    *,
    existing_token: str | None = None,
    pipeline_name: str | None = None,
    service_account: str | None = None,
    pipeline_root: str | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Creates a recurring run (cron trigger, enabled) of a compiled pipeline, from a pipeline version.

    Args:
        host: the API server's base URL (see :func:`submit`).
        package_path: the compiled pipeline (KFP IR ``.yaml``); it becomes a pipeline version
            as in :func:`submit`, and the recurring run references that version.
        params: pipeline parameters (see :func:`check_params`).
        cron: a cron expression, validated and normalized by :func:`normalize_cron` before any
            request (6 fields seconds first, or 5 fields which get ``"0 "`` prefixed). UTC.
        experiment: experiment display name (created when missing).
        job_name: recurring run display name; default ``"<pipeline name> (<cron>)"``.
        max_concurrency: how many runs of this schedule may run at once, 1-10 (the server's
            limit).
        no_catchup: True: after a pause only the latest missed interval runs; False: every
            missed interval is back-filled.
        namespace: Kubernetes namespace of a multi-user deployment; ``None`` for standalone KFP.
        existing_token: bearer token; default the ``KFP_TOKEN`` environment variable.
        pipeline_name: the pipeline's display name; default the package's name.
        service_account: the Kubernetes service account of every run's pods.
        pipeline_root: every run's artifact root, e.g. ``gs://bucket/root``.
        now: the time the next fire times count from; default the current time.

    Returns:
        ``{"recurring_run_id", "job_name", "url", "cron", "cron_note", "next_fire_times_utc",
        "max_concurrency", "no_catchup"}`` and the keys :func:`submit` shares (``experiment_id``
        ... ``params``); ``cron`` is the six-field form sent, ``cron_note`` says how a five-field
        input was rewritten (else ``None``), ``next_fire_times_utc`` the next three fire times
        as ``"YYYY-MM-DDTHH:MM:SSZ"``.

    Raises:
        FileNotFoundError: ``package_path`` does not exist.
        ValueError: invalid cron expression, ``max_concurrency`` outside 1-10, or an invalid
            package, parameter, service account or pipeline root.
        kfp_server_api.ApiException: the server refused a request.
        urllib3.exceptions.HTTPError: the server could not be reached.
    """
    spec = normalize_cron(cron)
    low, high = MAX_CONCURRENCY_RANGE
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or not low <= max_concurrency <= high:
        raise ValueError(f"max_concurrency must be an integer in {low}-{high}, got {max_concurrency!r}")
    fire_times = next_fire_times(spec.expression, NEXT_FIRE_COUNT, after=now)
    prepared = _prepare(
        host, package_path, params, experiment, namespace, existing_token, pipeline_name, service_account, pipeline_root
    )
    name = job_name or f"{prepared.package.name} ({spec.expression})"
    recurring = prepared.client.create_recurring_run(
        job_name=name,
        cron_expression=spec.expression,
        max_concurrency=max_concurrency,
        no_catchup=no_catchup,
        enabled=True,
        **prepared.source(),
    )
    return {
        "recurring_run_id": recurring.recurring_run_id,
        "job_name": name,
        "url": ui_url(host, f"recurringrun/details/{recurring.recurring_run_id}"),
        "cron": spec.expression,
        "cron_note": spec.note,
        "next_fire_times_utc": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in fire_times],
        "max_concurrency": max_concurrency,
        "no_catchup": no_catchup,
        **_common_summary(host, prepared, experiment),
    }
