"""The registry's stored records: file names, and the bytes of each record read and written.

Records (the same on a local disk and on Google Cloud Storage; see the package docstring for
the whole layout):

* ``<model>/<N>/metadata.json``: the pushed metadata plus ``"model"``, ``"version"``,
  ``"created_at"`` (ISO-8601, UTC) and ``"files"`` (the version's manifest: every other file's
  ``/``-separated path and its size in bytes, as pushed); a JSON object.
* ``<model>/aliases/<alias>.json``: ``{"model", "alias", "version", "history": [entry, ...]}``,
  each entry made by :func:`history_entry`.
* audit events, made by :func:`audit_event`: one JSON object a line of ``<model>/audit.jsonl``
  (local), or one object ``<model>/audit/<event id>.json`` each (GCS).
* ``registry.json``: optional settings, ``{"env_order": [...]}``.

Every parser raises a :class:`~components.registry.errors.RegistryError` subclass whose message
names the model, version or alias and the file (``where``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import uuid
from collections.abc import Mapping

from components.registry.errors import CorruptMetadataError, RegistryConfigError
from components.registry.policy import NAME_RE, validate_env_order

METADATA_FILE = "metadata.json"
ALIASES_DIR = "aliases"
AUDIT_FILE = "audit.jsonl"
AUDIT_DIR = "audit"
CONFIG_FILE = "registry.json"
CONFIG_KEYS = ("env_order",)
# Hidden names: neither the registry nor TF Serving (numeric folders only) takes them for versions.
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
GCS_RESERVED_DIR = ".reserved"
# Keys the registry writes into metadata.json itself; they override the pushed metadata's.
REGISTRY_KEYS = ("model", "version", "created_at", "files")


def now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds, e.g. ``2026-01-31T12:00:00.123+00:00``."""
    # "+00:00" rather than "Z": datetime.fromisoformat reads it on Python 3.10 too.
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def event_id(now: datetime.datetime) -> str:
    """An audit event id, ``<YYYYMMDDTHHMMSS.ffffffZ>-<12 hex>``, for the UTC time ``now``."""
    # Sorts by time as a string (fixed width, UTC), and the random part keeps two writers in the
    # same microsecond apart.
    return f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:12]}"


def _load_json(data: bytes, what: str, where: str) -> object:
    """Decodes UTF-8 JSON, or raises CorruptMetadataError naming ``what`` and ``where``."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptMetadataError(f"{what} is not valid JSON: {where}: {err}") from err


def metadata_bytes(metadata: dict, model: str, version: int, created_at: str, files: dict[str, int]) -> bytes:
    """A version's ``metadata.json``: ``metadata`` plus model, version, created_at and the
    ``files`` manifest (relative path -> size in bytes); these win over keys of the same name."""
    doc = dict(metadata)
    doc.update(model=model, version=version, created_at=created_at, files=dict(sorted(files.items())))
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse_metadata(data: bytes, model: str, version: int, where: str) -> dict:
    """Reads a version's ``metadata.json``.

    Raises:
        CorruptMetadataError: Not valid UTF-8 JSON, or not an object.
    """
    doc = _load_json(data, f"metadata of model {model!r} version {version}", where)
    if not isinstance(doc, dict):
        raise CorruptMetadataError(
            f"metadata of model {model!r} version {version} is not a JSON object "
            f"(got {type(doc).__name__}): {where}"
        )
    return doc


def parse_alias(data: bytes, model: str, alias: str, where: str) -> dict:
    """Reads an alias file.

    Raises:
        CorruptMetadataError: Not valid UTF-8 JSON, or not an object with an int ``version`` and a
            ``history`` list of objects.
    """
    doc = _load_json(data, f"alias {alias!r} of model {model!r}", where)
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


def alias_bytes(doc: dict) -> bytes:
    """An alias file's content."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def alias_names(file_names: list[str]) -> list[str]:
    """Alias names from the file names in an aliases folder (lock and temp files are hidden)."""
    stems = [n[: -len(".json")] for n in file_names if n.endswith(".json")]
    return [stem for stem in stems if NAME_RE.fullmatch(stem)]


def history_entry(
    current: dict | None,
    version: int,
    action: str,
    actor: str | None,
    reason: str | None,
    forced: bool,
    overridden: list[str] | tuple[str, ...],
    gated: bool = False,
    compared_with: int | None = None,
) -> dict:
    """One alias move, for the alias history (see ``Registry.alias_history`` for the keys).

    Args:
        current: The alias document before the move, or None if the alias was never set.
        version: The version the alias moves to.
        action: ``"push"``, ``"promote"`` or ``"rollback"``.
        actor, reason, forced, overridden: Recorded as given.
        gated: Whether the move was made only because the alias still pointed at
            ``compared_with`` (the champion/challenger gate of a push).
        compared_with: The version the new one was evaluated against (None: there was no
            champion, or no comparison when ``gated`` is False).
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "version": version,
        "previous_version": None if current is None else current["version"],
        "action": action,
        "actor": actor,
        "reason": reason,
        "forced": bool(forced),
        "overridden": list(overridden),
        "gated": bool(gated),
        "compared_with": compared_with,
        "time": now.isoformat(timespec="milliseconds"),
        "event_id": event_id(now),
    }


def apply_move(model: str, alias: str, current: dict | None, entry: dict) -> dict:
    """The alias document after ``entry`` (from :func:`history_entry`) is appended to ``current``."""
    history = [] if current is None else list(current["history"])
    history.append(entry)
    return {"model": model, "alias": alias, "version": entry["version"], "history": history}


def audit_event(model: str, alias: str, entry: dict) -> dict:
    """The audit event of an alias move (``entry`` from :func:`history_entry`), under the same id and time."""
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
        # Entries written before the gate existed have neither key.
        "gated": entry.get("gated", False),
        "compared_with": entry.get("compared_with"),
    }


def parse_event(data: bytes, where: str, line: int | None = None) -> dict:
    """Reads one audit event (``line``: its 1-based line in ``audit.jsonl``, for the message).

    Raises:
        CorruptMetadataError: Not valid UTF-8 JSON, or not an object.
    """
    place = where if line is None else f"{where} line {line}"
    doc = _load_json(data, "audit event", place)
    if not isinstance(doc, dict):
        raise CorruptMetadataError(f"audit event is not a JSON object (got {type(doc).__name__}): {place}")
    return doc


def parse_config(data: bytes, where: str) -> dict:
    """Reads ``registry.json``.

    Raises:
        RegistryConfigError: Not valid UTF-8 JSON, not an object, a key other than ``env_order``,
            or an invalid ``env_order``.
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RegistryConfigError(f"registry settings {where} are not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise RegistryConfigError(f"registry settings {where} are not a JSON object (got {type(doc).__name__})")
    unknown = sorted(set(doc) - set(CONFIG_KEYS))
    if unknown:
        raise RegistryConfigError(
            f"registry settings {where} have unknown keys {unknown}: use {', '.join(CONFIG_KEYS)}"
        )
    if "env_order" in doc:
        try:
            validate_env_order(doc["env_order"], f"'env_order' {doc['env_order']!r} in {where}")
        except ValueError as err:
            raise RegistryConfigError(str(err)) from err
    return doc


@dataclasses.dataclass(frozen=True)
class PushFile:
    """One file of a push.

    Attributes:
        rel: Its ``/``-separated path inside the version folder.
        source: The local file to copy (a path), or the file's content (bytes).
        size: Its size in bytes, as recorded in the version's ``files`` manifest.
    """

    rel: str
    source: str | bytes
    size: int


def push_files(source_dir: str, extra_files: Mapping[str, str | bytes] | None = None) -> list[PushFile]:
    """The files of a push, in copy order: every file under ``source_dir`` plus ``extra_files``.

    The source's own ``metadata.json`` is left out (the registry writes its own). ``saved_model.pb``
    comes last, after the variables it refers to, so a reader that polls (TF Serving on GCS) does
    not find a graph without its weights. Empty folders are not kept.

    Args:
        source_dir: Local folder whose files are pushed as they are.
        extra_files: More files: ``/``-separated relative path -> a local file's path, or the
            content as bytes.

    Returns:
        One :class:`PushFile` per file.

    Raises:
        ValueError: An extra file's name is absolute, has ``..``/``.``/empty parts, is
            ``metadata.json``, or is also a file of ``source_dir``.
        FileNotFoundError: An extra file's local path does not exist.
    """
    files = {}
    for dirpath, _, filenames in os.walk(source_dir):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            rel = os.path.relpath(path, source_dir).replace(os.sep, "/")
            if rel != METADATA_FILE:
                files[rel] = PushFile(rel, path, os.path.getsize(path))
    for rel, source in (extra_files or {}).items():
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or rel == METADATA_FILE:
            raise ValueError(
                f"invalid extra file name {rel!r}: use a relative '/'-separated path inside the version, "
                f"not {METADATA_FILE} (the registry writes it)"
            )
        if rel in files:
            raise ValueError(f"extra file {rel!r} is also a file of the pushed folder {source_dir}")
        size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
        files[rel] = PushFile(rel, source, size)
    return sorted(files.values(), key=lambda f: (f.rel == "saved_model.pb", f.rel))
