"""Model registry on plain storage: a local folder or ``gs://bucket/prefix``.

Layout (the same on a local disk and on Google Cloud Storage)::

    <root>/<model>/<N>/                  one immutable version; N = 1, 2, 3, ...
    <root>/<model>/<N>/saved_model.pb    the pushed folder's files, copied as they are
    <root>/<model>/<N>/variables/...
    <root>/<model>/<N>/metadata.json     written last: the given metadata plus "model",
                                         "version" and "created_at"
    <root>/<model>/aliases/<alias>.json  {"model", "alias", "version", "history": [...]}
    <root>/<model>/audit.jsonl           local only: the audit log, one JSON event a line
    <root>/<model>/audit/<event id>.json GCS only: the audit log, one object an event
    <root>/<model>/.tmp-<uuid>/          local only: a push in progress
    <root>/<model>/.reserved/<N>         GCS only: marker that claims version N
    <root>/registry.json                 optional settings: {"env_order": ["dev", "staging", "prod"]}

Numeric version folders sit directly under the model folder, so TF Serving can use
``<root>/<model>`` as its model base path; TF Serving ignores the non-numeric ``aliases`` and
hidden folders.

A version is *complete*, and only then listed, once its ``metadata.json`` exists. On a local disk the
whole version (metadata included) is written into a hidden temporary folder and then renamed into
place, so it appears atomically. GCS has no rename: a version number is claimed with a create-only
write of a marker object, the files are uploaded (``saved_model.pb`` after the variables, so a
TF Serving poll never finds a graph without its weights) and ``metadata.json`` is uploaded last.

Concurrency guarantees:
    * Two pushes never get the same version. Local: ``os.rename`` of a folder onto an existing
      non-empty folder fails on Linux, so a push that loses the race retries with the next number.
      GCS: the marker write uses ``if_generation_match=0``; a 412 answer means the number is taken.
    * Two alias updates never lose one another. Local: an ``fcntl`` lock file around a
      read-modify-write whose write is write-temp-then-``os.replace``. GCS: compare-and-swap on
      the alias object's generation, retried on a 412 answer.
    * Every alias move (push with an alias, promote, rollback; forced or not) appends one event to
      the model's audit log once the move is committed, and two concurrent moves never lose one
      another's event. Local: one ``write`` in append mode under a second ``fcntl`` lock, taken
      while the alias lock is held, so the file is in commit order. GCS has no append: each event
      is its own create-only object (``if_generation_match=0``) named ``<UTC time>-<random>``, so
      writers never touch the same object and a listing is in time order.

Promotion policy (:meth:`Registry.promote`, ``kfp-finetune models promote``): a version must be
blessed, and it must have been in the environment before the target in the registry's environment
order (``registry.json``, default dev -> staging -> prod); ``force`` with a reason overrides both
and is recorded. :meth:`Registry.set_alias` is the unchecked primitive underneath.

This module imports no KFP or TensorFlow so that it loads fast; the GCS client is imported only
when a ``gs://`` registry is opened.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import errno
import fcntl
import json
import logging
import os
import random
import re
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
ALIASES_DIR = "aliases"
ALIAS_ACTIONS = ("push", "promote", "rollback")
AUDIT_FILE = "audit.jsonl"
AUDIT_DIR = "audit"
CONFIG_FILE = "registry.json"
DEFAULT_ENV_ORDER = ("dev", "staging", "prod")

_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_NAME_MAX_LEN = 128
_VERSION_RE = re.compile(r"[0-9]+")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_GCS_RESERVED_DIR = ".reserved"
_CONFIG_KEYS = ("env_order",)

# Contention is between a handful of pushes or promotions; a bound keeps a bug from spinning forever.
_MAX_VERSION_ATTEMPTS = 1000
_MAX_CAS_ATTEMPTS = 200


# --------------------------------------------------------------------------------------------------
# Errors


class RegistryError(Exception):
    """Base class of every registry error (not raised for bad arguments: those are ValueError)."""


class ModelNotFoundError(RegistryError):
    """The model has no complete version in the registry."""


class VersionNotFoundError(RegistryError):
    """The requested version does not exist or is not complete."""


class AliasNotFoundError(RegistryError):
    """The alias has never been set for the model."""


class NoPreviousVersionError(RegistryError):
    """A rollback was asked for but the alias has no version to go back to."""


class CorruptMetadataError(RegistryError):
    """A ``metadata.json`` or alias file is not valid JSON or does not have the expected shape."""


class ConcurrentUpdateError(RegistryError):
    """An update kept losing the race to other writers and gave up after many attempts."""


class RegistryConfigError(RegistryError):
    """``<root>/registry.json`` is not valid JSON or does not have the expected shape."""


class PromotionRefusedError(RegistryError):
    """The promotion policy refused a promotion; ``force`` with a reason overrides it.

    Attributes:
        violations: One message per broken rule, in rule order (blessing, then environment order).
    """

    def __init__(self, message: str, violations: list[str]) -> None:
        super().__init__(message)
        self.violations = list(violations)


class ServingExportError(RegistryError):
    """A serving base path holds something the export must not overwrite."""


# --------------------------------------------------------------------------------------------------
# Values and validation


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One complete version of a model.

    Attributes:
        model: Model name.
        version: Version number, >= 1.
        uri: The version folder: an absolute local path, or ``gs://bucket/prefix/<model>/<N>``.
    """

    model: str
    version: int
    uri: str


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
    if not isinstance(value, str) or len(value) > _NAME_MAX_LEN or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid {field} {value!r}: use 1 to {_NAME_MAX_LEN} letters, digits, '-', '_' or '.', "
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
            history, not only current values: a version that moved on from staging still counts).
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


def _parse_config(data: bytes, where: str) -> dict:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RegistryConfigError(f"registry settings {where} are not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise RegistryConfigError(f"registry settings {where} are not a JSON object (got {type(doc).__name__})")
    unknown = sorted(set(doc) - set(_CONFIG_KEYS))
    if unknown:
        raise RegistryConfigError(
            f"registry settings {where} have unknown keys {unknown}: use {', '.join(_CONFIG_KEYS)}"
        )
    if "env_order" in doc:
        try:
            validate_env_order(doc["env_order"], f"'env_order' {doc['env_order']!r} in {where}")
        except ValueError as err:
            raise RegistryConfigError(str(err)) from err
    return doc


def _event_id(now: datetime.datetime) -> str:
    # Sorts by time as a string (fixed width, UTC), and the random part keeps two writers in the
    # same microsecond apart.
    return f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:12]}"


def _now_iso() -> str:
    # "+00:00" rather than "Z": datetime.fromisoformat reads it on Python 3.10 too.
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _metadata_bytes(metadata: dict, model: str, version: int, created_at: str) -> bytes:
    doc = dict(metadata)
    doc.update(model=model, version=version, created_at=created_at)
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _parse_metadata(data: bytes, model: str, version: int, where: str) -> dict:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptMetadataError(
            f"metadata of model {model!r} version {version} is not valid JSON: {where}: {err}"
        ) from err
    if not isinstance(doc, dict):
        raise CorruptMetadataError(
            f"metadata of model {model!r} version {version} is not a JSON object "
            f"(got {type(doc).__name__}): {where}"
        )
    return doc


def _parse_alias(data: bytes, model: str, alias: str, where: str) -> dict:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptMetadataError(
            f"alias {alias!r} of model {model!r} is not valid JSON: {where}: {err}"
        ) from err
    version = doc.get("version") if isinstance(doc, dict) else None
    history = doc.get("history") if isinstance(doc, dict) else None
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or not isinstance(history, list)
        or not all(isinstance(entry, dict) for entry in history)
    ):
        raise CorruptMetadataError(
            f"alias {alias!r} of model {model!r} is not an object with an integer 'version' and a "
            f"'history' list of objects: {where}"
        )
    return doc


def _alias_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _alias_names(file_names: list[str]) -> list[str]:
    """Alias names from the file names in an aliases folder (lock and temp files are hidden)."""
    stems = [n[: -len(".json")] for n in file_names if n.endswith(".json")]
    return [stem for stem in stems if _NAME_RE.fullmatch(stem)]


def _source_files(source_dir: str) -> list[str]:
    """Files to push, as ``/``-separated paths relative to ``source_dir``, in copy order.

    The source's own ``metadata.json`` is left out (the registry writes its own). ``saved_model.pb``
    comes last, after the variables it refers to, so a reader that polls (TF Serving on GCS) does
    not find a graph without its weights. Empty folders are not kept.
    """
    files = []
    for dirpath, _, filenames in os.walk(source_dir):
        for filename in filenames:
            rel = os.path.relpath(os.path.join(dirpath, filename), source_dir).replace(os.sep, "/")
            if rel != METADATA_FILE:
                files.append(rel)
    return sorted(files, key=lambda rel: (rel == "saved_model.pb", rel))


# --------------------------------------------------------------------------------------------------
# Registry


class Registry(abc.ABC):
    """A model registry; get one with :func:`open_registry`.

    Subclasses store bytes; this class holds the rules (names, versions, alias history, rollback),
    so both storages behave the same.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # --- versions -----------------------------------------------------------------------------

    def push(
        self,
        model: str,
        source_dir: str,
        metadata: dict,
        alias: str | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Copies a local folder into a new version of ``model``.

        The whole folder is copied (a SavedModel at its root: ``saved_model.pb``, ``variables/``,
        ``assets/``, plus any other file) into ``<root>/<model>/<N>/`` with N = the highest
        existing version + 1, then ``metadata.json`` is written: ``metadata`` plus ``"model"``,
        ``"version"`` and ``"created_at"`` (ISO-8601, UTC), which override keys of the same name.
        A ``metadata.json`` at the root of ``source_dir`` is replaced. The version is listed only
        once complete. If the copy fails, nothing is listed, the partial copy is removed and the
        original error is raised.

        Args:
            model: Model name (see :func:`validate_name`).
            source_dir: Local folder to copy.
            metadata: JSON-serializable object: metrics, dataset fingerprint, base model, weights
                source, hyperparameters, pipeline run id.
            alias: If given, moved to the new version afterwards (action ``"push"``).
            actor: Who pushed, recorded in the alias history.

        Returns:
            The new version.

        Raises:
            ValueError: Bad model or alias name, or metadata that is not a JSON-serializable dict.
            NotADirectoryError: ``source_dir`` is not a folder.
            ConcurrentUpdateError: No free version number found after many attempts.
            RegistryError: The GCS bucket does not exist.
            OSError, google.api_core.exceptions.GoogleAPIError: A failed read or write, raised as
                it came, after the partial version was removed.
        """
        validate_name(model)
        if alias is not None:
            validate_name(alias, "alias")
        if not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata is not JSON-serializable: {err}") from err
        if not os.path.isdir(source_dir):
            raise NotADirectoryError(f"push source_dir {source_dir!r} is not a folder")
        if not os.path.isfile(os.path.join(source_dir, "saved_model.pb")):
            logger.warning("push of model %r: %s has no saved_model.pb at its root", model, source_dir)
        version = self._push(model, source_dir, metadata)
        logger.info("pushed model %r version %d to %s", model, version, self.uri)
        if alias is not None:
            self.set_alias(model, alias, version, action="push", actor=actor)
        return ModelVersion(model=model, version=version, uri=self._version_uri(model, version))

    def list_models(self) -> list[str]:
        """Names of the models that have at least one complete version, sorted."""
        return sorted(name for name in self._list_model_names() if self._list_versions(name))

    def list_versions(self, model: str) -> list[int]:
        """Complete versions of ``model``, ascending; ``[]`` for a model never pushed.

        Raises:
            ValueError: Bad model name.
        """
        return sorted(self._list_versions(validate_name(model)))

    def get_metadata(self, model: str, version: int) -> dict:
        """The content of a version's ``metadata.json``.

        Raises:
            ValueError: Bad model name or version.
            VersionNotFoundError: The version does not exist or is not complete.
            CorruptMetadataError: ``metadata.json`` is not valid JSON or not an object; the message
                names the model, the version and the file.
        """
        validate_name(model)
        validate_version(version)
        data = self._read_metadata(model, version)
        if data is None:
            raise self._version_not_found(model, version)
        return _parse_metadata(data, model, version, self._metadata_location(model, version))

    def version_uri(self, model: str, version: int) -> str:
        """URI of a complete version's folder (absolute path, or ``gs://...``).

        Raises:
            ValueError: Bad model name or version.
            VersionNotFoundError: The version does not exist or is not complete.
        """
        self._require_version(model, version)
        return self._version_uri(model, version)

    def download_version(self, model: str, version: int, dest_dir: str) -> str:
        """Makes a version readable as a local folder.

        Args:
            model: Model name.
            version: Version number.
            dest_dir: For a GCS registry, the local folder to copy into (created if missing; must
                be empty). Unused for a local registry.

        Returns:
            The local folder holding the version: ``dest_dir`` for GCS; the version folder itself
            for a local registry (no copy: treat it as read-only).

        Raises:
            ValueError: Bad model name or version, or ``dest_dir`` not empty.
            VersionNotFoundError: The version does not exist or is not complete.
            OSError, google.api_core.exceptions.GoogleAPIError: A failed download; ``dest_dir``
                may then hold part of the version.
        """
        self._require_version(model, version)
        return self._download(model, version, dest_dir)

    def resolve(self, model: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """Finds a version by number, by alias, or (neither given) the latest complete one.

        Raises:
            ValueError: Both ``version`` and ``alias`` given, or a bad name or version.
            ModelNotFoundError: Neither given and the model has no complete version.
            VersionNotFoundError: The version (given or aliased) does not exist.
            AliasNotFoundError: The alias was never set.
        """
        validate_name(model)
        if version is not None and alias is not None:
            raise ValueError("give a version or an alias, not both")
        if alias is not None:
            version = self._require_alias(model, alias)
        elif version is None:
            versions = self.list_versions(model)
            if not versions:
                raise ModelNotFoundError(f"model {model!r} has no complete version in {self.uri}")
            version = versions[-1]
        self._require_version(model, version)
        return ModelVersion(model=model, version=version, uri=self._version_uri(model, version))

    # --- aliases ------------------------------------------------------------------------------

    def get_alias(self, model: str, alias: str) -> int | None:
        """The version an alias points at, or None if the alias was never set.

        Raises:
            ValueError: Bad model or alias name.
            CorruptMetadataError: The alias file is damaged.
        """
        doc = self._alias_doc(model, alias)
        return None if doc is None else doc["version"]

    def list_aliases(self, model: str) -> dict[str, int]:
        """All aliases of a model and the version each points at (``{}`` if none).

        Raises:
            ValueError: Bad model name.
            CorruptMetadataError: An alias file is damaged.
        """
        validate_name(model)
        result = {}
        for alias in sorted(self._list_alias_names(model)):
            doc = self._alias_doc(model, alias)
            if doc is not None:
                result[alias] = doc["version"]
        return result

    def alias_history(self, model: str, alias: str) -> list[dict]:
        """Every move of an alias, oldest first (``[]`` if never set).

        Each entry: ``version`` (int), ``previous_version`` (int or None), ``action`` (``"push"``,
        ``"promote"`` or ``"rollback"``), ``actor`` (str or None), ``reason`` (str or None),
        ``time`` (ISO-8601, UTC), and, for moves recorded since the audit log exists, ``forced``
        (bool), ``overridden`` (list of the policy messages a forced promotion overrode) and
        ``event_id`` (the id of the same move in :meth:`audit`).

        Raises:
            ValueError: Bad model or alias name.
            CorruptMetadataError: The alias file is damaged.
        """
        doc = self._alias_doc(model, alias)
        return [] if doc is None else list(doc["history"])

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        action: str = "promote",
        actor: str | None = None,
        reason: str | None = None,
        forced: bool = False,
        overridden: list[str] | tuple[str, ...] = (),
    ) -> dict:
        """Points an alias at a version, appends the move to its history and to the audit log.

        This is the unchecked primitive: the promotion policy is :meth:`promote`'s. Safe under
        concurrency: two updates of one alias never lose one another. Setting the version the
        alias already points at is still recorded.

        Args:
            model: Model name.
            alias: Environment alias.
            version: Version to point at.
            action: ``"push"``, ``"promote"`` or ``"rollback"``.
            actor: Who, recorded.
            reason: Why, recorded.
            forced: Whether the promotion policy was overridden, recorded.
            overridden: The policy messages that were overridden, recorded.

        Returns:
            The new history entry (see :meth:`alias_history`).

        Raises:
            ValueError: Bad model or alias name, version, or action (one of push/promote/rollback).
            VersionNotFoundError: The version does not exist or is not complete.
            ConcurrentUpdateError: Lost the race to other writers too many times (GCS).
            OSError, google.api_core.exceptions.GoogleAPIError: The alias moved but its audit event
                could not be written (raised as it came; the alias history still has the move).
        """
        validate_name(alias, "alias")
        if action not in ALIAS_ACTIONS:
            raise ValueError(f"invalid alias action {action!r}: use one of {', '.join(ALIAS_ACTIONS)}")
        self._require_version(model, version)

        def move(current: dict | None) -> dict:
            return self._history_entry(current, version, action, actor, reason, forced, overridden)

        doc = self._update_alias(model, alias, move)
        logger.info("alias %r of model %r -> version %d (%s)", alias, model, version, action)
        return doc["history"][-1]

    def promote(
        self,
        model: str,
        version: int,
        env: str,
        actor: str | None = None,
        reason: str | None = None,
        force: bool = False,
    ) -> dict:
        """Moves an environment alias to a version under the promotion policy.

        The policy is :func:`check_promotion` with the version's metadata, the environment order
        of :meth:`env_order` and the alias histories of that order's environments. The rules only
        look at immutable or append-only records (metadata, alias histories), so checking before
        the atomic move cannot be invalidated by a concurrent writer.

        Args:
            model: Model name.
            version: Version to promote.
            env: Environment alias to move.
            actor: Who, recorded.
            reason: Why, recorded; required with ``force``.
            force: Override the policy; recorded as ``forced`` with the overridden rules.

        Returns:
            The new history entry (see :meth:`alias_history`).

        Raises:
            ValueError: Bad name or version, or ``force`` without a reason.
            VersionNotFoundError: The version does not exist or is not complete.
            CorruptMetadataError: The version's ``metadata.json`` or an alias file is damaged; the
                message names the version or alias and the file.
            RegistryConfigError: ``registry.json`` is damaged.
            PromotionRefusedError: The policy refused; the message says what is missing.
            ConcurrentUpdateError: Lost the race to other writers too many times (GCS).
        """
        validate_name(model)
        validate_name(env, "alias")
        metadata = self.get_metadata(model, version)
        order = self.env_order()
        environments = frozenset(
            alias for alias in order if any(e.get("version") == version for e in self.alias_history(model, alias))
        )
        overridden = check_promotion(model, version, metadata, env, environments, order, force, reason)
        if overridden:
            logger.warning(
                "forced promotion of model %r version %d to %r by %s: %s (overrode: %s)",
                model, version, env, actor, reason, "; ".join(overridden),
            )
        return self.set_alias(
            model, env, version, action="promote", actor=actor, reason=reason, forced=force, overridden=overridden
        )

    def env_order(self) -> tuple[str, ...]:
        """The registry's environment order: ``env_order`` of ``registry.json``, else dev, staging, prod.

        Raises:
            RegistryConfigError: ``registry.json`` is not a JSON object with a valid ``env_order``
                (and no other key); the message names the file.
        """
        data = self._read_config()
        if data is None:
            return DEFAULT_ENV_ORDER
        doc = _parse_config(data, self._config_location())
        return tuple(doc.get("env_order", DEFAULT_ENV_ORDER))

    def set_env_order(self, order: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """Writes ``{"env_order": order}`` to ``<root>/registry.json`` (last writer wins).

        Raises:
            ValueError: See :func:`validate_env_order`.
        """
        order = validate_env_order(order)
        self._write_config((json.dumps({"env_order": list(order)}, indent=2) + "\n").encode("utf-8"))
        logger.info("environment order of %s set to %s", self.uri, " -> ".join(order))
        return order

    def audit(self, model: str, alias: str | None = None) -> list[dict]:
        """The model's audit log: every alias move, oldest first (``[]`` if none).

        Each event: ``id`` (``<YYYYMMDDTHHMMSS.ffffffZ>-<12 hex>``), ``time`` (ISO-8601, UTC),
        ``model``, ``alias``, ``action`` (push/promote/rollback), ``from_version`` (int or None),
        ``to_version`` (int), ``actor`` and ``reason`` (str or None), ``forced`` (bool) and
        ``overridden`` (the policy messages a forced promotion overrode). Local order is commit
        order; GCS order is by ``id``, i.e. by each writer's clock.

        Args:
            model: Model name.
            alias: Only this alias's events, if given.

        Raises:
            ValueError: Bad model or alias name.
            CorruptMetadataError: An event is not a JSON object; the message names the file/line.
        """
        validate_name(model)
        if alias is not None:
            validate_name(alias, "alias")
        events = self._read_audit(model)
        return [e for e in events if alias is None or e.get("alias") == alias]

    def rollback(
        self, model: str, alias: str, actor: str | None = None, reason: str | None = None
    ) -> int:
        """Moves an alias back to the version it pointed at before its current one.

        The target is the ``previous_version`` of the alias's latest history entry that differs
        from the current version (a repeated promotion of the same version records a move from
        a version to itself, which is not a version to go back to), read and changed in one
        atomic update. A second rollback therefore undoes the first (it goes back to the version
        the first rollback left).

        Returns:
            The version the alias now points at.

        Raises:
            ValueError: Bad model or alias name.
            AliasNotFoundError: The alias was never set.
            NoPreviousVersionError: The alias has pointed at only one version so far.
            ConcurrentUpdateError: Lost the race to other writers too many times (GCS).
        """
        validate_name(model)
        validate_name(alias, "alias")
        chosen: list[int] = []

        def move(current: dict | None) -> dict:
            if current is None:
                raise AliasNotFoundError(f"alias {alias!r} of model {model!r} is not set in {self.uri}")
            earlier = (e.get("previous_version") for e in reversed(current["history"]))
            target = next((v for v in earlier if v is not None and v != current["version"]), None)
            if target is None:
                raise NoPreviousVersionError(
                    f"alias {alias!r} of model {model!r} has no previous version to roll back to "
                    f"(it points at version {current['version']} and has no earlier one)"
                )
            self._require_version(model, target)
            chosen[:] = [target]
            return self._history_entry(current, target, "rollback", actor, reason, False, ())

        self._update_alias(model, alias, move)
        logger.info("alias %r of model %r rolled back to version %d", alias, model, chosen[0])
        return chosen[0]

    # --- shared helpers -----------------------------------------------------------------------

    @staticmethod
    def _history_entry(
        current: dict | None,
        version: int,
        action: str,
        actor: str | None,
        reason: str | None,
        forced: bool,
        overridden: list[str] | tuple[str, ...],
    ) -> dict:
        now = datetime.datetime.now(datetime.timezone.utc)
        return {
            "version": version,
            "previous_version": None if current is None else current["version"],
            "action": action,
            "actor": actor,
            "reason": reason,
            "forced": bool(forced),
            "overridden": list(overridden),
            "time": now.isoformat(timespec="milliseconds"),
            "event_id": _event_id(now),
        }

    @staticmethod
    def _audit_event(model: str, alias: str, entry: dict) -> dict:
        return {
            "id": entry["event_id"],
            "time": entry["time"],
            "model": model,
            "alias": alias,
            "action": entry["action"],
            "from_version": entry["previous_version"],
            "to_version": entry["version"],
            "actor": entry["actor"],
            "reason": entry["reason"],
            "forced": entry["forced"],
            "overridden": entry["overridden"],
        }

    @staticmethod
    def _apply_move(model: str, alias: str, current: dict | None, entry: dict) -> dict:
        history = [] if current is None else list(current["history"])
        history.append(entry)
        return {"model": model, "alias": alias, "version": entry["version"], "history": history}

    def _alias_doc(self, model: str, alias: str) -> dict | None:
        validate_name(model)
        validate_name(alias, "alias")
        data = self._read_alias(model, alias)
        if data is None:
            return None
        return _parse_alias(data, model, alias, self._alias_location(model, alias))

    def _require_alias(self, model: str, alias: str) -> int:
        version = self.get_alias(model, alias)
        if version is None:
            raise AliasNotFoundError(f"alias {alias!r} of model {model!r} is not set in {self.uri}")
        return version

    def _require_version(self, model: str, version: int) -> None:
        validate_name(model)
        validate_version(version)
        if not self._version_complete(model, version):
            raise self._version_not_found(model, version)

    def _version_not_found(self, model: str, version: int) -> VersionNotFoundError:
        versions = self._list_versions(model)
        known = ", ".join(str(v) for v in sorted(versions)) if versions else "none"
        return VersionNotFoundError(
            f"model {model!r} has no complete version {version} in {self.uri} (versions: {known})"
        )

    # --- storage, per backend -----------------------------------------------------------------

    @abc.abstractmethod
    def _push(self, model: str, source_dir: str, metadata: dict) -> int:
        """Copies ``source_dir`` into a new complete version and returns its number."""

    @abc.abstractmethod
    def _put_file(self, local_path: str, dest: str) -> None:
        """Copies one file of a push into place (a path or an object name)."""

    @abc.abstractmethod
    def _list_model_names(self) -> list[str]: ...

    @abc.abstractmethod
    def _list_versions(self, model: str) -> list[int]: ...

    @abc.abstractmethod
    def _version_complete(self, model: str, version: int) -> bool: ...

    @abc.abstractmethod
    def _read_metadata(self, model: str, version: int) -> bytes | None: ...

    @abc.abstractmethod
    def _metadata_location(self, model: str, version: int) -> str: ...

    @abc.abstractmethod
    def _version_uri(self, model: str, version: int) -> str: ...

    @abc.abstractmethod
    def _download(self, model: str, version: int, dest_dir: str) -> str: ...

    @abc.abstractmethod
    def _list_alias_names(self, model: str) -> list[str]: ...

    @abc.abstractmethod
    def _read_alias(self, model: str, alias: str) -> bytes | None: ...

    @abc.abstractmethod
    def _alias_location(self, model: str, alias: str) -> str: ...

    @abc.abstractmethod
    def _update_alias(self, model: str, alias: str, move: Callable[[dict | None], dict]) -> dict:
        """Atomically appends ``move(current)`` to the alias and returns the new alias document.

        ``move`` may be called more than once (GCS retries) and may raise to abort. Once the move
        is committed, its audit event (:meth:`_audit_event`) is appended to the audit log.
        """

    @abc.abstractmethod
    def _read_audit(self, model: str) -> list[dict]:
        """Every audit event of ``model``, oldest first."""

    @abc.abstractmethod
    def _read_config(self) -> bytes | None: ...

    @abc.abstractmethod
    def _write_config(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def _config_location(self) -> str: ...


# --------------------------------------------------------------------------------------------------
# Local folder


class LocalRegistry(Registry):
    """Registry in a local (or mounted) folder; see the module docstring for the layout."""

    def __init__(self, root: str) -> None:
        root = os.path.abspath(root)
        super().__init__(root)
        self.root = root

    def _model_dir(self, model: str) -> str:
        return os.path.join(self.root, model)

    def _version_uri(self, model: str, version: int) -> str:
        return os.path.join(self.root, model, str(version))

    def _metadata_location(self, model: str, version: int) -> str:
        return os.path.join(self._version_uri(model, version), METADATA_FILE)

    def _alias_location(self, model: str, alias: str) -> str:
        return os.path.join(self.root, model, ALIASES_DIR, f"{alias}.json")

    def _list_model_names(self) -> list[str]:
        try:
            entries = os.scandir(self.root)
        except FileNotFoundError:
            return []
        with entries:
            return [e.name for e in entries if e.is_dir() and _NAME_RE.fullmatch(e.name)]

    def _numeric_entries(self, model_dir: str) -> list[int]:
        try:
            return [int(name) for name in os.listdir(model_dir) if _VERSION_RE.fullmatch(name)]
        except FileNotFoundError:
            return []

    def _list_versions(self, model: str) -> list[int]:
        numbers = self._numeric_entries(self._model_dir(model))
        return [v for v in numbers if v >= 1 and self._version_complete(model, v)]

    def _version_complete(self, model: str, version: int) -> bool:
        return os.path.isfile(self._metadata_location(model, version))

    def _read_metadata(self, model: str, version: int) -> bytes | None:
        try:
            with open(self._metadata_location(model, version), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _put_file(self, local_path: str, dest: str) -> None:
        shutil.copy2(local_path, dest)

    def _push(self, model: str, source_dir: str, metadata: dict) -> int:
        model_dir = self._model_dir(model)
        os.makedirs(model_dir, exist_ok=True)
        # Hidden and inside the model folder: same file system as the target (rename stays
        # atomic), and neither this registry nor TF Serving takes it for a version.
        tmp_dir = os.path.join(model_dir, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        os.mkdir(tmp_dir)
        try:
            # Not shutil.copytree: it carries on after a failed file and raises a summary
            # shutil.Error at the end instead of the original error.
            for rel in _source_files(source_dir):
                dest = os.path.join(tmp_dir, *rel.split("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                self._put_file(os.path.join(source_dir, rel), dest)
            return self._publish(model, model_dir, tmp_dir, metadata)
        except BaseException:
            self._remove_tmp(tmp_dir)
            raise

    def _publish(self, model: str, model_dir: str, tmp_dir: str, metadata: dict) -> int:
        version = 0
        for _ in range(_MAX_VERSION_ATTEMPTS):
            # Incomplete numeric folders count too: their numbers are taken.
            version = max([version, *self._numeric_entries(model_dir)]) + 1
            _write_file_atomic(
                os.path.join(tmp_dir, METADATA_FILE), _metadata_bytes(metadata, model, version, _now_iso())
            )
            try:
                os.rename(tmp_dir, os.path.join(model_dir, str(version)))
                return version
            except OSError as err:
                # Another push took this number first (the target is a non-empty folder, or a file).
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise
        raise ConcurrentUpdateError(
            f"push of model {model!r}: no free version number after {_MAX_VERSION_ATTEMPTS} attempts "
            f"in {model_dir}"
        )

    @staticmethod
    def _remove_tmp(tmp_dir: str) -> None:
        try:
            shutil.rmtree(tmp_dir)
        except FileNotFoundError:
            pass
        except OSError as err:
            # The push's own error is the one to raise; a left-over hidden folder is harmless.
            logger.warning("could not remove temporary folder %s: %s", tmp_dir, err)

    def _download(self, model: str, version: int, dest_dir: str) -> str:
        return self._version_uri(model, version)

    def _list_alias_names(self, model: str) -> list[str]:
        try:
            names = os.listdir(os.path.join(self._model_dir(model), ALIASES_DIR))
        except FileNotFoundError:
            return []
        return _alias_names(names)

    def _read_alias(self, model: str, alias: str) -> bytes | None:
        try:
            with open(self._alias_location(model, alias), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _update_alias(self, model: str, alias: str, move: Callable[[dict | None], dict]) -> dict:
        aliases_dir = os.path.join(self._model_dir(model), ALIASES_DIR)
        os.makedirs(aliases_dir, exist_ok=True)
        path = self._alias_location(model, alias)
        # A separate lock file, because the alias file itself is replaced (a lock on a replaced
        # inode would protect nothing). flock also excludes threads that open it separately.
        with open(os.path.join(aliases_dir, f".{alias}.lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            data = self._read_alias(model, alias)
            current = None if data is None else _parse_alias(data, model, alias, path)
            doc = self._apply_move(model, alias, current, move(current))
            _write_file_atomic(path, _alias_bytes(doc))
            # Still under the alias lock, so this alias's events reach the log in commit order.
            self._append_audit(model, self._audit_event(model, alias, doc["history"][-1]))
            return doc

    def _audit_location(self, model: str) -> str:
        return os.path.join(self._model_dir(model), AUDIT_FILE)

    def _append_audit(self, model: str, event: dict) -> None:
        line = (json.dumps(event, sort_keys=True) + "\n").encode("utf-8")
        # A second lock: moves of *different* aliases hold different alias locks. Lock order is
        # always alias lock, then this one, so the two cannot deadlock.
        with open(os.path.join(self._model_dir(model), f".{AUDIT_FILE}.lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            fd = os.open(self._audit_location(model), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(
                        errno.EIO, f"short write to {self._audit_location(model)}: {written} of {len(line)} bytes"
                    )
                os.fsync(fd)
            finally:
                os.close(fd)

    def _read_audit(self, model: str) -> list[dict]:
        path = self._audit_location(model)
        try:
            with open(path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return []
        return [_parse_event(line, path, number) for number, line in enumerate(lines, 1) if line.strip()]

    def _config_location(self) -> str:
        return os.path.join(self.root, CONFIG_FILE)

    def _read_config(self) -> bytes | None:
        try:
            with open(self._config_location(), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write_config(self, data: bytes) -> None:
        os.makedirs(self.root, exist_ok=True)
        _write_file_atomic(self._config_location(), data)


def _parse_event(data: bytes, where: str, line: int | None = None) -> dict:
    place = where if line is None else f"{where} line {line}"
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptMetadataError(f"audit event is not valid JSON: {place}: {err}") from err
    if not isinstance(doc, dict):
        raise CorruptMetadataError(f"audit event is not a JSON object (got {type(doc).__name__}): {place}")
    return doc


def _write_file_atomic(path: str, data: bytes) -> None:
    """Writes ``path`` so that readers see either the old or the new content, never a part."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --------------------------------------------------------------------------------------------------
# Google Cloud Storage


class GcsRegistry(Registry):
    """Registry under ``gs://bucket/prefix``; see the module docstring for the layout.

    Uses the official ``google-cloud-storage`` client. When ``STORAGE_EMULATOR_HOST`` is set (read
    when the registry is opened) the client talks to that emulator with anonymous credentials;
    otherwise it uses Application Default Credentials.
    """

    def __init__(self, bucket: str, prefix: str, client: Any = None) -> None:
        prefix = prefix.strip("/")
        super().__init__(f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}")
        from google.api_core import exceptions as gexc  # noqa: PLC0415 - kept off the import path

        self._gexc = gexc
        if client is None:
            from components.storage import gcs_client  # noqa: PLC0415

            client = gcs_client()
        self._client = client
        self._bucket = client.bucket(bucket)
        self.bucket_name = bucket
        self.prefix = prefix

    def _name(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def _version_uri(self, model: str, version: int) -> str:
        return f"gs://{self.bucket_name}/{self._name(model, str(version))}"

    def _metadata_location(self, model: str, version: int) -> str:
        return f"{self._version_uri(model, version)}/{METADATA_FILE}"

    def _alias_location(self, model: str, alias: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(model, ALIASES_DIR, alias + '.json')}"

    def _list(self, prefix: str, delimiter: str | None = None) -> tuple[list[Any], set[str]]:
        try:
            it = self._client.list_blobs(self._bucket, prefix=prefix, delimiter=delimiter)
            blobs = list(it)
        except self._gexc.NotFound as err:
            raise RegistryError(f"bucket {self.bucket_name!r} of registry {self.uri} not found") from err
        return blobs, set(it.prefixes)

    def _children(self, prefix: str) -> list[str]:
        """Names of the 'folders' directly under ``prefix/``."""
        base = prefix + "/" if prefix else ""
        _, prefixes = self._list(base, delimiter="/")
        return [p[len(base) :].rstrip("/") for p in prefixes]

    def _download_bytes(self, name: str) -> tuple[bytes, int] | None:
        blob = self._bucket.blob(name)
        try:
            data = blob.download_as_bytes()
        except self._gexc.NotFound:
            return None
        # The client takes the generation from the download's response headers, so it names
        # exactly the content read: the right value for a compare-and-swap.
        return data, blob.generation

    def _list_model_names(self) -> list[str]:
        return [n for n in self._children(self.prefix) if _NAME_RE.fullmatch(n)]

    def _list_versions(self, model: str) -> list[int]:
        blobs, _ = self._list(self._name(model) + "/")
        pattern = re.compile(re.escape(self._name(model)) + r"/([0-9]+)/" + re.escape(METADATA_FILE))
        versions = {int(m.group(1)) for b in blobs if (m := pattern.fullmatch(b.name))}
        return [v for v in versions if v >= 1]

    def _version_complete(self, model: str, version: int) -> bool:
        return self._bucket.blob(self._name(model, str(version), METADATA_FILE)).exists()

    def _read_metadata(self, model: str, version: int) -> bytes | None:
        got = self._download_bytes(self._name(model, str(version), METADATA_FILE))
        return None if got is None else got[0]

    def _put_file(self, local_path: str, dest: str) -> None:
        # Create-only: nobody else may write into a reserved version. Small files go up in one
        # request, where the precondition holds (resumable uploads over 8 MiB are also checked by
        # GCS itself, but not by fake-gcs-server).
        self._bucket.blob(dest).upload_from_filename(local_path, if_generation_match=0)

    def _reserve_version(self, model: str) -> int:
        version = 0
        for _ in range(_MAX_VERSION_ATTEMPTS):
            # Numbers are taken by version folders (complete or not, including any pushed by other
            # tools) and by reservation markers of pushes still uploading.
            taken = [int(n) for n in self._children(self._name(model)) if _VERSION_RE.fullmatch(n)]
            markers, _ = self._list(self._name(model, _GCS_RESERVED_DIR) + "/")
            taken += [int(n) for b in markers if _VERSION_RE.fullmatch(n := b.name.rsplit("/", 1)[-1])]
            version = max([version, *taken]) + 1
            marker = self._bucket.blob(self._name(model, _GCS_RESERVED_DIR, str(version)))
            try:
                marker.upload_from_string(
                    _now_iso().encode(), content_type="text/plain", if_generation_match=0
                )
                return version
            except self._gexc.PreconditionFailed:
                continue
        raise ConcurrentUpdateError(
            f"push of model {model!r}: no free version number after {_MAX_VERSION_ATTEMPTS} attempts "
            f"in {self.uri}"
        )

    def _push(self, model: str, source_dir: str, metadata: dict) -> int:
        files = _source_files(source_dir)
        # The marker stays outside the version folder: a TF Serving poll must not see the version
        # before its files.
        version = self._reserve_version(model)
        uploaded: list[str] = []
        try:
            for rel in files:
                dest = self._name(model, str(version), rel)
                self._put_file(os.path.join(source_dir, rel), dest)
                uploaded.append(dest)
            meta = self._name(model, str(version), METADATA_FILE)
            self._bucket.blob(meta).upload_from_string(
                _metadata_bytes(metadata, model, version, _now_iso()),
                content_type="application/json",
                if_generation_match=0,
            )
            return version
        except BaseException:
            self._cleanup_failed_push(model, version, uploaded)
            raise

    def _cleanup_failed_push(self, model: str, version: int, uploaded: list[str]) -> None:
        # Files first, marker last: while the marker exists no other push can take this number,
        # so a later push never sees a half-deleted folder as its own.
        for name in [*uploaded, self._name(model, _GCS_RESERVED_DIR, str(version))]:
            try:
                self._bucket.blob(name).delete()
            except self._gexc.NotFound:
                pass
            except Exception as err:  # noqa: BLE001 - the push's own error is the one raised
                logger.warning(
                    "failed push of model %r: could not delete gs://%s/%s: %s", model, self.bucket_name, name, err
                )

    def _download(self, model: str, version: int, dest_dir: str) -> str:
        dest_dir = os.path.abspath(dest_dir)
        if os.path.isdir(dest_dir) and os.listdir(dest_dir):
            raise ValueError(f"download dest_dir {dest_dir!r} is not empty")
        os.makedirs(dest_dir, exist_ok=True)
        base = self._name(model, str(version)) + "/"
        blobs, _ = self._list(base)
        for blob in blobs:
            rel = blob.name[len(base) :]
            if not rel or rel.endswith("/"):
                continue  # folder placeholders made by some tools
            target = os.path.abspath(os.path.join(dest_dir, *rel.split("/")))
            if not target.startswith(dest_dir + os.sep):
                raise RegistryError(
                    f"object gs://{self.bucket_name}/{blob.name} would land outside {dest_dir}"
                )
            os.makedirs(os.path.dirname(target), exist_ok=True)
            blob.download_to_filename(target)
        return dest_dir

    def _list_alias_names(self, model: str) -> list[str]:
        base = self._name(model, ALIASES_DIR) + "/"
        blobs, _ = self._list(base, delimiter="/")
        names = [b.name[len(base) :] for b in blobs]
        return _alias_names(names)

    def _read_alias(self, model: str, alias: str) -> bytes | None:
        got = self._download_bytes(self._name(model, ALIASES_DIR, f"{alias}.json"))
        return None if got is None else got[0]

    def _update_alias(self, model: str, alias: str, move: Callable[[dict | None], dict]) -> dict:
        name = self._name(model, ALIASES_DIR, f"{alias}.json")
        location = self._alias_location(model, alias)
        for attempt in range(_MAX_CAS_ATTEMPTS):
            got = self._download_bytes(name)
            if got is None:
                current, generation = None, 0  # generation 0: "only if the object does not exist"
            else:
                current, generation = _parse_alias(got[0], model, alias, location), got[1]
            doc = self._apply_move(model, alias, current, move(current))
            try:
                self._bucket.blob(name).upload_from_string(
                    _alias_bytes(doc), content_type="application/json", if_generation_match=generation
                )
            except self._gexc.PreconditionFailed:
                # Someone else moved the alias in between: re-read and re-apply. Jitter keeps
                # the same writers from colliding in lockstep.
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))
                continue
            # Only after the commit: an event for a move that lost its compare-and-swap would be
            # a lie. A process killed right here leaves the move in the alias history only.
            self._append_audit(model, self._audit_event(model, alias, doc["history"][-1]))
            return doc
        raise ConcurrentUpdateError(
            f"alias {alias!r} of model {model!r}: gave up after {_MAX_CAS_ATTEMPTS} concurrent updates "
            f"({location})"
        )

    def _append_audit(self, model: str, event: dict) -> None:
        # One object per event, create-only: no writer ever rewrites another's event, so there
        # is nothing to lose under concurrency (GCS has no append).
        blob = self._bucket.blob(self._name(model, AUDIT_DIR, f"{event['id']}.json"))
        blob.upload_from_string(
            json.dumps(event, sort_keys=True) + "\n", content_type="application/json", if_generation_match=0
        )

    def _read_audit(self, model: str) -> list[dict]:
        blobs, _ = self._list(self._name(model, AUDIT_DIR) + "/", delimiter="/")
        events = []
        for blob in sorted(blobs, key=lambda b: b.name):
            if not blob.name.endswith(".json"):
                continue
            events.append(_parse_event(blob.download_as_bytes(), f"gs://{self.bucket_name}/{blob.name}"))
        return events

    def _config_location(self) -> str:
        return f"gs://{self.bucket_name}/{self._name(CONFIG_FILE)}"

    def _read_config(self) -> bytes | None:
        got = self._download_bytes(self._name(CONFIG_FILE))
        return None if got is None else got[0]

    def _write_config(self, data: bytes) -> None:
        self._bucket.blob(self._name(CONFIG_FILE)).upload_from_string(data, content_type="application/json")


# --------------------------------------------------------------------------------------------------
# Serving export


@dataclasses.dataclass(frozen=True)
class ServingExport:
    """What :func:`export_serving` did.

    Attributes:
        model: Model name.
        alias: The environment alias exported.
        version: The version the alias points at, now the highest numbered folder.
        path: The version's folder in the base path (``<base_path>/<version>``).
        copied: False when that folder was already there (same model, version and creation time).
        removed: Numbered folders removed: every one above ``version``, and the oldest beyond ``keep``.
        kept: Numbered folders left in the base path, ascending (``version`` is the last).
    """

    model: str
    alias: str
    version: int
    path: str
    copied: bool
    removed: tuple[int, ...]
    kept: tuple[int, ...]


def export_serving(
    registry: Registry, model: str, alias: str, base_path: str, keep: int | None = None
) -> ServingExport:
    """Makes a TF Serving model base path serve the version an alias points at.

    TF Serving (default ``model_version_policy``: latest, one version) serves the highest numbered
    folder of its ``--model_base_path`` and reloads when that changes. So the alias's version N is
    written to ``<base_path>/<N>/`` (every file of the registry version, ``metadata.json``
    included) and then every numbered folder above N is removed: after a rollback the older
    version becomes the highest and is served again. Lower folders stay (for a
    ``model_version_policy`` that serves several versions, and for a fast roll forward), except
    the oldest beyond ``keep``.

    The copy goes to a hidden ``.tmp-export-<uuid>`` folder beside the versions (TF Serving ignores
    non-numeric names) and is renamed into place, so TF Serving never sees a partial version.
    Folders are removed by a rename to ``.trash-<uuid>`` first, for the same reason. Only local (or
    mounted) base paths are supported: GCS has no rename.

    Args:
        registry: The registry to read.
        model: Model name.
        alias: Environment alias, e.g. ``prod``.
        base_path: Local folder TF Serving watches (created if missing), e.g. ``/models/digits``.
        keep: How many numbered folders to keep, N included (>= 1); ``None`` keeps all up to N.

    Returns:
        What was done (see :class:`ServingExport`).

    Raises:
        ValueError: Bad name, a ``keep`` that is not an int >= 1, or a ``gs://`` (any URI) base path.
        AliasNotFoundError: The alias was never set.
        VersionNotFoundError: The aliased version is not complete.
        CorruptMetadataError: The version's ``metadata.json`` is damaged.
        ServingExportError: ``<base_path>/<N>`` exists but holds another model, version or push
            (its ``metadata.json`` differs); nothing is overwritten.
        OSError, google.api_core.exceptions.GoogleAPIError: A failed copy; the partial copy is
            removed and the base path is as before.
    """
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"invalid keep {keep!r}: use an integer >= 1 (numbered folders to keep)")
    if not isinstance(base_path, str) or not base_path or "://" in base_path:
        raise ValueError(
            f"invalid serving base path {base_path!r}: use a local or mounted folder (TF Serving's "
            "--model_base_path); GCS has no atomic rename, so gs:// is not an export target"
        )
    found = registry.resolve(model, alias=alias)
    version = found.version
    expected = registry.get_metadata(model, version)
    base = os.path.abspath(base_path)
    os.makedirs(base, exist_ok=True)
    target = os.path.join(base, str(version))
    copied = False
    if not os.path.isdir(target):
        tmp = os.path.join(base, f"{_TMP_PREFIX}export-{uuid.uuid4().hex}")
        try:
            _materialize(registry, model, version, tmp)
            try:
                os.rename(tmp, target)
                copied = True
            except OSError as err:
                # Another export of the same version got there first; its copy is checked below.
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
    _check_exported(target, model, version, expected)

    numbered = sorted(
        int(n) for n in os.listdir(base) if _VERSION_RE.fullmatch(n) and os.path.isdir(os.path.join(base, n))
    )
    removed = [v for v in numbered if v > version]
    lower = [v for v in numbered if v < version]
    if keep is not None:
        removed += lower[: max(0, len(lower) - (keep - 1))]
    # Higher folders first: the moment the last one goes, TF Serving's latest version is N.
    for v in sorted(removed, reverse=True):
        trash = os.path.join(base, f"{_TRASH_PREFIX}{v}-{uuid.uuid4().hex}")
        os.rename(os.path.join(base, str(v)), trash)
        shutil.rmtree(trash)
    kept = tuple(v for v in numbered if v not in removed)
    logger.info("exported model %r alias %r version %d to %s (removed %s)", model, alias, version, target, removed)
    return ServingExport(model, alias, version, target, copied, tuple(sorted(removed)), kept)


def _materialize(registry: Registry, model: str, version: int, dest: str) -> None:
    """Copies every file of a version (``metadata.json`` included) into the new folder ``dest``."""
    if isinstance(registry, LocalRegistry):
        source = registry.version_uri(model, version)
        os.mkdir(dest)
        # Not shutil.copytree: it carries on after a failed file and raises a summary error.
        for dirpath, _, filenames in os.walk(source):
            for filename in filenames:
                rel = os.path.relpath(os.path.join(dirpath, filename), source)
                os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                shutil.copy2(os.path.join(dirpath, filename), os.path.join(dest, rel))
    else:
        registry.download_version(model, version, dest)


def _check_exported(folder: str, model: str, version: int, expected: dict) -> None:
    path = os.path.join(folder, METADATA_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = None
    got = None if data is None else _parse_metadata(data, model, version, path)
    key = ("model", "version", "created_at")
    if got is None or tuple(got.get(k) for k in key) != tuple(expected.get(k) for k in key):
        found = "no metadata.json" if got is None else ", ".join(f"{k}={got.get(k)!r}" for k in key)
        raise ServingExportError(
            f"serving folder {folder} does not hold model {model!r} version {version} created at "
            f"{expected.get('created_at')} ({found}); move it away or use another base path"
        )


# --------------------------------------------------------------------------------------------------
# Entry point


def open_registry(uri: str) -> Registry:
    """Opens the registry at ``uri``; nothing is created until the first push.

    Args:
        uri: A local path (relative paths are made absolute), a ``file://`` URI, or
            ``gs://bucket[/prefix]``.

    Returns:
        A :class:`LocalRegistry` or a :class:`GcsRegistry`.

    Raises:
        ValueError: Empty URI, another scheme, a ``file://`` URI with a remote host, or ``gs://``
            without a bucket.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(
            f"invalid registry URI {uri!r}: use a local path, file:///path or gs://bucket/prefix"
        )
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "gs":
        if not parsed.netloc:
            raise ValueError(f"invalid registry URI {uri!r}: gs:// needs a bucket (gs://bucket/prefix)")
        return GcsRegistry(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"invalid registry URI {uri!r}: file:// URIs must name a local path")
        return LocalRegistry(urllib.parse.unquote(parsed.path))
    # A one-letter scheme is a Windows drive, i.e. a local path.
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(
            f"invalid registry URI {uri!r}: scheme {parsed.scheme!r} is not supported; use a local path, "
            "file:///path or gs://bucket/prefix"
        )
    return LocalRegistry(uri)
