"""``kfp-finetune models``: read and change the model registry from the command line.

Subcommands (each takes ``--registry-uri URI``, a local folder or ``gs://bucket/prefix``, and
``--json`` for machine-readable output on stdout)::

    models list
    models describe --model NAME [--version N | --alias ENV]
    models promote  --model NAME --version N --to ENV [--reason TEXT]
    models rollback --model NAME --alias ENV [--reason TEXT]

Exit codes: 0 on success; 2 on a registry error or a bad value, with one ``error: ...`` line on
stderr. The actor recorded for promote/rollback is ``--actor``, else the ``USER`` environment
variable (read when the command runs), else ``"unknown"``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from components import registry as reg

EXIT_OK = 0
EXIT_ERROR = 2


def add_parser(subparsers: Any) -> None:
    """Adds the ``models`` command and its subcommands.

    Args:
        subparsers: What ``argparse.ArgumentParser.add_subparsers()`` returned. Every leaf sets
            ``func``: a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
    """
    models = subparsers.add_parser(
        "models", help="list, describe, promote and roll back registered models",
        description="Read and change the model registry (a local folder or gs://bucket/prefix).",
    )
    commands = models.add_subparsers(dest="models_command", metavar="COMMAND", required=True)

    def leaf(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--registry-uri", required=True, metavar="URI",
                            help="registry root: a local folder, file:///path or gs://bucket/prefix")
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        parser.set_defaults(func=_guarded(func))
        return parser

    leaf("list", "List models with their versions and aliases.", _list)

    describe = leaf(
        "describe", "Show a version's metadata and aliases, or a model's versions and alias histories.", _describe
    )
    describe.add_argument("--model", required=True, help="model name")
    which = describe.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="version number")
    which.add_argument("--alias", help="environment alias, e.g. prod")

    promote = leaf("promote", "Point an environment alias at a version.", _promote)
    promote.add_argument("--model", required=True, help="model name")
    promote.add_argument("--version", type=int, required=True, help="version number")
    promote.add_argument("--to", required=True, metavar="ENV", help="environment alias, e.g. staging or prod")
    promote.add_argument("--reason", help="recorded in the alias history")
    promote.add_argument("--actor", help="recorded in the alias history (default: $USER)")

    rollback = leaf("rollback", "Move an alias back to the version it pointed at before.", _rollback)
    rollback.add_argument("--model", required=True, help="model name")
    rollback.add_argument("--alias", required=True, metavar="ENV", help="environment alias")
    rollback.add_argument("--reason", help="recorded in the alias history")
    rollback.add_argument("--actor", help="recorded in the alias history (default: $USER)")


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (reg.RegistryError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or os.environ.get("USER") or "unknown"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _format_aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{name} -> {version}" for name, version in sorted(aliases.items())) or "-"


def _list(args: argparse.Namespace) -> int:
    """``models list``: JSON ``{"registry_uri", "models": [{"model", "versions", "aliases"}]}``."""
    registry = reg.open_registry(args.registry_uri)
    models = [
        {"model": m, "versions": registry.list_versions(m), "aliases": registry.list_aliases(m)}
        for m in registry.list_models()
    ]
    if args.json:
        _print_json({"registry_uri": registry.uri, "models": models})
        return EXIT_OK
    if not models:
        print(f"no models in {registry.uri}")
    for entry in models:
        print(entry["model"])
        print(f"  versions: {', '.join(str(v) for v in entry['versions'])}")
        print(f"  aliases:  {_format_aliases(entry['aliases'])}")
    return EXIT_OK


def _describe(args: argparse.Namespace) -> int:
    """``models describe``.

    With ``--version`` or ``--alias``, JSON ``{"model", "version", "uri", "aliases": [names],
    "metadata"}``; without, ``{"model", "versions", "aliases": {name: {"version", "history"}}}``.
    """
    registry = reg.open_registry(args.registry_uri)
    if args.version is None and args.alias is None:
        return _describe_model(registry, args)
    found = registry.resolve(args.model, version=args.version, alias=args.alias)
    metadata = registry.get_metadata(found.model, found.version)
    aliases = sorted(a for a, v in registry.list_aliases(found.model).items() if v == found.version)
    if args.json:
        _print_json({"model": found.model, "version": found.version, "uri": found.uri,
                     "aliases": aliases, "metadata": metadata})
        return EXIT_OK
    print(f"model:    {found.model}")
    print(f"version:  {found.version}")
    print(f"uri:      {found.uri}")
    print(f"aliases:  {', '.join(aliases) or '-'}")
    print("metadata:")
    for line in json.dumps(metadata, indent=2, sort_keys=True).splitlines():
        print(f"  {line}")
    return EXIT_OK


def _describe_model(registry: reg.Registry, args: argparse.Namespace) -> int:
    versions = registry.list_versions(args.model)
    if not versions:
        raise reg.ModelNotFoundError(f"model {args.model!r} has no complete version in {registry.uri}")
    aliases = {
        alias: {"version": version, "history": registry.alias_history(args.model, alias)}
        for alias, version in registry.list_aliases(args.model).items()
    }
    if args.json:
        _print_json({"model": args.model, "versions": versions, "aliases": aliases})
        return EXIT_OK
    print(f"model:    {args.model}")
    print(f"versions: {', '.join(str(v) for v in versions)}")
    print(f"aliases:  {_format_aliases({a: d['version'] for a, d in aliases.items()})}")
    for alias, doc in sorted(aliases.items()):
        print(f"history of {alias}:")
        for e in doc["history"]:
            previous = "-" if e.get("previous_version") is None else e["previous_version"]
            reason = f"  ({e['reason']})" if e.get("reason") else ""
            print(f"  {e.get('time')}  {e.get('action'):<8}  {previous} -> {e.get('version')}  "
                  f"by {e.get('actor') or 'unknown'}{reason}")
    return EXIT_OK


def _promote(args: argparse.Namespace) -> int:
    """``models promote``: JSON ``{"model", "alias", "version", "previous_version"}``."""
    registry = reg.open_registry(args.registry_uri)
    # Read before the move only to report it; under a concurrent update the alias history is the
    # authoritative record.
    previous = registry.get_alias(args.model, args.to)
    registry.set_alias(
        args.model, args.to, args.version, action="promote", actor=_actor(args), reason=args.reason
    )
    return _report_move(args, "promoted", args.to, previous, args.version)


def _rollback(args: argparse.Namespace) -> int:
    """``models rollback``: JSON ``{"model", "alias", "version", "previous_version"}``."""
    registry = reg.open_registry(args.registry_uri)
    previous = registry.get_alias(args.model, args.alias)
    version = registry.rollback(args.model, args.alias, actor=_actor(args), reason=args.reason)
    return _report_move(args, "rolled back", args.alias, previous, version)


def _report_move(args: argparse.Namespace, verb: str, alias: str, previous: int | None, version: int) -> int:
    if args.json:
        _print_json({"model": args.model, "alias": alias, "version": version, "previous_version": previous})
    else:
        was = "unset" if previous is None else f"version {previous}"
        print(f"{verb} {alias} of {args.model} to version {version} (was {was})")
    return EXIT_OK
