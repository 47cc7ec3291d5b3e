"""Cron expressions as the KFP backend reads them (the ``github.com/robfig/cron`` v1 grammar).

The KFP API server and the ScheduledWorkflow controller parse a recurring run's cron with robfig
``cron.Parse``: six fields, **seconds first** (``sec min hour day-of-month month day-of-week``),
evaluated in UTC. robfig v1 also accepts five fields, but reads them as ``sec min hour dom
month`` (day of week defaulted to ``*``), so a standard crontab line such as ``"0 9 * * 1"``
would silently fire every hour at minute 9 in January. :func:`normalize_cron` therefore turns a
five-field expression into the six-field one the user meant (``"0 " + expr``) and says so, and
refuses what robfig would refuse, with the field named, before any request is sent.

:func:`next_fire_times` says when a checked expression fires next, in UTC (the ScheduledWorkflow
controller's default time zone; a deployment can change it with the controller's
``CRON_SCHEDULE_TIMEZONE``). The calendar arithmetic is croniter's, a maintained library (PyPI
``croniter``, pallets-eco), given robfig's semantics where the two differ.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping


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

# robfig/cron v1's predefined schedules and the six-field spec each stands for (its doc.go table).
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}

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


def _every_seconds(expr: str) -> float:
    """The duration of ``@every <Go duration>`` in seconds; raises ValueError when malformed."""
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
    return seconds


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
            _every_seconds(text)
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



def _robfig_day_field(text: str) -> str:
    # robfig ANDs day of month with day of week when either field is "all days" (its star bit)
    # and ORs them otherwise, as croniter does, but robfig also gives "*/1" and "?/1" the star
    # bit where croniter expands them to a list; written as "*" they mean the same days to both.
    return ",".join("*" if part in ("*/1", "?/1") else part for part in text.split(","))


def next_fire_times(
    expr: str, count: int = 3, after: datetime.datetime | None = None
) -> list[datetime.datetime]:
    """The next times a KFP recurring run with this cron expression fires.

    The expression is first checked and normalized by :func:`normalize_cron` (the robfig
    grammar), then evaluated as robfig does: six fields seconds first, day of month and day of
    week ORed when both are restricted and ANDed when either is ``*`` or ``?``; a descriptor by
    the six-field spec robfig gives it (``@daily`` = ``0 0 0 * * *``). ``@every D`` fires every
    ``D`` (whole seconds) counted from when the controller starts the schedule, so its times are
    counted from ``after``: ``after`` (to the second) + k·D.

    Args:
        expr: a cron expression as :func:`normalize_cron` takes it (five fields get ``"0 "``
            prefixed).
        count: how many times to return, at least 1.
        after: the times returned are strictly later than this; default now. A naive value is
            taken as UTC.

    Returns:
        ``count`` timezone-aware UTC datetimes, increasing.

    Raises:
        ValueError: the expression is invalid (see :func:`normalize_cron`), never fires (31
            February), or ``count`` < 1.
    """
    # Imported here: only schedule needs it, and every command imports this module.
    from croniter import CroniterBadDateError, croniter

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    spec = normalize_cron(expr)
    start = after or datetime.datetime.now(datetime.timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=datetime.timezone.utc)
    start = start.astimezone(datetime.timezone.utc)
    if spec.expression.startswith("@every "):
        # robfig's ConstantDelaySchedule: drop the fraction of a second of both the start and
        # the delay, then add the delay.
        delay = datetime.timedelta(seconds=int(_every_seconds(spec.expression)))
        base = start.replace(microsecond=0)
        return [base + delay * k for k in range(1, count + 1)]
    fields = _DESCRIPTORS.get(spec.expression, spec.expression).split(" ")
    fields[3] = _robfig_day_field(fields[3])
    fields[5] = _robfig_day_field(fields[5])
    schedule = croniter(" ".join(fields), start, second_at_beginning=True, day_or=True)
    try:
        return [schedule.get_next(datetime.datetime) for _ in range(count)]
    except CroniterBadDateError:
        # croniter gives up after its search window (about 50 years): a date that never comes,
        # such as 31 February, which robfig's grammar accepts and KFP would schedule for ever.
        raise ValueError(f"invalid cron expression {expr!r}: it never fires (no such date, e.g. day 31 of a "
                         "30-day month or 30 February)") from None
