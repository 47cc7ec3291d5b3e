"""Submitting the compiled pipeline to a real Kubeflow Pipelines (KFP v2) API server.

Two entry points, both thin wrappers over ``kfp.Client`` (kfp 2.17.3, REST API ``v2beta1``):

* :func:`submit` starts one run of a compiled pipeline package in an experiment, optionally
  waiting for its final state.
* :func:`schedule` creates a recurring run (a cron trigger) of the same package.

Both read the pipeline package (KFP IR YAML) first and check the parameters against its
``root.inputDefinitions``: unknown names, missing required parameters and values of the wrong
type are refused here, with the parameter named, instead of as an opaque server error or a
run that fails minutes later.

Cron expressions follow the KFP backend, which parses them with ``github.com/robfig/cron`` v1
(``cron.Parse``): six fields, **seconds first** (``sec min hour day-of-month month
day-of-week``), evaluated in UTC. robfig v1 also accepts five fields, but reads them as
``sec min hour dom month`` (day of week defaulted to ``*``), so a standard crontab line such as
``"0 9 * * 1"`` would silently fire every hour at minute 9 in January. :func:`normalize_cron`
therefore turns a five-field expression into the six-field one the user meant (``"0 " +
expr``) and says so.

The command line (``kfp-finetune submit`` / ``kfp-finetune schedule``) is added to the main
parser by :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import yaml

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
# Cron expressions (robfig/cron v1 grammar, as the KFP backend parses them)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _CronField:
    name: str
    low: int
    high: int
    names: Mapping[str, int] = dataclasses.field(default_factory=dict)
    allows_question_mark: bool = False


_MONTH_NAMES = {
    name: i + 1
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DOW_NAMES = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}

# Field order and bounds of robfig/cron v1 (parser.go: seconds, minutes, hours, dom, months,
# dow). Day of week is 0-6: unlike Vixie cron, 7 is not Sunday there.
_CRON_FIELDS = (
    _CronField("second", 0, 59),
    _CronField("minute", 0, 59),
    _CronField("hour", 0, 23),
    _CronField("day-of-month", 1, 31, allows_question_mark=True),
    _CronField("month", 1, 12, _MONTH_NAMES),
    _CronField("day-of-week", 0, 6, _DOW_NAMES, allows_question_mark=True),
)

_DESCRIPTORS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})

# Go's time.ParseDuration grammar, which robfig uses for "@every <duration>".
_GO_DURATION_PART = r"(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h)"
_GO_DURATION_RE = re.compile(rf"^(?:{_GO_DURATION_PART})+$")
_GO_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclasses.dataclass(frozen=True)
class CronSpec:
    """A cron expression in the form the KFP backend expects.

    Attributes:
        expression: six space-separated fields, seconds first (e.g. ``"0 0 3 * * *"``, 03:00
            UTC daily), or a robfig descriptor (``"@daily"``, ``"@every 6h"``).
        original: the expression as given.
        note: a sentence saying how ``original`` was rewritten, or ``None`` when it was not.
    """

    expression: str
    original: str
    note: str | None = None


def _parse_cron_value(token: str, field: _CronField, expr: str) -> int:
    lowered = token.lower()
    if lowered in field.names:
        return field.names[lowered]
    if not token.isdigit():
        raise ValueError(
            f"invalid cron expression {expr!r}: {field.name} value {token!r} is not a number"
            + (f" or one of {', '.join(n.upper() for n in field.names)}" if field.names else "")
        )
    return int(token)


def _check_cron_field(text: str, field: _CronField, expr: str) -> None:
    for part in text.split(","):
        if not part:
            raise ValueError(f"invalid cron expression {expr!r}: empty list item in {field.name} field {text!r}")
        range_and_step = part.split("/")
        if len(range_and_step) > 2:
            raise ValueError(f"invalid cron expression {expr!r}: too many '/' in {field.name} field {part!r}")
        low_high = range_and_step[0].split("-")
        if len(low_high) > 2:
            raise ValueError(f"invalid cron expression {expr!r}: too many '-' in {field.name} field {part!r}")
        if low_high[0] in ("*", "?"):
            if low_high[0] == "?" and not field.allows_question_mark:
                raise ValueError(
                    f"invalid cron expression {expr!r}: '?' is allowed only in day-of-month and day-of-week"
                )
            if len(low_high) > 1:
                raise ValueError(f"invalid cron expression {expr!r}: {field.name} field {part!r} ranges from '*'")
            start, end = field.low, field.high
        else:
            start = _parse_cron_value(low_high[0], field, expr)
            end = _parse_cron_value(low_high[1], field, expr) if len(low_high) == 2 else start
        if len(range_and_step) == 2:
            step_text = range_and_step[1]
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(
                    f"invalid cron expression {expr!r}: step {step_text!r} in {field.name} field must be a positive integer"
                )
            # robfig: "N/step" means "N-max/step".
            if len(low_high) == 1 and low_high[0] not in ("*", "?"):
                end = field.high
        if start < field.low or end > field.high:
            raise ValueError(
                f"invalid cron expression {expr!r}: {field.name} {part!r} is outside {field.low}-{field.high}"
            )
        if start > end:
            raise ValueError(f"invalid cron expression {expr!r}: {field.name} range {part!r} runs backwards")


def _check_every(expr: str) -> None:
    duration = expr[len("@every ") :].strip()
    if not _GO_DURATION_RE.match(duration):
        raise ValueError(
            f"invalid cron expression {expr!r}: '@every' takes a Go duration such as 30m, 6h or 1h30m"
        )
    seconds = sum(
        float(number) * _GO_UNIT_SECONDS[unit]
        for number, unit in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", duration)
    )
    # robfig rounds anything under one second up to one second; a sub-second schedule is
    # never what a retraining job wants, so it is refused rather than silently rounded.
    if seconds < 1:
        raise ValueError(f"invalid cron expression {expr!r}: '@every' needs a duration of at least 1s")


def normalize_cron(expr: str) -> CronSpec:
    """Validates a cron expression and returns the six-field form the KFP backend expects.

    The grammar is that of ``github.com/robfig/cron`` v1, which the KFP API server and the
    ScheduledWorkflow controller use: per field a comma-separated list of ``*``, ``?`` (day of
    month and day of week only), ``N``, ``N-M``, each optionally ``/STEP``; month names
    ``JAN``-``DEC`` and day names ``SUN``-``SAT`` (case-insensitive); bounds second 0-59,
    minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-6 (Sunday = 0; 7 is
    refused). Descriptors ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``,
    ``@midnight``, ``@hourly`` and ``@every <Go duration>`` are kept as they are. Quartz/croniter
    extensions (``L``, ``W``, ``#``, ``H``, a year field) are refused because robfig refuses them.

    Args:
        expr: six fields (seconds first), five fields (standard crontab: minute first), or a
            descriptor. Times are UTC.

    Returns:
        The normalized :class:`CronSpec`. A five-field ``expr`` becomes ``"0 " + expr`` (at
        second 0), and ``note`` says so.

    Raises:
        ValueError: the expression is empty, has a field count other than 5 or 6, or a field is
            malformed or out of range; the message quotes the expression and names the field.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError(f"invalid cron expression {expr!r}: it is empty")
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text in _DESCRIPTORS:
            return CronSpec(expression=text, original=expr)
        if text.startswith("@every "):
            _check_every(text)
            return CronSpec(expression=text, original=expr)
        raise ValueError(
            f"invalid cron expression {expr!r}: unknown descriptor; use one of "
            f"{', '.join(sorted(_DESCRIPTORS))} or '@every <duration>'"
        )
    fields = text.split(" ")
    note = None
    if len(fields) == 5:
        fields = ["0", *fields]
        note = (
            f"cron {text!r} has 5 fields (minute first); KFP expects 6 with seconds first, "
            f"so it was sent as {' '.join(fields)!r}"
        )
    elif len(fields) != 6:
        raise ValueError(
            f"invalid cron expression {expr!r}: expected 6 fields (second minute hour day-of-month "
            f"month day-of-week) or 5 (standard crontab), found {len(fields)}"
        )
    for text_field, field in zip(fields, _CRON_FIELDS):
        _check_cron_field(text_field, field, expr)
    return CronSpec(expression=" ".join(fields), original=expr, note=note)


# --------------------------------------------------------------------------------------------
# Pipeline parameters
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PipelineParameter:
    """One input parameter of a compiled pipeline (``root.inputDefinitions.parameters``).

    Attributes:
        name: the parameter name (snake_case, as in the pipeline function).
        parameter_type: the KFP IR type: ``STRING``, ``NUMBER_INTEGER``, ``NUMBER_DOUBLE``,
            ``BOOLEAN``, ``LIST`` or ``STRUCT``.
        required: True when the pipeline gives no default.
    """

    name: str
    parameter_type: str
    required: bool


@dataclasses.dataclass(frozen=True)
class PipelinePackage:
    """What this module needs from a compiled pipeline package.

    Attributes:
        path: the package file (``.yaml`` or ``.yml``, KFP IR).
        name: ``pipelineInfo.name``.
        parameters: the pipeline's input parameters by name.
    """

    path: str
    name: str
    parameters: Mapping[str, PipelineParameter]


def read_pipeline_package(package_path: str) -> PipelinePackage:
    """Reads the name and input parameters of a compiled pipeline package.

    Args:
        package_path: a KFP IR YAML file as written by ``kfp.compiler.Compiler().compile`` (the
            first YAML document is the PipelineSpec; a second one, if any, the platform spec).

    Returns:
        The package's name and parameters.

    Raises:
        FileNotFoundError: ``package_path`` does not exist.
        ValueError: the file is not a ``.yaml``/``.yml`` KFP IR pipeline spec.
    """
    if not package_path.endswith((".yaml", ".yml")):
        raise ValueError(f"pipeline package {package_path!r} must be a compiled KFP IR .yaml/.yml file")
    if not os.path.isfile(package_path):
        raise FileNotFoundError(f"pipeline package {package_path!r} does not exist")
    with open(package_path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    spec = docs[0] if docs else None
    if not isinstance(spec, dict) or "root" not in spec or "pipelineInfo" not in spec:
        raise ValueError(f"{package_path!r} is not a KFP pipeline spec (no 'root' or 'pipelineInfo')")
    raw = ((spec["root"].get("inputDefinitions") or {}).get("parameters")) or {}
    parameters = {
        name: PipelineParameter(
            name=name,
            parameter_type=str(definition.get("parameterType", "STRING")),
            required=not definition.get("isOptional", False) and "defaultValue" not in definition,
        )
        for name, definition in raw.items()
    }
    return PipelinePackage(path=package_path, name=str(spec["pipelineInfo"].get("name", "pipeline")), parameters=parameters)


_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def _coerce(value: Any, parameter: PipelineParameter) -> Any:
    """Converts one value to the JSON type the KFP server expects for ``parameter``."""
    kind = parameter.parameter_type
    where = f"parameter {parameter.name!r} ({kind})"
    if value is None:
        raise ValueError(f"{where} has no value (null)")
    if kind == "STRING":
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}; quote it in YAML")
        return value
    if kind == "NUMBER_INTEGER":
        if isinstance(value, bool):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise ValueError(f"{where} must be an integer, got {value!r}")
    if kind == "NUMBER_DOUBLE":
        if isinstance(value, bool):
            raise ValueError(f"{where} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{where} must be a number, got {value!r}") from None
        raise ValueError(f"{where} must be a number, got {value!r}")
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if kind in ("LIST", "STRUCT"):
        wanted = list if kind == "LIST" else dict
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where} must be JSON, got {value!r}: {error}") from None
        if not isinstance(value, wanted):
            raise ValueError(f"{where} must be a JSON {'list' if kind == 'LIST' else 'object'}, got {value!r}")
        return value
    raise ValueError(f"{where}: unsupported parameter type {kind!r}")


def check_params(package: PipelinePackage, params: Mapping[str, Any]) -> dict[str, Any]:
    """Checks run parameters against a compiled pipeline and converts them to its types.

    Args:
        package: the compiled pipeline (see :func:`read_pipeline_package`).
        params: parameter name (snake_case or kebab-case) to value; strings are parsed for
            number, boolean (``true``/``false``/``yes``/``no``/``1``/``0``), list and struct
            (JSON) parameters.

    Returns:
        A new dict keyed by the pipeline's parameter names with JSON-typed values.

    Raises:
        ValueError: a name is not a parameter of the pipeline, a required parameter has no
            value, or a value cannot be converted; the message names the parameter.
    """
    checked: dict[str, Any] = {}
    for key, value in params.items():
        name = key.replace("-", "_")
        if name not in package.parameters:
            raise ValueError(
                f"unknown pipeline parameter {key!r}; {package.name!r} takes: "
                f"{', '.join(sorted(package.parameters)) or '(none)'}"
            )
        checked[name] = _coerce(value, package.parameters[name])
    missing = sorted(p.name for p in package.parameters.values() if p.required and p.name not in checked)
    if missing:
        raise ValueError(f"missing required pipeline parameter(s): {', '.join(missing)}")
    return checked


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


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--param takes KEY=VALUE, got {text!r}")
    return key.strip(), value


def load_params(config_path: str | None, overrides: list[tuple[str, str]] | None) -> dict[str, Any]:
    """Merges parameters from a YAML config file and ``KEY=VALUE`` overrides.

    Args:
        config_path: a YAML mapping of pipeline parameter names (snake_case or kebab-case) to
            values, or ``None``.
        overrides: ``(key, value)`` pairs from ``--param``; they win over the config file.

    Returns:
        Parameter name (snake_case) to value.

    Raises:
        FileNotFoundError: ``config_path`` does not exist.
        ValueError: the config is not a YAML mapping, or the same parameter is given twice in it
            (once snake_case, once kebab-case).
    """
    params: dict[str, Any] = {}
    if config_path:
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"config file {config_path!r} does not exist")
        with open(config_path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {config_path!r} must be a YAML mapping of parameter names to values")
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            if name in params:
                raise ValueError(f"config file {config_path!r} sets {name!r} twice")
            params[name] = value
    for key, value in overrides or []:
        params[key.replace("-", "_")] = value
    return params


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
    parser.add_argument("--config", metavar="YAML", help="pipeline parameters as a YAML mapping")
    parser.add_argument(
        "--param",
        metavar="KEY=VALUE",
        action="append",
        type=_parse_param,
        default=[],
        help="one pipeline parameter (repeatable); overrides --config",
    )
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment name (default %(default)s)")
    parser.add_argument("--namespace", help="user namespace of a multi-user KFP deployment")
    parser.add_argument(
        "--existing-token",
        metavar="TOKEN",
        help=f"bearer token for the KFP API (default: ${TOKEN_ENV}; prefer the variable, "
        "command lines are visible to other users)",
    )


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


def _api_error_message(error: Exception) -> str:
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None)
    body = getattr(error, "body", None)
    detail = body
    if isinstance(body, (str, bytes)):
        try:
            decoded = json.loads(body)
            detail = decoded.get("message") or decoded.get("error") or body if isinstance(decoded, dict) else body
        except (json.JSONDecodeError, UnicodeDecodeError):
            detail = body
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    text = " ".join(str(detail or "").split())
    return f"KFP API answered {status} {reason}" + (f": {text[:300]}" if text else "")


def _run_cli(args: argparse.Namespace, action: Callable[[str], dict[str, Any]]) -> int:
    import kfp_server_api
    import urllib3

    try:
        # kfp.Client prints experiment/run links to stdout; they are dropped so that stdout
        # holds only this command's JSON (which has the run's URL) and stderr only our lines.
        with contextlib.redirect_stdout(io.StringIO()):
            result = _with_package(args, action)
    except kfp_server_api.ApiException as error:
        print(f"error: {_api_error_message(error)}", file=sys.stderr)
        return 2
    except urllib3.exceptions.HTTPError as error:
        print(f"error: cannot reach KFP at {args.host}: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if result.get("cron_note"):
        print(f"note: {result['cron_note']}", file=sys.stderr)
    print(json.dumps(result, indent=2, sort_keys=True))
    state = result.get("state")
    # A run that ended badly is not a usage error (2) but the job failed: exit 1.
    return 0 if state in (None, "SUCCEEDED") else 1


def _submit_cli(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.config, args.param)
    except (ValueError, OSError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _run_cli(
        args,
        lambda path: submit(
            args.host,
            path,
            params,
            experiment=args.experiment,
            run_name=args.run_name,
            namespace=args.namespace,
            wait=args.wait,
            timeout_s=args.timeout,
            existing_token=args.existing_token,
        ),
    )


def _schedule_cli(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.config, args.param)
        # Validated before compiling so a typo costs nothing.
        normalize_cron(args.cron)
    except (ValueError, OSError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _run_cli(
        args,
        lambda path: schedule(
            args.host,
            path,
            params,
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
    ended FAILED/SKIPPED/CANCELED, 2 an error (one ``error: ...`` line on stderr). On success
    the result (see :func:`submit` / :func:`schedule`) is printed to stdout as JSON.

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
