"""The connection to a Kubeflow Pipelines (KFP v2) API server, shared by every cluster command.

``submit``, ``schedule``, ``runs`` and ``schedules`` all reach the server the same way: a
``kfp.Client`` (kfp 2.17.3, REST API ``v2beta1``) built by :func:`make_client` from ``--host``,
``--namespace`` and a bearer token (``--existing-token`` or the ``KFP_TOKEN`` variable), the flags
that :func:`add_connection_arguments` adds. Links into the KFP UI are built by :func:`ui_url`, and
timestamps the server returns are written by :func:`utc_text`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import warnings
from typing import Any

TOKEN_ENV = "KFP_TOKEN"


def make_client(host: str, namespace: str | None, existing_token: str | None) -> Any:
    """Builds a ``kfp.Client`` for one API server.

    Args:
        host: the API server's base URL, e.g. ``http://localhost:8080`` (the ``ml-pipeline-ui``
            service port-forwarded, which proxies ``/apis``) or ``http://localhost:8888``
            (``ml-pipeline`` itself).
        namespace: Kubernetes namespace of a multi-user deployment; ``None`` for standalone KFP
            (the client then asks ``/apis/v2beta1/healthz`` whether the server is multi-user).
        existing_token: bearer token; default the ``KFP_TOKEN`` environment variable, read at call
            time, else none.

    Returns:
        A ``kfp.Client``.

    Raises:
        KfpHostError: ``host`` does not answer, or not as a KFP API (see :func:`check_host`).
        urllib3.exceptions.HTTPError: the server could not be reached (the health probe).
        kfp_server_api.ApiException: the server refused the health probe.
    """
    # Imported here: kfp.Client pulls in the REST client and kubernetes, which the other
    # commands never need.
    import kfp

    token = existing_token or os.environ.get(TOKEN_ENV) or None
    # One health call of our own first: kfp.Client answers a host that is not a KFP API (an HTTP
    # 404, an HTML page) with 5 attempts 5 s apart, a logged traceback each, then "Failed getting
    # healthz endpoint after 5 attempts." without the URL.
    check_host(host, token)
    kwargs: dict[str, Any] = {"host": host, "existing_token": token}
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings():
        # kfp.Client always warns that it needs a v2 backend; that is this module's premise.
        warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
        return kfp.Client(**kwargs)


class KfpHostError(ValueError):
    """``--host`` does not answer, or answers but not as a KFP API (exit 2, one ``error:`` line)."""


def check_host(host: str, token: str | None = None) -> None:
    """Asks the API's health call once (``GET <host>/apis/v2beta1/healthz``, 10 s timeout).

    Raises:
        KfpHostError: ``cannot reach KFP at <host>: <reason>`` when nothing answers;
            ``KFP at <host> ...: <what came back> ...`` when something answers that is not a KFP
            API (an HTTP error, a body that is not JSON), with the services --host should name.
    """
    from pipelines.doctor import check_kfp

    health = check_kfp(host, token)
    if health.status == "ok":
        return
    if health.data.get("reachable") is False:
        raise KfpHostError(f"cannot reach KFP at {host}: {health.detail.split(': ', 1)[-1]}")
    raise KfpHostError(
        f"KFP at {host} did not answer its health call: {health.detail}; --host must be the KFP API "
        "(the ml-pipeline-ui service, or ml-pipeline itself, port-forwarded)"
    )


def ui_url(host: str, fragment: str) -> str:
    """The KFP UI address of a page, e.g. ``ui_url(host, "runs/details/ID")``.

    Args:
        host: the ``--host`` base URL (the UI serves ``/#/...`` next to ``/apis``).
        fragment: the page after ``#/``.

    Returns:
        ``"<host without trailing slash>/#/<fragment>"``.
    """
    return f"{host.rstrip('/')}/#/{fragment}"


def utc_text(value: datetime.datetime | None) -> str | None:
    """A server timestamp as ISO 8601 UTC text with a ``Z`` suffix, to the second.

    Args:
        value: a timestamp from a ``kfp_server_api`` model (timezone-aware; a naive one is taken
            as UTC), or ``None``.

    Returns:
        e.g. ``"2026-12-04T10:17:03Z"``, or ``None`` when ``value`` is ``None`` or the zero time
        (``1970-01-01T00:00:00Z``), which the server sends for "not yet" (a run's
        ``finished_at`` while it runs).
    """
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    value = value.astimezone(datetime.timezone.utc)
    if value.timestamp() <= 0:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def host_url(text: str) -> str:
    """An argparse ``type`` for ``--host``: an ``http://`` or ``https://`` URL with a host.

    Without a scheme, the KFP client silently tries ``https://`` (``localhost:8080`` then fails
    with a TLS error against a plain-HTTP port-forward), so a bare ``host:port`` is refused.

    Raises:
        argparse.ArgumentTypeError: names the value and the expected form.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a URL with a scheme: expected http://HOST[:PORT] or https://HOST[:PORT] "
            "(e.g. http://localhost:8080)")
    return text


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--host`` (required), ``--namespace`` and ``--existing-token`` to a command.

    Args:
        parser: the command's parser; :func:`make_client` takes the parsed values.
    """
    parser.add_argument("--host", required=True, type=host_url, help="KFP API base URL, e.g. http://localhost:8080")
    parser.add_argument("--namespace", help="user namespace of a multi-user KFP deployment")
    parser.add_argument(
        "--existing-token",
        metavar="TOKEN",
        help=f"bearer token for the KFP API (default: ${TOKEN_ENV}; prefer the variable, "
        "command lines are visible to other users)",
    )
