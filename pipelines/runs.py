"""Runs and recurring runs (schedules) on a KFP API server: list, look at, cancel, pause, resume, delete.

Each function takes a ``kfp.Client`` (see :func:`pipelines.kfp_api.make_client`) and returns
plain JSON-ready dicts, the same ones ``kfp-finetune runs ... --json`` and ``kfp-finetune
schedules ... --json`` print (:mod:`pipelines.runs_cli`). Times are ISO 8601 UTC text
(:func:`pipelines.kfp_api.utc_text`). Lists are sorted newest first (``sort_by=created_at desc``)
and paged: a page holds ``page_size`` items (1-200; the KFP server caps pages at 200) and
``next_page_token`` fetches the next one.

Requests (REST ``v2beta1``): ``GET /runs``, ``GET /runs/{id}``, ``POST /runs/{id}:terminate``,
``GET /recurringruns``, ``GET /recurringruns/{id}``, ``POST /recurringruns/{id}:enable`` /
``:disable`` and ``DELETE /recurringruns/{id}``; an experiment filter is looked up by name first
(``GET /experiments?filter=...``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipelines.kfp_api import ui_url, utc_text

DEFAULT_POLL_S = 10.0
DEFAULT_PAGE_SIZE = 20
# The KFP API server serves at most 200 items a page (list_request_util.go, maxPageSize).
PAGE_SIZE_RANGE = (1, 200)
NEWEST_FIRST = "created_at desc"

# KFP v2beta1 RuntimeState values after which a run never changes again. kfp.Client's own
# wait_for_run_completion() omits CANCELED (kfp 2.17.3), so a cancelled run would be polled
# until the timeout; this module polls with its own loop for that reason.
FINAL_RUN_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})


def _state(value: Any, unspecified: str) -> str:
    return str(value or unspecified).upper()


def _source_fields(item: Any) -> dict[str, Any]:
    # What runs and recurring runs share: where they run, from which version, as whom, with what.
    reference = item.pipeline_version_reference
    runtime = item.runtime_config
    return {
        "experiment_id": item.experiment_id,
        "pipeline_id": reference.pipeline_id if reference else None,
        "version_id": reference.pipeline_version_id if reference else item.pipeline_version_id,
        "service_account": item.service_account or None,
        "pipeline_root": (runtime.pipeline_root if runtime else None) or None,
        "params": dict((runtime.parameters if runtime else None) or {}),
    }


def run_summary(run: Any, host: str) -> dict[str, Any]:
    """One run as a JSON-ready dict.

    Args:
        run: a ``kfp_server_api.V2beta1Run``.
        host: the ``--host`` base URL, for the UI link.

    Returns:
        ``{"run_id", "name", "state", "experiment_id", "pipeline_id", "version_id",
        "recurring_run_id", "service_account", "pipeline_root", "params", "created_at",
        "finished_at", "error", "url"}``: ``state`` one of KFP's RuntimeState names (``PENDING``,
        ``RUNNING``, ``SUCCEEDED``, ``SKIPPED``, ``FAILED``, ``CANCELING``, ``CANCELED``,
        ``PAUSED``, ``RUNTIME_STATE_UNSPECIFIED``); ``pipeline_id``/``version_id`` ``None`` for a
        run created from an inline spec; ``finished_at`` ``None`` while it runs; ``error`` the
        server's error message or ``None``.
    """
    return {
        "run_id": run.run_id,
        "name": run.display_name,
        "state": _state(run.state, "RUNTIME_STATE_UNSPECIFIED"),
        **_source_fields(run),
        "recurring_run_id": run.recurring_run_id or None,
        "created_at": utc_text(run.created_at),
        "finished_at": utc_text(run.finished_at),
        "error": (run.error.message if run.error else None) or None,
        "url": ui_url(host, f"runs/details/{run.run_id}"),
    }


def schedule_summary(recurring: Any, host: str) -> dict[str, Any]:
    """One recurring run as a JSON-ready dict.

    Args:
        recurring: a ``kfp_server_api.V2beta1RecurringRun``.
        host: the ``--host`` base URL, for the UI link.

    Returns:
        ``{"recurring_run_id", "name", "status", "cron", "interval_s", "max_concurrency",
        "no_catchup", "experiment_id", "pipeline_id", "version_id", "service_account",
        "pipeline_root", "params", "created_at", "updated_at", "url"}``: ``status`` ``ENABLED``,
        ``DISABLED`` or ``STATUS_UNSPECIFIED``; ``cron`` the six-field expression of a cron
        trigger, else ``None``; ``interval_s`` the seconds of a periodic trigger, else ``None``;
        ``max_concurrency`` an int.
    """
    trigger = recurring.trigger
    cron = trigger.cron_schedule.cron if trigger and trigger.cron_schedule else None
    periodic = trigger.periodic_schedule if trigger else None
    return {
        "recurring_run_id": recurring.recurring_run_id,
        "name": recurring.display_name,
        "status": _state(recurring.status, "STATUS_UNSPECIFIED"),
        "cron": cron or None,
        "interval_s": int(periodic.interval_second) if periodic and periodic.interval_second else None,
        # The REST API sends int64 fields as JSON strings.
        "max_concurrency": int(recurring.max_concurrency) if recurring.max_concurrency is not None else None,
        "no_catchup": bool(recurring.no_catchup),
        **_source_fields(recurring),
        "created_at": utc_text(recurring.created_at),
        "updated_at": utc_text(recurring.updated_at),
        "url": ui_url(host, f"recurringrun/details/{recurring.recurring_run_id}"),
    }


def check_page_size(page_size: int) -> int:
    """Returns ``page_size`` when it is an int in 1-200; raises ValueError naming ``--page-size``."""
    low, high = PAGE_SIZE_RANGE
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not low <= page_size <= high:
        raise ValueError(f"--page-size must be an integer in {low}-{high}, got {page_size!r}")
    return page_size


def _experiment_id(client: Any, experiment: str | None, namespace: str | None) -> str | None:
    if experiment is None:
        return None
    # kfp.Client raises ValueError "No experiment is found with name ..." when there is none.
    return client.get_experiment(experiment_name=experiment, namespace=namespace).experiment_id


# What ``list_page`` lists: the kfp.Client method, the response field, the summary function.
_LISTS: dict[str, tuple[str, str, Callable[[Any, str], dict[str, Any]]]] = {
    "runs": ("list_runs", "runs", run_summary),
    "schedules": ("list_recurring_runs", "recurring_runs", schedule_summary),
}


def list_page(
    client: Any,
    host: str,
    kind: str,
    experiment: str | None = None,
    namespace: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    page_token: str = "",
) -> dict[str, Any]:
    """One page of runs or of recurring runs, newest first.

    Args:
        client: a ``kfp.Client``.
        host: the ``--host`` base URL, for UI links.
        kind: ``"runs"`` or ``"schedules"`` (recurring runs).
        experiment: only those of the experiment with this display name; ``None``: all.
        namespace: the namespace of a multi-user deployment.
        page_size: items per page, 1-200.
        page_token: ``next_page_token`` of the previous page; ``""`` for the first.

    Returns:
        ``{kind: [run_summary or schedule_summary, ...], "total_size": int, "next_page_token":
        str | None}``: ``total_size`` counts all items of the filter, ``next_page_token`` is
        ``None`` on the last page.

    Raises:
        ValueError: ``page_size`` out of range, or no experiment has the name.
        KeyError: ``kind`` is neither ``"runs"`` nor ``"schedules"``.
        kfp_server_api.ApiException: the server refused a request.
        urllib3.exceptions.HTTPError: the server could not be reached.
    """
    method, field, summarize = _LISTS[kind]
    check_page_size(page_size)
    response = getattr(client, method)(
        page_token=page_token,
        page_size=page_size,
        sort_by=NEWEST_FIRST,
        experiment_id=_experiment_id(client, experiment, namespace),
        namespace=namespace,
    )
    return {
        kind: [summarize(item, host) for item in getattr(response, field) or []],
        "total_size": int(response.total_size or 0),
        "next_page_token": response.next_page_token or None,
    }


def get_run(client: Any, host: str, run_id: str) -> dict[str, Any]:
    """One run's :func:`run_summary`; an unknown id is the server's 404 (``ApiException``)."""
    return run_summary(client.get_run(run_id), host)


def cancel_run(client: Any, host: str, run_id: str) -> dict[str, Any]:
    """Asks the server to terminate a run, then reads it back.

    Args:
        client: a ``kfp.Client``.
        host: the ``--host`` base URL.
        run_id: the run's id.

    Returns:
        The run's :func:`run_summary` after the request (usually ``CANCELING``; ``CANCELED`` once
        its pods are gone).

    Raises:
        kfp_server_api.ApiException: unknown id (404) or a run the server will not terminate.
        urllib3.exceptions.HTTPError: the server could not be reached.
    """
    client.terminate_run(run_id)
    return get_run(client, host, run_id)


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
    while True:
        state = _state(client.get_run(run_id).state, "RUNTIME_STATE_UNSPECIFIED")
        if state in FINAL_RUN_STATES:
            return state
        if time.monotonic() + poll_s > deadline:
            raise TimeoutError(f"run {run_id} still {state} after {timeout_s:g} s")
        time.sleep(poll_s)


def get_schedule(client: Any, host: str, recurring_run_id: str) -> dict[str, Any]:
    """One recurring run's :func:`schedule_summary`; an unknown id is the server's 404."""
    return schedule_summary(client.get_recurring_run(recurring_run_id), host)


def set_schedule_enabled(client: Any, host: str, recurring_run_id: str, enabled: bool) -> dict[str, Any]:
    """Resumes (``enabled``) or pauses a recurring run, then reads it back.

    Args:
        client: a ``kfp.Client``.
        host: the ``--host`` base URL.
        recurring_run_id: the recurring run's id.
        enabled: True to resume (``:enable``), False to pause (``:disable``). After a pause the
            recurring run's ``no_catchup`` decides whether the missed intervals run on resume.

    Returns:
        Its :func:`schedule_summary` after the change (``status`` ``ENABLED``/``DISABLED``).

    Raises:
        kfp_server_api.ApiException: unknown id (404) or another refusal.
        urllib3.exceptions.HTTPError: the server could not be reached.
    """
    if enabled:
        client.enable_recurring_run(recurring_run_id)
    else:
        client.disable_recurring_run(recurring_run_id)
    return get_schedule(client, host, recurring_run_id)


def delete_schedule(client: Any, recurring_run_id: str) -> dict[str, Any]:
    """Deletes a recurring run (its past runs stay).

    Returns:
        ``{"recurring_run_id": recurring_run_id, "deleted": True}``.

    Raises:
        kfp_server_api.ApiException: unknown id (404) or another refusal.
        urllib3.exceptions.HTTPError: the server could not be reached.
    """
    client.delete_recurring_run(recurring_run_id)
    return {"recurring_run_id": recurring_run_id, "deleted": True}
