"""The ``kfp-finetune runs`` and ``kfp-finetune schedules`` commands (:mod:`pipelines.runs`).

``runs list | get RUN_ID | cancel RUN_ID`` and ``schedules list | pause ID | resume ID |
delete ID``. Each takes the connection flags of ``submit`` (``--host``, ``--namespace``,
``--existing-token``) and ``--json``: without it stdout is plain text for a person (a table for
the lists, ``field: value`` lines for one item), with it one JSON document (the dicts of
:mod:`pipelines.runs`, keys sorted). The lists take ``--experiment NAME``, ``--page-size N``
(1-200, default 20) and ``--page-token TOKEN`` and are sorted newest first. Errors (an unknown
id, a server that does not answer) are one ``error:`` line and exit 2 (:mod:`pipelines.errors`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from pipelines import errors, runs
from pipelines.kfp_api import add_connection_arguments, make_client

_MISSING = "-"

_RUN_FIELDS = (
    ("run id", "run_id"),
    ("name", "name"),
    ("state", "state"),
    ("experiment id", "experiment_id"),
    ("pipeline id", "pipeline_id"),
    ("version id", "version_id"),
    ("recurring run id", "recurring_run_id"),
    ("service account", "service_account"),
    ("pipeline root", "pipeline_root"),
    ("created (UTC)", "created_at"),
    ("finished (UTC)", "finished_at"),
    ("error", "error"),
    ("url", "url"),
)

_SCHEDULE_FIELDS = (
    ("schedule id", "recurring_run_id"),
    ("name", "name"),
    ("status", "status"),
    ("cron", "cron"),
    ("interval (s)", "interval_s"),
    ("max concurrency", "max_concurrency"),
    ("no catch-up", "no_catchup"),
    ("experiment id", "experiment_id"),
    ("pipeline id", "pipeline_id"),
    ("version id", "version_id"),
    ("service account", "service_account"),
    ("pipeline root", "pipeline_root"),
    ("created (UTC)", "created_at"),
    ("updated (UTC)", "updated_at"),
    ("url", "url"),
)


def _text(value: Any) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(params.items())) or _MISSING


def _fields(item: dict[str, Any], labels: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(label) for label, _ in labels) + 1
    lines = [f"{label + ':':<{width}} {_text(item[key])}" for label, key in labels]
    lines.append(f"{'params:':<{width}} {_params_text(item['params'])}")
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    # The last column (a display name) is not padded, so lines carry no trailing spaces.
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in (header, *rows)]


def _page_footer(result: dict[str, Any], noun: str) -> list[str]:
    token = result["next_page_token"]
    shown = len(result[noun])
    more = [f"more: add --page-token {token}"] if token else []
    return [f"{shown} of {result['total_size']} {noun}", *more]


def _render_run_list(result: dict[str, Any]) -> list[str]:
    if not result["runs"]:
        return ["no runs"]
    rows = [
        [r["run_id"], r["state"], _text(r["created_at"]), _text(r["finished_at"]), _text(r["name"])]
        for r in result["runs"]
    ]
    header = ["RUN ID", "STATE", "CREATED (UTC)", "FINISHED (UTC)", "NAME"]
    return [*_table(header, rows), *_page_footer(result, "runs")]


def _trigger_text(schedule: dict[str, Any]) -> str:
    if schedule["cron"]:
        return schedule["cron"]
    return f"every {schedule['interval_s']}s" if schedule["interval_s"] else _MISSING


def _render_schedule_list(result: dict[str, Any]) -> list[str]:
    if not result["schedules"]:
        return ["no schedules"]
    rows = [
        [
            s["recurring_run_id"],
            s["status"],
            _trigger_text(s),
            _text(s["max_concurrency"]),
            _text(not s["no_catchup"]),
            _text(s["created_at"]),
            _text(s["name"]),
        ]
        for s in result["schedules"]
    ]
    header = ["SCHEDULE ID", "STATUS", "TRIGGER", "CONCURRENCY", "CATCH-UP", "CREATED (UTC)", "NAME"]
    return [*_table(header, rows), *_page_footer(result, "schedules")]


def _execute(
    args: argparse.Namespace,
    action: Callable[[Any], dict[str, Any]],
    render: Callable[[dict[str, Any]], list[str]],
) -> int:
    client = make_client(args.host, args.namespace, args.existing_token)
    result = action(client)
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else "\n".join(render(result)))
    return errors.EXIT_OK


def _lister(kind: str, render: Callable[[dict[str, Any]], list[str]]) -> Callable[[argparse.Namespace], int]:
    @errors.command
    def list_items(args: argparse.Namespace) -> int:
        # Checked before the client is built: a bad size costs no request.
        runs.check_page_size(args.page_size)
        return _execute(
            args,
            lambda client: runs.list_page(
                client, args.host, kind, args.experiment, args.namespace, args.page_size, args.page_token
            ),
            render,
        )

    return list_items


@errors.command
def _runs_get(args: argparse.Namespace) -> int:
    return _execute(args, lambda client: runs.get_run(client, args.host, args.run_id), lambda r: _fields(r, _RUN_FIELDS))


@errors.command
def _runs_cancel(args: argparse.Namespace) -> int:
    return _execute(
        args,
        lambda client: runs.cancel_run(client, args.host, args.run_id),
        lambda r: [f"cancel requested: run {r['run_id']} is {r['state']}", *_fields(r, _RUN_FIELDS)[1:]],
    )


def _schedule_switch(enabled: bool) -> Callable[[argparse.Namespace], int]:
    done = "resumed" if enabled else "paused"

    @errors.command
    def switch(args: argparse.Namespace) -> int:
        return _execute(
            args,
            lambda client: runs.set_schedule_enabled(client, args.host, args.schedule_id, enabled),
            lambda s: [f"{done}: schedule {s['recurring_run_id']} is {s['status']}", *_fields(s, _SCHEDULE_FIELDS)[1:]],
        )

    return switch


@errors.command
def _schedules_delete(args: argparse.Namespace) -> int:
    return _execute(
        args,
        lambda client: runs.delete_schedule(client, args.schedule_id),
        lambda r: [f"deleted: schedule {r['recurring_run_id']} (its past runs stay)"],
    )


def _action(
    group: Any, name: str, help_text: str, func: Callable[[argparse.Namespace], int], id_name: str | None = None
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
    add_connection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    if id_name:
        parser.add_argument(id_name, metavar=id_name.upper())
    else:
        parser.add_argument("--experiment", metavar="NAME", help="only those of this experiment (default: all)")
        low, high = runs.PAGE_SIZE_RANGE
        parser.add_argument(
            "--page-size",
            type=int,
            default=runs.DEFAULT_PAGE_SIZE,
            metavar="N",
            help=f"items per page, {low}-{high} (default %(default)s); newest first",
        )
        parser.add_argument("--page-token", default="", metavar="TOKEN", help="the next page, as printed by the previous one")
    parser.set_defaults(func=func)
    return parser


def add_parser(subparsers: Any) -> None:
    """Adds the ``runs`` and ``schedules`` command groups to an argparse subparsers object.

    Each action sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and
    returning the exit code: 0 done, 2 an error (one ``error: ...`` line on stderr, see
    :mod:`pipelines.errors`), e.g. ``KFP API answered 404 Not Found`` for an unknown id or
    ``cannot reach KFP at <host>``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.
    """
    group = subparsers.add_parser(
        "runs", help="list, show and cancel runs on a KFP cluster", description="Runs on a KFP API server."
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    _action(group, "list", "list runs, newest first", _lister("runs", _render_run_list))
    _action(group, "get", "show one run", _runs_get, "run_id")
    _action(group, "cancel", "cancel (terminate) a run", _runs_cancel, "run_id")

    group = subparsers.add_parser(
        "schedules",
        help="list, pause, resume and delete recurring runs on a KFP cluster",
        description="Recurring runs (schedules) on a KFP API server.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    _action(group, "list", "list recurring runs, newest first", _lister("schedules", _render_schedule_list))
    _action(group, "pause", "pause (disable) a recurring run", _schedule_switch(enabled=False), "schedule_id")
    _action(group, "resume", "resume (enable) a recurring run", _schedule_switch(enabled=True), "schedule_id")
    _action(group, "delete", "delete a recurring run; its past runs stay", _schedules_delete, "schedule_id")
