"""Submitting the compiled pipeline to a real Kubeflow Pipelines (KFP v2) API server.

Two entry points, both thin wrappers over ``kfp.Client`` (kfp 2.17.3, REST API ``v2beta1``):

* :func:`submit` starts one run of a compiled pipeline package in an experiment, optionally
  waiting for its final state.
* :func:`schedule` creates a recurring run (a cron trigger) of the same package.

Both read the pipeline package (KFP IR YAML) first and check the parameters against its
``root.inputDefinitions`` (:func:`pipelines.params.check_params`): unknown names, missing
required parameters and values of the wrong type are refused here, with the parameter named,
instead of as an opaque server error or a run that fails minutes later. A cron expression is
checked and normalized to the six-field, seconds-first form the KFP backend reads by
:func:`pipelines.cron.normalize_cron`.

The command line (``kfp-finetune submit`` / ``kfp-finetune schedule``) is added to the main
parser by :func:`add_parser`; it takes the pipeline parameters as ``run-local`` does
(:func:`pipelines.params.add_arguments`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from components.locations import check_run_outputs
from pipelines import errors
from pipelines.cron import normalize_cron
from pipelines.params import PipelinePackage, add_arguments, check_params, params_from_args, read_pipeline_package

DEFAULT_EXPERIMENT = "kfp-finetune"
DEFAULT_TIMEOUT_S = 6 * 60 * 60
DEFAULT_POLL_S = 10.0
TOKEN_ENV = "KFP_TOKEN"

# KFP v2beta1 RuntimeState values after which a run never changes again. kfp.Client's own
# wait_for_run_completion() omits CANCELED (kfp 2.17.3), so a cancelled run would be polled
# until the timeout; this module polls with its own loop for that reason.
FINAL_RUN_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})

# The KFP API server rejects max_concurrency outside 1..10 (backend apiserver validation,
# "Support 1-10"); checked here so the message names the flag before any request is sent.
MAX_CONCURRENCY_RANGE = (1, 10)


# --------------------------------------------------------------------------------------------
# Client calls
# --------------------------------------------------------------------------------------------


def _make_client(host: str, namespace: str | None, existing_token: str | None) -> Any:
    # Imported here: kfp.Client pulls in the REST client and kubernetes, which the rest of the
    # command line never needs.
    import warnings

    import kfp

    token = existing_token or os.environ.get(TOKEN_ENV) or None
    kwargs: dict[str, Any] = {"host": host, "existing_token": token}
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings():
        # kfp.Client always warns that it needs a v2 backend; that is this module's premise.
        warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
        return kfp.Client(**kwargs)


def _ui_url(host: str, fragment: str) -> str:
    return f"{host.rstrip('/')}/#/{fragment}"


def _default_name(package: PipelinePackage) -> str:
    return f"{package.name} {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H-%M-%S}Z"


def wait_for_run(client: Any, run_id: str, timeout_s: float, poll_s: float = DEFAULT_POLL_S) -> str:
    """Polls a run until it reaches a final state.

    Args:
        client: a ``kfp.Client``.
        run_id: the run's id.
        timeout_s: give up after this many seconds.
        poll_s: seconds between two ``GET /apis/v2beta1/runs/{run_id}``.

    Returns:
        The final state: one of :data:`FINAL_RUN_STATES` (``SUCCEEDED``, ``FAILED``,
        ``SKIPPED``, ``CANCELED``).

    Raises:
        TimeoutError: the run is not final after ``timeout_s``; the message has the run id and
            its last state.
        kfp_server_api.ApiException: the server refused the request.
    """
    deadline = time.monotonic() + timeout_s
    state = "UNKNOWN"
    while True:
        run = client.get_run(run_id)
        state = str(run.state or "RUNTIME_STATE_UNSPECIFIED").upper()
        if state in FINAL_RUN_STATES:
            return state
        if time.monotonic() + poll_s > deadline:
            raise TimeoutError(f"run {run_id} still {state} after {timeout_s:g} s")
        time.sleep(poll_s)


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
) -> dict[str, Any]:
    """Starts one run of a compiled pipeline on a KFP API server.

    The experiment is looked up by name and created when missing; the whole pipeline spec is
    sent with the run (no pipeline upload), so the run is exactly the given package.

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

    Returns:
        ``{"run_id", "run_name", "experiment_id", "experiment", "url", "params"}``, plus
        ``"state"`` (a :data:`FINAL_RUN_STATES` value) when ``wait``.

    Raises:
        FileNotFoundError: ``package_path`` does not exist.
        ValueError: the package or a parameter is invalid (see :func:`check_params`).
        TimeoutError: with ``wait``, the run did not end within ``timeout_s``.
        kfp_server_api.ApiException: the server refused a request (status and body inside).
        urllib3.exceptions.HTTPError: the server could not be reached.
    """
    package = read_pipeline_package(package_path)
    arguments = check_params(package, params)
    name = run_name or _default_name(package)
    client = _make_client(host, namespace, existing_token)
    result = client.create_run_from_pipeline_package(
        pipeline_file=package_path,
        arguments=arguments,
        run_name=name,
        experiment_name=experiment,
        namespace=namespace,
    )
    run_info = result.run_info
    summary: dict[str, Any] = {
        "run_id": result.run_id,
        "run_name": name,
        "experiment_id": run_info.experiment_id,
        "experiment": experiment,
        "url": _ui_url(host, f"runs/details/{result.run_id}"),
        "params": arguments,
    }
    if wait:
        summary["state"] = wait_for_run(client, result.run_id, timeout_s=timeout_s, poll_s=poll_s)
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
) -> dict[str, Any]:
    """Creates a recurring run (cron trigger, enabled) of a compiled pipeline.

    Args:
        host: the API server's base URL (see :func:`submit`).
        package_path: the compiled pipeline (KFP IR ``.yaml``); its spec is stored with the
            recurring run.
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

    Returns:
        ``{"recurring_run_id", "job_name", "experiment_id", "experiment", "cron", "cron_note",
        "max_concurrency", "no_catchup", "url", "params"}``; ``cron`` is the six-field form
        sent, ``cron_note`` says how a five-field input was rewritten (else ``None``).

    Raises:
        FileNotFoundError: ``package_path`` does not exist.
        ValueError: invalid cron expression, ``max_concurrency`` outside 1-10, or an invalid
            package or parameter.
        kfp_server_api.ApiException: the server refused a request.
        urllib3.exceptions.HTTPError: the server could not be reached.
    """
    spec = normalize_cron(cron)
    low, high = MAX_CONCURRENCY_RANGE
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or not low <= max_concurrency <= high:
        raise ValueError(f"max_concurrency must be an integer in {low}-{high}, got {max_concurrency!r}")
    package = read_pipeline_package(package_path)
    arguments = check_params(package, params)
    name = job_name or f"{package.name} ({spec.expression})"
    client = _make_client(host, namespace, existing_token)
    experiment_obj = client.create_experiment(name=experiment, namespace=namespace)
    recurring = client.create_recurring_run(
        experiment_id=experiment_obj.experiment_id,
        job_name=name,
        cron_expression=spec.expression,
        max_concurrency=max_concurrency,
        no_catchup=no_catchup,
        params=arguments,
        pipeline_package_path=package_path,
        enabled=True,
    )
    return {
        "recurring_run_id": recurring.recurring_run_id,
        "job_name": name,
        "experiment_id": experiment_obj.experiment_id,
        "experiment": experiment,
        "cron": spec.expression,
        "cron_note": spec.note,
        "max_concurrency": max_concurrency,
        "no_catchup": no_catchup,
        "url": _ui_url(host, f"recurringrun/details/{recurring.recurring_run_id}"),
        "params": arguments,
    }


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="KFP API base URL, e.g. http://localhost:8080")
    parser.add_argument(
        "--package",
        metavar="FILE",
        help="compiled pipeline (.yaml); default: compile the pipeline now into a temporary file",
    )
    parser.add_argument(
        "--image",
        metavar="REF",
        help="component image to compile with (only without --package)",
    )
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment name (default %(default)s)")
    parser.add_argument("--namespace", help="user namespace of a multi-user KFP deployment")
    parser.add_argument(
        "--existing-token",
        metavar="TOKEN",
        help=f"bearer token for the KFP API (default: ${TOKEN_ENV}; prefer the variable, "
        "command lines are visible to other users)",
    )
    add_arguments(parser)


def _with_package(args: argparse.Namespace, action: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    if args.package:
        if args.image:
            raise ValueError("--image applies only when compiling; it cannot change the image of --package")
        return action(args.package)
    # Imported here, not at module import: compiling imports every component module.
    from pipelines.pipeline import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="kfp-finetune-") as tmp:
        path = compile_pipeline(os.path.join(tmp, "pipeline.yaml"), image=args.image)
        return action(path)


def _run_cli(args: argparse.Namespace, action: Callable[[str], dict[str, Any]]) -> int:
    # kfp.Client prints experiment/run links to stdout; they are dropped so that stdout holds
    # only this command's JSON (which has the run's URL) and stderr only our lines.
    with contextlib.redirect_stdout(io.StringIO()):
        result = _with_package(args, action)
    if result.get("cron_note"):
        print(f"note: {result['cron_note']}", file=sys.stderr)
    print(json.dumps(result, indent=2, sort_keys=True))
    # A run that ended badly is not bad input (2) but the job failed: exit 1.
    return errors.EXIT_OK if result.get("state") in (None, "SUCCEEDED") else errors.EXIT_FAILED


@errors.command
def _submit_cli(args: argparse.Namespace) -> int:
    arguments = params_from_args(args)
    check_run_outputs(arguments)
    return _run_cli(
        args,
        lambda path: submit(
            args.host,
            path,
            arguments,
            experiment=args.experiment,
            run_name=args.run_name,
            namespace=args.namespace,
            wait=args.wait,
            timeout_s=args.timeout,
            existing_token=args.existing_token,
        ),
    )


@errors.command
def _schedule_cli(args: argparse.Namespace) -> int:
    arguments = params_from_args(args)
    check_run_outputs(arguments)
    # Validated before compiling so a typo costs nothing.
    normalize_cron(args.cron)
    return _run_cli(
        args,
        lambda path: schedule(
            args.host,
            path,
            arguments,
            cron=args.cron,
            experiment=args.experiment,
            job_name=args.job_name,
            max_concurrency=args.max_concurrency,
            no_catchup=not args.catchup,
            namespace=args.namespace,
            existing_token=args.existing_token,
        ),
    )


def add_parser(subparsers: Any) -> None:
    """Adds the ``submit`` and ``schedule`` commands to an argparse subparsers object.

    Each command sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and
    returning the exit code: 0 done (and, with ``--wait``, the run SUCCEEDED), 1 the awaited run
    ended FAILED/SKIPPED/CANCELED, 2 an error (one ``error: ...`` line on stderr, see
    :mod:`pipelines.errors`). On success the result (see :func:`submit` / :func:`schedule`) is
    printed to stdout as JSON. Pipeline parameters are taken as by ``run-local``:
    ``--config``, ``--param NAME=VALUE`` and one ``--kebab-case`` flag per parameter.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.
    """
    p_submit = subparsers.add_parser(
        "submit",
        help="start a run on a KFP cluster",
        description="Start one run of the pipeline on a KFP API server.",
    )
    _add_common(p_submit)
    p_submit.add_argument("--run-name", help="run display name (default: pipeline name and UTC time)")
    p_submit.add_argument("--wait", action="store_true", help="wait for the run to end; exit 1 unless it SUCCEEDED")
    p_submit.add_argument(
        "--timeout",
        type=int,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="with --wait, give up after this long (default %(default)s)",
    )
    p_submit.set_defaults(func=_submit_cli)

    p_schedule = subparsers.add_parser(
        "schedule",
        help="create a recurring run on a KFP cluster",
        description="Create a recurring run (cron, UTC) of the pipeline on a KFP API server.",
    )
    _add_common(p_schedule)
    p_schedule.add_argument(
        "--cron",
        required=True,
        metavar="EXPR",
        help="6 fields, seconds first ('0 0 3 * * *' = 03:00 UTC daily); 5-field crontab gets '0 ' prefixed",
    )
    p_schedule.add_argument("--job-name", help="recurring run display name")
    p_schedule.add_argument(
        "--max-concurrency", type=int, default=1, help="runs of this schedule at once, 1-10 (default %(default)s)"
    )
    p_schedule.add_argument(
        "--catchup",
        action="store_true",
        help="back-fill every interval missed while paused (default: only the latest)",
    )
    p_schedule.set_defaults(func=_schedule_cli)
