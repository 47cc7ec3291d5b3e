"""Pipeline parameters from the command line: one home for ``run-local``, ``submit`` and ``schedule``.

All three commands take the same parameter inputs, added by :func:`add_arguments`:

* ``--config FILE``: a YAML mapping of parameter names (snake_case or kebab-case) to values;
* ``--param NAME=VALUE`` (repeatable), kept for compatibility and for parameters of a
  ``--package`` that the installed pipeline does not have; it overrides ``--config``;
* one ``--kebab-case`` flag per parameter of ``pipelines.pipeline.PARAMETERS``, which also
  overrides ``--config``; giving a parameter both as its flag and as ``--param`` is refused.

:func:`params_from_args` merges them and checks every value with :func:`check_params` against
the pipeline that will run: a ``--package`` compiled elsewhere (perhaps another version) by its
own ``root.inputDefinitions`` (:func:`read_pipeline_package`), the installed pipeline by
``PARAMETERS`` (:func:`installed_pipeline`), without compiling it. Unknown names, missing
required parameters and values of the wrong type are refused with the parameter named, before
anything runs or is sent to a server.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml


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
    """A pipeline's name and input parameters: what checking run parameters needs.

    Attributes:
        path: the compiled package file (``.yaml`` or ``.yml``, KFP IR), or ``None`` for the
            installed pipeline described by ``PARAMETERS`` (see :func:`installed_pipeline`).
        name: ``pipelineInfo.name``.
        parameters: the pipeline's input parameters by name.
    """

    path: str | None
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


def _shown(value: Any) -> str:
    """``repr(value)`` cut short (``reprlib``): a YAML alias bomb (a list of lists of the same
    list, nested) is a few objects in memory but its full repr is exponentially long."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 80, 80
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 5
    return short.repr(value)


def _coerce(value: Any, parameter: PipelineParameter) -> Any:
    """Converts one value to the JSON type the KFP server expects for ``parameter``."""
    kind = parameter.parameter_type
    where = f"parameter {parameter.name!r} ({kind})"
    if value is None:
        raise ValueError(f"{where} has no value (null)")
    if kind == "STRING":
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {_shown(value)}; quote it in YAML")
        return value
    if kind == "NUMBER_INTEGER":
        if isinstance(value, bool):
            raise ValueError(f"{where} must be an integer, got {_shown(value)}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise ValueError(f"{where} must be an integer, got {_shown(value)}")
    if kind == "NUMBER_DOUBLE":
        if isinstance(value, bool):
            raise ValueError(f"{where} must be a number, got {_shown(value)}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{where} must be a number, got {_shown(value)}") from None
        raise ValueError(f"{where} must be a number, got {_shown(value)}")
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{where} must be true or false, got {_shown(value)}")
    if kind in ("LIST", "STRUCT"):
        wanted = list if kind == "LIST" else dict
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where} must be JSON, got {_shown(value)}: {error}") from None
        if not isinstance(value, wanted):
            raise ValueError(f"{where} must be a JSON {'list' if kind == 'LIST' else 'object'}, got {_shown(value)}")
        return value
    raise ValueError(f"{where}: unsupported parameter type {kind!r}")


def check_params(package: PipelinePackage, params: Mapping[str, Any]) -> dict[str, Any]:
    """Checks run parameters against a compiled pipeline and converts them to its types.

    Args:
        package: the pipeline's parameters (see :func:`read_pipeline_package` and
            :func:`installed_pipeline`).
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
            close = difflib.get_close_matches(name, package.parameters, n=1)
            raise ValueError(
                f"unknown pipeline parameter {key!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; {package.name!r} takes: {', '.join(sorted(package.parameters)) or '(none)'}"
            )
        checked[name] = _coerce(value, package.parameters[name])
    missing = sorted(p.name for p in package.parameters.values() if p.required and p.name not in checked)
    if missing:
        raise ValueError(f"missing required pipeline parameter(s): {', '.join(missing)}")
    return checked



# KFP IR parameter type of each Python type a pipeline function may annotate a parameter with
# (kfp.dsl.types.type_utils, kfp 2.17.3).
_IR_TYPES: Mapping[type, str] = {
    str: "STRING",
    int: "NUMBER_INTEGER",
    float: "NUMBER_DOUBLE",
    bool: "BOOLEAN",
    list: "LIST",
    dict: "STRUCT",
}


def installed_pipeline() -> PipelinePackage:
    """The installed pipeline's name and parameters, read from ``pipelines.pipeline.PARAMETERS``.

    Compiling the installed pipeline and reading the package back gives the same parameters (a
    test compares the two); this skips the compile.

    Returns:
        A :class:`PipelinePackage` with ``path`` ``None``, ``name``
        ``pipelines.pipeline.PIPELINE_NAME`` and one parameter per ``PARAMETERS`` entry, required
        when its default is ``None``.

    Raises:
        TypeError: a ``PARAMETERS`` entry has a type other than str, int, float, bool, list or
            dict (the types KFP IR has a parameter type for); the message names it.
    """
    # Imported here, not at module import: the pipeline module imports every component module.
    from pipelines.pipeline import PARAMETERS, PIPELINE_NAME

    parameters = {}
    for name, (kind, default, _) in PARAMETERS.items():
        if kind not in _IR_TYPES:
            raise TypeError(f"pipeline parameter {name!r} has type {kind!r}; KFP takes only str, int, float, bool, list, dict")
        parameters[name] = PipelineParameter(name=name, parameter_type=_IR_TYPES[kind], required=default is None)
    return PipelinePackage(path=None, name=PIPELINE_NAME, parameters=parameters)


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--param takes KEY=VALUE, got {text!r}")
    return key.strip(), value


def yaml_error_line(path: str, error: yaml.YAMLError) -> str:
    """One line for a YAML file that does not parse: the file, the line and column (1-based)
    where the parser stopped, its complaint, and what was expected.

    Args:
        path: The file.
        error: What ``yaml.safe_load`` raised; a ``MarkedYAMLError`` knows where it stopped
            (``problem_mark``) and why (``problem``, with ``context``).
    """
    mark = getattr(error, "problem_mark", None)
    where = f"config file {path!r} is not valid YAML: " + (f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "")
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    context = getattr(error, "context", None)
    if context:
        problem = f"{problem} ({' '.join(str(context).split())})"
    return f"{where}: {problem}; expected a YAML mapping of parameter names to values"


def load_params(config_path: str | None, overrides: Sequence[tuple[str, str]] | None) -> dict[str, Any]:
    """Merges parameters from a YAML config file and ``KEY=VALUE`` overrides.

    Args:
        config_path: a YAML mapping of pipeline parameter names (snake_case or kebab-case) to
            values, or ``None``.
        overrides: ``(key, value)`` pairs from ``--param``; they win over the config file.

    Returns:
        Parameter name (snake_case) to value.

    Raises:
        FileNotFoundError: ``config_path`` does not exist.
        ValueError: the config is not valid YAML or not a mapping, or the same parameter is given
            twice in it (once snake_case, once kebab-case).
    """
    params: dict[str, Any] = {}
    if config_path:
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"config file {config_path!r} does not exist")
        with open(config_path, encoding="utf-8") as f:
            try:
                loaded = yaml.safe_load(f)
            except yaml.YAMLError as error:
                raise ValueError(yaml_error_line(config_path, error)) from None
            except UnicodeDecodeError as error:
                raise ValueError(f"config file {config_path!r} is not UTF-8 text (byte {error.start}); expected a YAML mapping") from None
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


class _ParameterFlag(argparse.Action):
    """Stores a per-parameter flag's text in ``namespace.parameter_flags`` (name -> text).

    The text is left as given: :func:`check_params` converts it, against the pipeline that will
    run, exactly as it converts a ``--param`` value.
    """

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        flags = dict(getattr(namespace, "parameter_flags", {}))
        flags[self.dest] = values
        namespace.parameter_flags = flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config``, ``--param`` and one ``--kebab-case`` flag per pipeline parameter.

    The flags come from ``pipelines.pipeline.PARAMETERS`` (in its order, with its help and
    default); :func:`params_from_args` reads what they parsed.

    Args:
        parser: the command's parser.

    Raises:
        argparse.ArgumentError: a parameter's flag is already an option of ``parser``.
    """
    from pipelines.pipeline import PARAMETERS

    parser.add_argument("--config", metavar="FILE", help="YAML mapping of pipeline parameters (snake_case or kebab-case keys)")
    parser.add_argument(
        "--param",
        metavar="NAME=VALUE",
        action="append",
        type=_parse_param,
        default=[],
        help="one pipeline parameter (repeatable; also one of a --package without its own flag); overrides --config",
    )
    group = parser.add_argument_group("pipeline parameters (override --config)")
    for name, (kind, default, help_text) in PARAMETERS.items():
        shown = "required" if default is None else f"default: {default!r}"
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, action=_ParameterFlag, default=argparse.SUPPRESS,
                           metavar=kind.__name__.upper(), help=f"{help_text} ({shown})")


def collect_params(args: argparse.Namespace) -> dict[str, Any]:
    """The parameters a command line gives, unchecked: ``--config``, then ``--param`` and flags.

    Args:
        args: parsed by a parser set up with :func:`add_arguments` (``config``, ``param`` and
            ``parameter_flags``).

    Returns:
        Parameter name (snake_case) to value as given: a YAML value, or the text of ``--param``
        or a flag.

    Raises:
        FileNotFoundError: the ``--config`` file does not exist.
        ValueError: the config is not a valid YAML mapping or sets a parameter twice, or a
            parameter is given both as its flag and as ``--param``.
    """
    params = load_params(args.config, args.param)
    from_param = {key.replace("-", "_") for key, _ in args.param}
    for name, text in getattr(args, "parameter_flags", {}).items():
        if name in from_param:
            raise ValueError(f"pipeline parameter {name!r} is given twice: as --{name.replace('_', '-')} and as --param")
        params[name] = text
    return params


def params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The checked parameters of a ``run-local``, ``submit`` or ``schedule`` command line.

    Args:
        args: as for :func:`collect_params`, plus ``package`` (a compiled pipeline file or
            ``None``).

    Returns:
        Parameter name to a value of the parameter's type (see :func:`check_params`), checked
        against ``args.package``'s own parameters when given, else the installed pipeline's
        ``PARAMETERS`` (nothing is compiled). Parameters left out are absent: the pipeline's
        defaults apply.

    Raises:
        FileNotFoundError: the ``--config`` or ``--package`` file does not exist.
        ValueError: see :func:`collect_params`, :func:`read_pipeline_package` and
            :func:`check_params`; the message names the file or parameter.
    """
    params = collect_params(args)
    pipeline = read_pipeline_package(args.package) if args.package else installed_pipeline()
    return check_params(pipeline, params)
