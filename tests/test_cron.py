"""Tests of pipelines/cron.py: the robfig/cron v1 grammar the KFP backend parses schedules with."""

import pytest

from pipelines.cron import normalize_cron


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

