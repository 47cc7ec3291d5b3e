"""Pure rules of the model registry: valid names and versions, the environment order, the
promotion policy and the rollback target. Nothing here reads or writes storage.

Promotion policy (:func:`check_promotion`, applied by ``Registry.promote`` and
``kfp-finetune models promote``): a version must be blessed, and it must have been in the
environment before the target in the registry's environment order (``registry.json``, default
dev -> staging -> prod); ``force`` with a reason overrides both and is recorded.
``Registry.set_alias`` is the unchecked primitive underneath.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from components.registry.errors import PromotionRefusedError

DEFAULT_ENV_ORDER = ("dev", "staging", "prod")
ALIAS_ACTIONS = ("push", "promote", "rollback")

# Model, alias and environment names; also the names a listing accepts as models and aliases.
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
NAME_MAX_LEN = 128
# A version folder's name (TF Serving serves numeric folders only).
VERSION_RE = re.compile(r"[0-9]+")


def validate_name(value: Any, field: str = "model name") -> str:
    """Checks a model or alias name.

    Args:
        value: The name to check.
        field: What the name is, used in the error message ("model name", "alias").

    Returns:
        The name, unchanged.

    Raises:
        ValueError: If the name is not a string of 1 to 128 letters, digits, ``-``, ``_`` or ``.``
            that does not start with ``.``.
    """
    if not isinstance(value, str) or len(value) > NAME_MAX_LEN or not NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid {field} {value!r}: use 1 to {NAME_MAX_LEN} letters, digits, '-', '_' or '.', "
            "not starting with '.'"
        )
    return value


def validate_version(value: Any) -> int:
    """Checks a version number.

    Args:
        value: The version to check.

    Returns:
        The version, unchanged.

    Raises:
        ValueError: If the version is not an ``int`` >= 1 (a ``bool`` is refused).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"invalid version {value!r}: use an integer >= 1")
    return value


def validate_env_order(value: Any, where: str | None = None) -> tuple[str, ...]:
    """Checks an environment order, e.g. ``["dev", "staging", "prod"]``.

    Args:
        value: A list or tuple of alias names, earliest environment first.
        where: What is being checked, for the error message; default ``environment order <value>``.

    Returns:
        The order as a tuple.

    Raises:
        ValueError: Not a non-empty list of distinct valid alias names (see :func:`validate_name`).
    """
    where = where or f"environment order {value!r}"
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"invalid {where}: use a non-empty list of environment names, earliest first")
    for name in value:
        try:
            validate_name(name, "environment")
        except ValueError as err:
            raise ValueError(f"invalid {where}: {err}") from err
    duplicates = sorted({n for n in value if list(value).count(n) > 1})
    if duplicates:
        raise ValueError(f"invalid {where}: {', '.join(map(repr, duplicates))} appears more than once")
    return tuple(value)


def parse_env_order(text: str) -> tuple[str, ...]:
    """Parses a comma-separated environment order such as ``"dev,staging,prod"``.

    Raises:
        ValueError: See :func:`validate_env_order`; the message names ``text``.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid environment order {text!r}: use names separated by commas")
    return validate_env_order([part.strip() for part in text.split(",")], f"environment order {text!r}")


def check_promotion(
    model: str,
    version: int,
    metadata: dict,
    target_env: str,
    environments_of_version: frozenset[str] | set[str],
    env_order: tuple[str, ...] | list[str] = DEFAULT_ENV_ORDER,
    force: bool = False,
    reason: str | None = None,
) -> list[str]:
    """Decides whether ``version`` may be promoted to ``target_env`` (pure: reads nothing).

    Rules, each of which ``force`` overrides:
        1. Blessing: ``metadata["blessing"]["blessed"]`` must be ``True`` (the push step writes
           ``"blessing": {"blessed": bool, "reason": str}``). Missing or malformed blessing counts
           as not blessed. This rule holds for every environment.
        2. Environment order: when ``target_env`` is in ``env_order`` and not its first entry, the
           version must be, or once have been, in the environment just before it, i.e. be in
           ``environments_of_version``.
        3. Known environment: ``target_env`` must be in ``env_order`` (a mistyped ``prdo`` would
           otherwise become a new, unordered environment). Add an environment with
           ``models env-order --set``, or force a one-off alias such as ``canary``.

    Args:
        model: Model name, for messages.
        version: The version to promote, for messages.
        metadata: The version's ``metadata.json`` content.
        target_env: The alias to move.
        environments_of_version: Every alias whose history ever pointed at ``version`` (a
            history, not only current values: a version that moved on from staging still counts);
            see :func:`environments_of_version`.
        env_order: Environments, earliest first.
        force: Override the rules.
        reason: Why; required (non-blank) with ``force``.

    Returns:
        The messages of the rules that ``force`` overrode (``[]`` when every rule holds).

    Raises:
        ValueError: ``force`` without a non-blank ``reason``, or a bad ``env_order``.
        PromotionRefusedError: A rule is broken and ``force`` is not set; the message names the
            model, version, environment and what is missing.
    """
    order = validate_env_order(env_order)
    if force and (not isinstance(reason, str) or not reason.strip()):
        raise ValueError(
            f"forced promotion of model {model!r} version {version} to {target_env!r} needs a reason "
            "(--reason TEXT): it is recorded in the audit log"
        )
    violations = []
    blessing = metadata.get("blessing")
    blessed = blessing.get("blessed") if isinstance(blessing, dict) else None
    if blessed is not True:
        if blessed is False:
            why = blessing.get("reason")
            violations.append(f"version {version} was not blessed" + (f" ({why})" if why else ""))
        else:
            violations.append(f"version {version} has no blessing in its metadata (counts as not blessed)")
    if target_env not in order:
        violations.append(
            f"{target_env!r} is not in the environment order ({' -> '.join(order)}); add it with "
            "'kfp-finetune models env-order --set ...'"
        )
    elif order.index(target_env) > 0:
        before = order[order.index(target_env) - 1]
        if before not in environments_of_version:
            violations.append(
                f"version {version} was never in {before!r} (environment order: {' -> '.join(order)}); "
                "promote it there first"
            )
    if violations and not force:
        raise PromotionRefusedError(
            f"cannot promote model {model!r} version {version} to {target_env!r}: "
            + "; ".join(violations)
            + ", or use --force --reason TEXT to override",
            violations,
        )
    return violations


def environments_of_version(histories: dict[str, Iterable[dict]], version: int) -> frozenset[str]:
    """The environments whose alias ever pointed at ``version``, for :func:`check_promotion`.

    Args:
        histories: Alias name -> its history entries (each with an int ``"version"``).
        version: The version asked about.

    Returns:
        The alias names with at least one history entry for ``version``.
    """
    return frozenset(
        alias for alias, history in histories.items() if any(e.get("version") == version for e in history)
    )


def rollback_target(history: list[dict], current_version: int) -> int | None:
    """The version a rollback moves an alias back to, or None when there is none.

    It is the ``previous_version`` of the latest history entry whose ``previous_version`` differs
    from ``current_version``: a repeated promotion of the same version records a move from a
    version to itself, which is not a version to go back to. A second rollback therefore undoes
    the first (it goes back to the version the first rollback left).

    Args:
        history: The alias's history entries, oldest first (each with ``"previous_version"``,
            an int or None).
        current_version: The version the alias points at now.

    Returns:
        The version to go back to, or None if the alias has pointed at only one version so far.
    """
    earlier = (e.get("previous_version") for e in reversed(history))
    return next((v for v in earlier if v is not None and v != current_version), None)
