"""The ``kfp-finetune submit`` and ``kfp-finetune schedule`` commands (:mod:`pipelines.remote`).

Both take the connection flags of :func:`pipelines.kfp_api.add_connection_arguments`, the
pipeline parameters as ``run-local`` does (:func:`pipelines.params.add_arguments`), a compiled
``--package`` or ``--image`` to compile with, ``--experiment``, ``--pipeline-name``,
``--service-account``, ``--pipeline-root`` and ``--profile`` (a cluster profile,
:mod:`pipelines.profiles`: compiled into the package; its ``service_account`` and
``pipeline_root`` are the defaults of the two flags, and the run's local paths must lie on its
volumes). Everything that needs no server (parameters, cron,
service account, pipeline root) is checked before the pipeline is compiled.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from components.locations import check_run_outputs
from pipelines import errors, remote
from pipelines.cron import normalize_cron
from pipelines.kfp_api import add_connection_arguments
from pipelines.params import add_arguments, params_from_args


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
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
    parser.add_argument(
        "--profile",
        metavar="NAME|FILE",
        help="cluster profile to compile with: kind, gke, eks or a YAML file (only without --package; "
        "its service_account and pipeline_root are the defaults of the flags below)",
    )
    parser.add_argument("--experiment", default=remote.DEFAULT_EXPERIMENT, help="experiment name (default %(default)s)")
    parser.add_argument(
        "--pipeline-name",
        metavar="NAME",
        help="pipeline to add the package to as a version (default: the package's pipeline name)",
    )
    parser.add_argument(
        "--service-account",
        metavar="NAME",
        help="Kubernetes service account of the run's pods (default: the KFP server's, pipeline-runner)",
    )
    parser.add_argument(
        "--pipeline-root",
        metavar="URI",
        help="where the run's artifacts go, e.g. gs://bucket/root (default: the package's, else the server's)",
    )
    add_arguments(parser)


def _load_profile(args: argparse.Namespace) -> Any:
    """The ``--profile`` of the command (a :class:`pipelines.profiles.Profile`) or None.

    Raises:
        ValueError: ``--profile`` with ``--package`` (the package was compiled already);
            :func:`pipelines.profiles.load_profile`'s errors.
    """
    if not args.profile:
        return None
    if args.package:
        raise ValueError("--profile applies only when compiling; compile the package with `kfp-finetune compile "
                         "--profile` instead of passing --profile with --package")
    from pipelines.profiles import load_profile

    return load_profile(args.profile)


def _cluster_kwargs(args: argparse.Namespace, profile: Any = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``submit`` and ``schedule`` take alike from the command line, checked before compiling.

    ``--service-account`` and ``--pipeline-root`` win over the profile's; with a profile, the
    run's local paths must lie on its volumes (:func:`pipelines.profile_apply.check_run_paths`).

    Returns:
        ``experiment``, ``namespace``, ``existing_token``, ``pipeline_name``,
        ``service_account`` and ``pipeline_root`` for :func:`pipelines.remote.submit` and
        :func:`pipelines.remote.schedule`.

    Raises:
        ValueError: a bad service account or pipeline root (:func:`pipelines.remote.check_run_identity`),
            a local path on no volume of the profile.
    """
    identity = {
        "service_account": args.service_account or (profile.service_account if profile else None),
        "pipeline_root": args.pipeline_root or (profile.pipeline_root if profile else None),
    }
    if profile is not None:
        from pipelines.profile_apply import check_run_paths

        check_run_paths(profile, params or {})
    remote.check_run_identity(**identity)
    return {
        "experiment": args.experiment,
        "namespace": args.namespace,
        "existing_token": args.existing_token,
        "pipeline_name": args.pipeline_name,
        **identity,
    }


def _with_package(args: argparse.Namespace, action: Callable[[str], dict[str, Any]], profile: Any = None) -> dict[str, Any]:
    if args.package:
        if args.image:
            raise ValueError("--image applies only when compiling; it cannot change the image of --package")
        return action(args.package)
    # Imported here, not at module import: compiling imports every component module.
    from pipelines.pipeline import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="kfp-finetune-") as tmp:
        path = compile_pipeline(os.path.join(tmp, "pipeline.yaml"), image=args.image, profile=profile)
        return action(path)


def _run_cli(args: argparse.Namespace, action: Callable[[str], dict[str, Any]], profile: Any = None) -> int:
    # kfp.Client prints experiment/run links to stdout; they are dropped so that stdout holds
    # only this command's JSON (which has the run's URL) and stderr only our lines.
    with contextlib.redirect_stdout(io.StringIO()):
        result = _with_package(args, action, profile)
    if result.get("cron_note"):
        print(f"note: {result['cron_note']}", file=sys.stderr)
    if result.get("next_fire_times_utc"):
        print(f"next runs (UTC): {', '.join(result['next_fire_times_utc'])}", file=sys.stderr)
    print(json.dumps(result, indent=2, sort_keys=True))
    # A run that ended badly is not bad input (2) but the job failed: exit 1.
    return errors.EXIT_OK if result.get("state") in (None, "SUCCEEDED") else errors.EXIT_FAILED


@errors.command
def _submit_cli(args: argparse.Namespace) -> int:
    arguments = params_from_args(args)
    check_run_outputs(arguments)
    profile = _load_profile(args)
    shared = _cluster_kwargs(args, profile, arguments)
    return _run_cli(
        args,
        lambda path: remote.submit(
            args.host, path, arguments, run_name=args.run_name, wait=args.wait, timeout_s=args.timeout, **shared
        ),
        profile,
    )


@errors.command
def _schedule_cli(args: argparse.Namespace) -> int:
    arguments = params_from_args(args)
    check_run_outputs(arguments)
    # Validated before compiling so a typo costs nothing.
    normalize_cron(args.cron)
    profile = _load_profile(args)
    shared = _cluster_kwargs(args, profile, arguments)
    return _run_cli(
        args,
        lambda path: remote.schedule(
            args.host,
            path,
            arguments,
            cron=args.cron,
            job_name=args.job_name,
            max_concurrency=args.max_concurrency,
            no_catchup=not args.catchup,
            **shared,
        ),
        profile,
    )


def add_parser(subparsers: Any) -> None:
    """Adds the ``submit`` and ``schedule`` commands to an argparse subparsers object.

    Each command sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and
    returning the exit code: 0 done (and, with ``--wait``, the run SUCCEEDED), 1 the awaited run
    ended FAILED/SKIPPED/CANCELED, 2 an error (one ``error: ...`` line on stderr, see
    :mod:`pipelines.errors`). On success the result (see :func:`submit` / :func:`schedule`) is
    printed to stdout as JSON; ``schedule`` also prints its next three fire times (UTC) on
    stderr. Pipeline parameters are taken as by ``run-local``:
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
        default=remote.DEFAULT_TIMEOUT_S,
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
