"""Tests of pipelines/cron.py: the robfig/cron v1 grammar the KFP backend parses schedules with,
and the next fire times of a checked expression."""

import datetime

import pytest

from pipelines.cron import next_fire_times, normalize_cron

UTC = datetime.timezone.utc
# A Friday, with a fraction of a second that robfig drops.
FRIDAY = datetime.datetime(2026, 12, 4, 10, 17, 3, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "sent", "rewritten"),
    [
        ("0 0 3 * * *", "0 0 3 * * *", False),
        ("0 3 * * *", "0 0 3 * * *", True),  # standard crontab: 03:00 daily
        ("0 9 * * 1", "0 0 9 * * 1", True),  # robfig would read this as minute 9 of every hour in Jan
        ("  0   0  3 *  * * ", "0 0 3 * * *", False),
        ("0 0 0/6 * * ?", "0 0 0/6 * * ?", False),
        ("0 0 9 ? * MON-FRI", "0 0 9 ? * MON-FRI", False),
        ("0 30 2 1,15 jan,jul *", "0 30 2 1,15 jan,jul *", False),
        ("*/15 * * * * *", "*/15 * * * * *", False),
        ("0 */10 * * *", "0 0 */10 * * *", True),
        ("@daily", "@daily", False),
        ("@every 6h", "@every 6h", False),
        ("@every 1h30m", "@every 1h30m", False),
    ],
)
def test_normalize_cron_accepts(given: str, sent: str, rewritten: bool) -> None:
    spec = normalize_cron(given)
    assert spec.expression == sent
    assert (spec.note is not None) == rewritten
    if rewritten:
        assert sent in spec.note and "6" in spec.note


@pytest.mark.parametrize(
    ("given", "names"),
    [
        ("", "empty"),
        ("* * * *", "found 4"),
        ("0 0 0 1 1 * 2030", "found 7"),
        ("60 * * * * *", "second"),
        ("0 60 * * * *", "minute"),
        ("0 0 24 * * *", "hour"),
        ("0 0 0 0 * *", "day-of-month"),
        ("0 0 0 32 * *", "day-of-month"),
        ("0 0 0 * 13 *", "month"),
        ("0 0 0 * * 7", "day-of-week"),  # robfig: 0-6 only
        ("0 0 0 L * *", "day-of-month"),  # Quartz "last day": not robfig
        ("0 0 0 * * 1#2", "day-of-week"),
        ("0 0 0 * * H", "day-of-week"),
        ("0 0 */0 * * *", "step"),
        ("0 0 5-1 * * *", "backwards"),
        ("0 0 1-2-3 * * *", "too many '-'"),
        ("? * * * * *", "'?'"),
        ("0 0 0 * FOO *", "month"),
        ("@reboot", "descriptor"),
        ("@every soon", "@every"),
        ("@every 10ms", "at least 1s"),
        ("0,,5 * * * * *", "empty list item"),
    ],
)
def test_normalize_cron_rejects(given: str, names: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        normalize_cron(given)
    message = str(excinfo.value)
    assert repr(given) in message
    assert names in message



@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 0 3 * * *", ["2026-12-05T03:00:00", "2026-12-06T03:00:00", "2026-12-07T03:00:00"]),
        ("0 3 * * *", ["2026-12-05T03:00:00", "2026-12-06T03:00:00", "2026-12-07T03:00:00"]),  # 5 fields
        ("0 0 9 ? * MON-FRI", ["2026-12-07T09:00:00", "2026-12-08T09:00:00", "2026-12-09T09:00:00"]),
        ("*/15 * * * * *", ["2026-12-04T10:17:15", "2026-12-04T10:17:30", "2026-12-04T10:17:45"]),
        ("0 0 0 1 jan,jul *", ["2027-01-01T00:00:00", "2027-07-01T00:00:00", "2028-01-01T00:00:00"]),
        # Day of month and day of week both restricted: either matches (13th or a Friday).
        ("0 0 0 13 * 5", ["2026-12-11T00:00:00", "2026-12-13T00:00:00", "2026-12-18T00:00:00"]),
        # robfig gives "*/1" the star bit, so both must match: Fridays only (croniter alone
        # would OR an every-day list with Friday and fire daily).
        ("0 0 0 */1 * 5", ["2026-12-11T00:00:00", "2026-12-18T00:00:00", "2026-12-25T00:00:00"]),
        ("@daily", ["2026-12-05T00:00:00", "2026-12-06T00:00:00", "2026-12-07T00:00:00"]),
        ("@weekly", ["2026-12-06T00:00:00", "2026-12-13T00:00:00", "2026-12-20T00:00:00"]),  # Sundays
        ("@hourly", ["2026-12-04T11:00:00", "2026-12-04T12:00:00", "2026-12-04T13:00:00"]),
        ("@monthly", ["2027-01-01T00:00:00", "2027-02-01T00:00:00", "2027-03-01T00:00:00"]),
        # @every counts from the start, to the second.
        ("@every 6h", ["2026-12-04T16:17:03", "2026-12-04T22:17:03", "2026-12-05T04:17:03"]),
        ("@every 1h30m", ["2026-12-04T11:47:03", "2026-12-04T13:17:03", "2026-12-04T14:47:03"]),
    ],
)
def test_next_fire_times(expr: str, expected: list[str]) -> None:
    times = next_fire_times(expr, 3, after=FRIDAY)
    assert [t.strftime("%Y-%m-%dT%H:%M:%S") for t in times] == expected
    assert all(t.utcoffset() == datetime.timedelta(0) for t in times)


def test_next_fire_times_are_strictly_later_and_naive_is_utc() -> None:
    at_fire_time = datetime.datetime(2026, 12, 5, 3, 0, 0)
    times = next_fire_times("0 0 3 * * *", 2, after=at_fire_time)
    assert times == [datetime.datetime(2026, 12, 6, 3, tzinfo=UTC), datetime.datetime(2026, 12, 7, 3, tzinfo=UTC)]


def test_next_fire_times_default_is_now() -> None:
    before = datetime.datetime.now(UTC)
    [first] = next_fire_times("* * * * * *", 1)
    assert before < first <= before + datetime.timedelta(seconds=2)


@pytest.mark.parametrize(("expr", "count", "names"), [("0 0 0 * * 7", 3, "day-of-week"), ("0 0 3 * * *", 0, "count")])
def test_next_fire_times_refuses(expr: str, count: int, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        next_fire_times(expr, count, after=FRIDAY)


@pytest.mark.parametrize("expr", ["0 0 3 31 2 *", "0 0 0 30 2 *", "0 0 0 31 4,6,9,11 *"])
def test_a_date_that_never_comes_is_refused_naming_the_expression(expr: str) -> None:
    """croniter's own "failed to find next date" reached the user without the expression."""
    with pytest.raises(ValueError) as caught:
        next_fire_times(expr, 3, after=FRIDAY)
    assert str(caught.value) == (f"invalid cron expression {expr!r}: it never fires (no such date, e.g. day 31 of a "
                                 "30-day month or 30 February)")


def test_a_rare_date_still_fires() -> None:
    """29 February comes every four years: found, not refused."""
    assert [t.year for t in next_fire_times("0 0 0 29 2 *", 2, after=FRIDAY)][1] - \
        [t.year for t in next_fire_times("0 0 0 29 2 *", 2, after=FRIDAY)][0] == 4
