"""The settings framework: one declaration per setting, its parse and check, and the derived
pipeline parameters."""

import dataclasses

import pytest

from components import settings
from components.settings import Setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Example:
    name: str = settings.MODEL_NAME.field()
    rate: float = Setting(float, 0.5, "a rate", check=settings.in_range(0, 1, high_open=True)).field()
    count: int = Setting(int, 3, "a count", check=settings.at_least(1)).field()
    units: tuple = Setting(str, "", "units", parse=settings.comma_list(int, "integers", "8,4")).field()
    internal: int = 7

    def __post_init__(self):
        settings.validate(self)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": 1.0}, r"rate must be in \[0, 1\), got 1.0"),
        ({"rate": float("nan")}, r"rate must be in \[0, 1\), got nan"),
        ({"count": 0}, "count must be >= 1, got 0"),
        ({"count": "3"}, "count must be a int, got '3'"),
        ({"count": True}, "count must be a int, got True"),
        ({"units": "8,x"}, "units '8,x' must be comma-separated integers, e.g. '8,4'"),
        ({"name": "a/b"}, "invalid name 'a/b'"),
    ],
)
def test_a_bad_value_is_refused_with_the_setting_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _Example(**kwargs)


def test_values_are_parsed_and_ints_widen_to_floats():
    e = _Example(rate=0, units="8, 4")
    assert (e.rate, type(e.rate), e.units) == (0.0, float, (8, 4))
    assert _Example(units=(2, 1)).units == (2, 1)
    assert _Example().units == ()


def test_from_parameters_takes_only_the_classes_fields():
    e = settings.from_parameters(_Example, {"count": 5, "unrelated": 1, "internal": 9})
    assert (e.count, e.internal) == (5, 9)


def test_declared_leaves_internal_fields_out():
    assert list(settings.declared(_Example)) == ["name", "rate", "count", "units"]


def test_a_setting_shared_by_two_classes_is_one_parameter_and_a_redeclared_one_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Other:
        name: str = settings.MODEL_NAME.field()
        extra: bool = Setting(bool, False, "extra").field()

    assert list(settings.parameters([_Example, Other])) == ["name", "rate", "count", "units", "extra"]

    @dataclasses.dataclass(frozen=True)
    class Clash:
        count: int = Setting(int, 3, "a count").field()

    with pytest.raises(ValueError, match="setting 'count' is declared twice"):
        settings.parameters([_Example, Clash])


@pytest.mark.parametrize("kind, default", [(list, []), (str, 3), (int, 1.5), (int, True)])
def test_a_declaration_of_the_wrong_type_fails_at_import(kind, default):
    with pytest.raises(TypeError):
        Setting(kind, default, "x")


@pytest.mark.parametrize(
    "check, good, bad, message",
    [
        (settings.one_of(("a", "b")), "a", "c", "x 'c' is not one of a, b"),
        (settings.above(0), 0.1, 0.0, "x must be > 0, got 0.0"),
        (settings.at_least(0, "0: off"), 0, -1, r"x must be >= 0 \(0: off\), got -1"),
        (settings.in_range(0, 1, low_open=True), 1.0, 0.0, r"x must be in \(0, 1\], got 0.0"),
        (settings.in_range(0, 1), 0.0, 1.5, r"x must be in \[0, 1\], got 1.5"),
    ],
)
def test_checks(check, good, bad, message):
    check("x", good)
    with pytest.raises(ValueError, match=message):
        check("x", bad)
