"""Step settings declared once: each setting's type, default, help and check in one place.

Every step has one frozen settings dataclass (``PreprocessSettings``, ``FinetuneSettings``,
``EvaluateSettings``, ``PushSettings``) whose fields are made by ``Setting.field()``. Everything
else about a setting is derived from that declaration:

* the pipeline parameters (``pipelines.pipeline.PARAMETERS``: name, type, default, help), and
  with them the ``run-local`` / ``submit`` / ``schedule`` flags and the ``--config`` keys;
* the description of each root parameter in the compiled pipeline, which the KFP UI shows in
  its run form;
* the README's parameter table (a test compares the two);
* the check run when a settings object is made (``validate``), before any step starts.

A setting several steps read (``base_model``, the registry target) is one module-level
``Setting`` used by each of those dataclasses, so it is still declared once. A dataclass field
made without ``Setting`` (e.g. ``PreprocessSettings.max_pixels``) is internal: not a pipeline
parameter.

This module is a leaf: it imports no step module.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, TypeVar

PARAMETER_TYPES = (str, int, float, bool)

Check = Callable[[str, Any], None]
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Setting:
    """The declaration of one setting.

    Attributes:
        type: The pipeline parameter's type: ``str``, ``int``, ``float`` or ``bool`` (what KFP
            can show in its run form).
        default: The default, as a pipeline parameter value (of ``type``).
        help: One line for ``--help``, the KFP UI and the README: what it is, its unit and range.
        check: ``check(name, value)`` raises ``ValueError`` naming the setting and the allowed
            values; None for no check. Runs on the parsed value.
        parse: Turns the pipeline value into the settings value (e.g. ``"256,128"`` into
            ``(256, 128)``); None keeps it. Must accept an already-parsed value unchanged.
        required: The pipeline parameter has no default (the run form asks for it). The
            dataclass still defaults to ``default`` (e.g. ``""``: "none given"), so a step can be
            called without it in Python.
    """

    type: type
    default: Any
    help: str
    check: Check | None = None
    parse: Callable[[Any], Any] | None = None
    required: bool = False

    def __post_init__(self) -> None:
        if self.type not in PARAMETER_TYPES:
            raise TypeError(f"a setting's type must be one of {PARAMETER_TYPES}, got {self.type!r}")
        if not isinstance(self.default, self.type) or (self.type is int and isinstance(self.default, bool)):
            raise TypeError(f"default {self.default!r} is not a {self.type.__name__}")

    def field(self) -> Any:
        """A ``dataclasses.field`` carrying this declaration (``metadata["setting"]``)."""
        default = self.parse(self.default) if self.parse else self.default
        return dataclasses.field(default=default, metadata={"setting": self})


def declared(cls: type) -> dict[str, Setting]:
    """``{field name: Setting}`` of a settings dataclass, in field order (internal fields left out)."""
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls) if "setting" in f.metadata}


def validate(settings: Any) -> None:
    """Parses and checks every declared field of a (frozen) settings object in place.

    Call it first in ``__post_init__``; cross-field rules follow it there.

    Raises:
        ValueError: a value fails its parse or check (the message names the setting).
            A value not of the declared type (e.g. ``"3"`` for an ``int``) is a ``ValueError``
            too, so that the command line reports it as bad input.
    """
    for name, spec in declared(type(settings)).items():
        value = getattr(settings, name)
        if spec.parse is not None:
            try:
                value = spec.parse(value)
            except ValueError as e:
                raise ValueError(f"{name} {e}") from None
            object.__setattr__(settings, name, value)
        elif spec.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            object.__setattr__(settings, name, value)
        elif not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
            raise ValueError(f"{name} must be a {spec.type.__name__}, got {value!r}")
        if spec.check is not None:
            spec.check(name, value)


def from_parameters(cls: type[T], params: Mapping[str, Any]) -> T:
    """A settings object of ``cls`` from pipeline parameters: the keys of ``params`` that are
    fields of ``cls`` are used, the others ignored; a field not given takes its default.

    Raises:
        ValueError: see ``validate``.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names})


def parameters(classes: Iterable[type]) -> dict[str, Setting]:
    """The pipeline parameters of the settings dataclasses ``classes``: ``{name: Setting}`` in
    class order, then field order; a setting shared by several classes appears once.

    Raises:
        ValueError: two classes declare the same name with different ``Setting`` objects (a
            setting must be declared once and shared).
    """
    out: dict[str, Setting] = {}
    for cls in classes:
        for name, spec in declared(cls).items():
            if name in out and out[name] is not spec:
                raise ValueError(f"setting {name!r} is declared twice (in {cls.__name__} and before): share one Setting")
            out.setdefault(name, spec)
    return out


# --- checks ---------------------------------------------------------------------------------------
# Each returns a ``Check``; the messages are the ones users see from the CLI.


def one_of(allowed: Iterable[str]) -> Check:
    """The value must be one of ``allowed``."""
    allowed = tuple(allowed)

    def check(name: str, value: Any) -> None:
        if value not in allowed:
            raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")

    return check


def at_least(low: float, note: str = "") -> Check:
    """The value must be ``>= low``; ``note`` is added in parentheses (e.g. ``0: CPU``)."""

    def check(name: str, value: Any) -> None:
        if not value >= low:
            raise ValueError(f"{name} must be >= {low:g}{f' ({note})' if note else ''}, got {value}")

    return check


def above(low: float) -> Check:
    """The value must be ``> low`` (and not NaN)."""

    def check(name: str, value: Any) -> None:
        if not value > low:
            raise ValueError(f"{name} must be > {low:g}, got {value}")

    return check


def in_range(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Check:
    """The value must lie in the interval from ``low`` to ``high`` (closed unless ``*_open``);
    the message writes it as ``[0, 1)`` etc."""
    text = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(name: str, value: Any) -> None:
        ok = not math.isnan(value) and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            raise ValueError(f"{name} must be in {text}, got {value}")

    return check


def all_of(*checks: Check) -> Check:
    """Every one of ``checks``, in order."""

    def check(name: str, value: Any) -> None:
        for c in checks:
            c(name, value)

    return check


def registry_name(name: str, value: Any) -> None:
    """A model or environment name the registry accepts (``components.registry.validate_name``)."""
    if value:
        from components import registry

        registry.validate_name(value, name)


def comma_list(cast: Callable[[str], Any], what: str, example: str) -> Callable[[Any], tuple]:
    """A ``parse`` for list settings passed as comma-separated text: ``"256, 128"`` ->
    ``(256, 128)`` (empty text: ``()``); a list or tuple is kept (as a tuple). ``what`` and
    ``example`` word the error (``'2x' must be comma-separated integers, e.g. '256,128'``)."""

    def parse(value: Any) -> tuple:
        if not isinstance(value, str):
            return tuple(value)
        try:
            return tuple(cast(item) for item in value.replace(" ", "").split(",") if item)
        except ValueError:
            raise ValueError(f"{value!r} must be comma-separated {what}, e.g. {example!r}") from None

    return parse


# --- settings shared by several steps ---------------------------------------------------------------
DATA_URI = Setting(
    str, "", "images: class folders, a CSV manifest (path,label) or TFRecord files; local path or gs://", required=True
)
REGISTRY_URI = Setting(str, "", "model registry root (local folder or gs://bucket/prefix)", required=True)
MODEL_NAME = Setting(str, "image-classifier", "registry model name", check=registry_name)
TARGET_ENV = Setting(
    str, "dev", "environment alias the pushed version is promoted to (and whose model is the champion)", check=registry_name
)


def _known_base_model(name: str, value: Any) -> None:
    from components import base_models

    base_models.get_spec(value)


BASE_MODEL = Setting(
    str, "mobilenet_v2", "keras.applications base model (see components/base_models.py)", check=_known_base_model
)
