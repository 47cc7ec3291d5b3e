"""``kfp-finetune models``: read and change the model registry from the command line.

Subcommands (each takes ``--registry-uri URI``, a local folder or ``gs://bucket/prefix``, and
``--json`` for machine-readable output on stdout)::

    models list
    models describe --model NAME [--version N | --alias ENV]
    models promote  --model NAME --version N --to ENV [--force --reason TEXT]
    models rollback --model NAME --alias ENV [--reason TEXT]
    models audit    --model NAME [--alias ENV]
    models env-order [--set dev,staging,prod]
    models export-serving --model NAME --alias ENV --base-path DIR [--keep N]
    models check    [--repair] [--stale-after SECONDS]

``promote`` applies the promotion policy (``components.registry.check_promotion``): the version
must be blessed and must have been in the environment before ``--to`` in the registry's
environment order (``<registry>/registry.json``, default dev -> staging -> prod). ``--force``
overrides it and needs ``--reason``; both are recorded. Every alias move (push, promote,
rollback) is in the model's audit log, which ``audit`` prints.

``check`` reports damaged versions, aliases and audit logs, and what killed or failed writers
left behind, which ``--repair`` removes (``components.registry.check``); ``list`` marks damaged
versions.

Exit codes: 0 on success; 1 when ``check`` leaves a problem (damage, or a stale leftover not
removed); 2 on a registry error, a refused promotion or a bad value, with one
``error: ...`` line on stderr (``pipelines.errors``). The actor recorded for promote/rollback is ``--actor``, else the
``USER`` environment variable (read when the command runs), else ``"unknown"``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from components import registry
from pipelines import errors

EXIT_OK = 0
EXIT_PROBLEMS = errors.EXIT_FAILED


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
        parser.set_defaults(func=errors.command(func))
        return parser

    leaf("list", "List models with their versions and aliases.", _list)

    describe = leaf(
        "describe", "Show a version's metadata and aliases, or a model's versions and alias histories.", _describe
    )
    describe.add_argument("--model", required=True, help="model name")
    which = describe.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="version number")
    which.add_argument("--alias", help="environment alias, e.g. prod")

    promote = leaf(
        "promote",
        "Point an environment alias at a version. The version must be blessed and have been in the "
        "environment before ENV in the registry's order (registry.json; default dev,staging,prod).",
        _promote,
    )
    promote.add_argument("--model", required=True, help="model name")
    promote.add_argument("--version", type=int, required=True, help="version number")
    promote.add_argument("--to", required=True, metavar="ENV", help="environment alias, e.g. staging or prod")
    promote.add_argument("--force", action="store_true",
                         help="override the promotion policy (needs --reason; recorded in the audit log)")
    promote.add_argument("--reason", help="recorded in the alias history and audit log")
    promote.add_argument("--actor", help="recorded in the alias history (default: $USER)")

    rollback = leaf("rollback", "Move an alias back to the version it pointed at before.", _rollback)
    rollback.add_argument("--model", required=True, help="model name")
    rollback.add_argument("--alias", required=True, metavar="ENV", help="environment alias")
    rollback.add_argument("--reason", help="recorded in the alias history")
    rollback.add_argument("--actor", help="recorded in the alias history (default: $USER)")

    audit = leaf("audit", "List every alias move of a model (push, promote, rollback), oldest first.", _audit)
    audit.add_argument("--model", required=True, help="model name")
    audit.add_argument("--alias", metavar="ENV", help="only this environment's moves")

    order = leaf("env-order", "Show, or set with --set, the registry's environment order.", _env_order)
    order.add_argument("--set", dest="set_order", metavar="ENVS",
                       help="comma-separated environments, earliest first, e.g. dev,staging,prod")

    export = leaf(
        "export-serving",
        "Copy the version an alias points at into a TF Serving model base path as DIR/<N>/ and remove "
        "higher numbered folders, so TF Serving serves that version (also after a rollback).",
        _export_serving,
    )
    export.add_argument("--model", required=True, help="model name")
    export.add_argument("--alias", required=True, metavar="ENV", help="environment alias, e.g. prod")
    export.add_argument("--base-path", required=True, metavar="DIR",
                        help="local or mounted folder that TF Serving watches (--model_base_path)")
    export.add_argument("--keep", type=int, metavar="N",
                        help="keep at most N numbered folders, the exported one included (default: all up to it)")

    check = leaf(
        "check",
        "Report damaged versions, aliases and audit logs, and what killed or failed pushes left behind "
        "(temporary folders, partial uploads, stale locks). Safe while pushes run. Exit status 1 while a "
        "problem remains.",
        _check,
    )
    check.add_argument("--repair", action="store_true",
                       help="remove the stale leftovers (never a version, alias or audit entry)")
    check.add_argument("--stale-after", type=float, default=registry.STALE_AFTER_S, metavar="SECONDS",
                       help="age after which a leftover no lock can vouch for (a GCS partial upload, an older "
                            "push step's staging folder) counts as stale (default: %(default)g)")


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or os.environ.get("USER") or "unknown"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _format_aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{name} -> {version}" for name, version in sorted(aliases.items())) or "-"


def _open_existing(args: argparse.Namespace) -> registry.Registry:
    """The registry of ``--registry-uri``, refusing a local folder that does not exist (most
    often a mistyped path) and, when ``--model`` is given, a model the registry does not hold,
    so that the error names what is missing instead of an alias or version of it."""
    model_registry = registry.open_registry(args.registry_uri)
    if isinstance(model_registry, registry.LocalRegistry) and not os.path.isdir(model_registry.root):
        raise registry.RegistryError(
            f"no registry at {model_registry.root}: the folder does not exist (the first push creates it)"
        )
    model = getattr(args, "model", None)
    if model is not None:
        registry.validate_name(model)
        models = model_registry.list_models()
        if model not in models:
            raise registry.ModelNotFoundError(
                f"no model {model!r} in {model_registry.uri} (models: {', '.join(models) or 'none'})"
            )
    return model_registry


def _list(args: argparse.Namespace) -> int:
    """``models list``: JSON ``{"registry_uri", "models": [{"model", "versions", "aliases", "damaged"}]}``.

    ``damaged`` lists ``{"version", "problem"}`` for each listed version that ``models check``
    finds damaged (``components.registry.damaged_versions``). A local registry folder that does
    not exist is an error (most often a mistyped path); an existing, empty one lists no models.
    """
    model_registry = _open_existing(args)
    models = [
        {"model": m, "versions": model_registry.list_versions(m), "aliases": model_registry.list_aliases(m),
         "damaged": [{"version": v, "problem": p} for v, p in sorted(registry.damaged_versions(model_registry, m).items())]}
        for m in model_registry.list_models()
    ]
    if args.json:
        _print_json({"registry_uri": model_registry.uri, "models": models})
        return EXIT_OK
    if not models:
        print(f"no models in {model_registry.uri}")
    for entry in models:
        damaged = {d["version"] for d in entry["damaged"]}
        print(entry["model"])
        print(f"  versions: {', '.join(str(v) + (' (DAMAGED)' if v in damaged else '') for v in entry['versions'])}")
        print(f"  aliases:  {_format_aliases(entry['aliases'])}")
        for d in entry["damaged"]:
            print(f"  damaged version {d['version']}: {d['problem']}")
    return EXIT_OK


def _describe(args: argparse.Namespace) -> int:
    """``models describe``.

    With ``--version`` or ``--alias``, JSON ``{"model", "version", "uri", "aliases": [names],
    "metadata"}``; without, ``{"model", "versions", "aliases": {name: {"version", "history"}}}``.
    """
    model_registry = _open_existing(args)
    if args.version is None and args.alias is None:
        return _describe_model(model_registry, args)
    found = model_registry.resolve(args.model, version=args.version, alias=args.alias)
    metadata = model_registry.get_metadata(found.model, found.version)
    aliases = sorted(a for a, v in model_registry.list_aliases(found.model).items() if v == found.version)
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


def _describe_model(model_registry: registry.Registry, args: argparse.Namespace) -> int:
    versions = model_registry.list_versions(args.model)
    if not versions:
        raise registry.ModelNotFoundError(f"model {args.model!r} has no complete version in {model_registry.uri}")
    aliases = {
        alias: {"version": version, "history": model_registry.alias_history(args.model, alias)}
        for alias, version in model_registry.list_aliases(args.model).items()
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
    """``models promote``: JSON ``{"model", "alias", "version", "previous_version", "forced", "overridden"}``."""
    model_registry = _open_existing(args)
    entry = model_registry.promote(
        args.model, args.version, args.to, actor=_actor(args), reason=args.reason, force=args.force
    )
    if args.json:
        _print_json({"model": args.model, "alias": args.to, "version": entry["version"],
                     "previous_version": entry["previous_version"], "forced": entry["forced"],
                     "overridden": entry["overridden"]})
        return EXIT_OK
    # previous_version comes from the committed entry, so it is right under concurrent moves too.
    _report_move(args, "promoted", args.to, entry["previous_version"], entry["version"])
    if entry["forced"]:
        print(f"forced ({args.reason}); overrode: {'; '.join(entry['overridden']) or 'nothing'}")
    return EXIT_OK


def _rollback(args: argparse.Namespace) -> int:
    """``models rollback``: JSON ``{"model", "alias", "version", "previous_version"}``."""
    model_registry = _open_existing(args)
    previous = model_registry.get_alias(args.model, args.alias)
    version = model_registry.rollback(args.model, args.alias, actor=_actor(args), reason=args.reason)
    return _report_move(args, "rolled back", args.alias, previous, version)


def _report_move(args: argparse.Namespace, verb: str, alias: str, previous: int | None, version: int) -> int:
    if args.json:
        _print_json({"model": args.model, "alias": alias, "version": version, "previous_version": previous})
    else:
        was = "unset" if previous is None else f"version {previous}"
        print(f"{verb} {alias} of {args.model} to version {version} (was {was})")
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    """``models audit``: JSON ``{"model", "events": [...]}`` (see ``Registry.audit``)."""
    model_registry = _open_existing(args)
    events = model_registry.audit(args.model, alias=args.alias)
    if args.json:
        _print_json({"model": args.model, "events": events})
        return EXIT_OK
    if not events:
        print(f"no alias moves of {args.model} in {model_registry.uri}")
    for e in events:
        previous = "-" if e.get("from_version") is None else e["from_version"]
        forced = "  FORCED" if e.get("forced") else ""
        reason = f"  ({e['reason']})" if e.get("reason") else ""
        print(f"{e.get('time')}  {e.get('action'):<8}  {e.get('alias')}  {previous} -> {e.get('to_version')}  "
              f"by {e.get('actor') or 'unknown'}{forced}{reason}")
    return EXIT_OK


def _env_order(args: argparse.Namespace) -> int:
    """``models env-order``: JSON ``{"registry_uri", "env_order": [...], "aliases_outside_order": ["model:alias", ...]}``.

    An alias that is set but not in the order (``staging`` after ``--set dev,qa,prod``) is named on
    stderr: promotions to it are refused until the order names it again.
    """
    model_registry = registry.open_registry(args.registry_uri)
    if args.set_order is not None:
        order = model_registry.set_env_order(registry.parse_env_order(args.set_order))
    else:
        order = model_registry.env_order()
    outside = [f"{model}:{alias}" for model in model_registry.list_models()
               for alias in sorted(model_registry.list_aliases(model)) if alias not in order]
    if outside:
        print(f"warning: alias(es) set but not in the environment order: {', '.join(outside)}; promotions to them "
              "are refused until the order names them (models env-order --set ...)", file=sys.stderr)
    if args.json:
        _print_json({"registry_uri": model_registry.uri, "env_order": list(order), "aliases_outside_order": outside})
    else:
        print(" -> ".join(order))
    return EXIT_OK


def _export_serving(args: argparse.Namespace) -> int:
    """``models export-serving``: JSON ``{"model", "alias", "version", "path", "copied", "removed", "kept"}``."""
    model_registry = _open_existing(args)
    done = registry.export_to_serving_base(model_registry, args.model, args.alias, args.base_path, keep=args.keep)
    if args.json:
        _print_json({"model": done.model, "alias": done.alias, "version": done.version, "path": done.path,
                     "copied": done.copied, "removed": list(done.removed), "kept": list(done.kept)})
        return EXIT_OK
    how = "exported" if done.copied else "already present:"
    removed = ", ".join(map(str, done.removed)) or "none"
    print(f"{how} {done.model} version {done.version} ({done.alias}) at {done.path}; "
          f"removed: {removed}; versions in base path: {', '.join(map(str, done.kept))}")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    """``models check``: JSON ``{"registry_uri", "findings": [Finding fields], "problems": n}``.

    Returns ``EXIT_PROBLEMS`` (1) while a finding is a problem (see ``Finding.is_problem``).
    """
    import dataclasses
    import tempfile

    if args.stale_after < 0:
        raise ValueError(f"invalid --stale-after {args.stale_after:g}: use seconds >= 0")
    model_registry = _open_existing(args)
    model_registry.stale_after_s = args.stale_after
    findings = registry.check_registry(model_registry, repair=args.repair, temp_dir=tempfile.gettempdir())
    problems = sum(f.is_problem for f in findings)
    if args.json:
        _print_json({"registry_uri": model_registry.uri, "problems": problems,
                     "findings": [{**dataclasses.asdict(f), "is_problem": f.is_problem} for f in findings]})
        return EXIT_PROBLEMS if problems else EXIT_OK
    for f in findings:
        what = f.kind if not f.leftover or f.in_use or f.removed else f"stale {f.kind}"
        print(f"{what}: {f.location}: {f.problem}")
    removed = sum(f.removed for f in findings)
    verdict = "no problems" if not problems else f"{problems} problem(s)"
    hint = "; run with --repair to remove the stale leftovers" if any(f.leftover and f.is_problem for f in findings) else ""
    print(f"{model_registry.uri}: {verdict}" + (f", {removed} leftover(s) removed" if removed else "") + hint)
    return EXIT_PROBLEMS if problems else EXIT_OK
