"""The registry in a local (or mounted) folder.

Concurrency on a local disk (Linux):
    * A push writes the whole version, ``metadata.json`` included, into a hidden ``.tmp-<uuid>``
      folder inside the model folder, then renames it to ``<N>``: the version appears atomically.
      ``os.rename`` of a folder onto an existing non-empty folder fails on Linux, so a push that
      loses the race for N retries with the next number.
    * An alias update is a read-modify-write under an ``fcntl`` lock file, whose write is
      write-temp-then-``os.replace``: two updates never lose one another.
    * The audit log ``audit.jsonl`` is appended with one ``write`` under a second ``fcntl`` lock,
      taken while the alias lock is held, so the file is in commit order.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable

from components.registry.backend import MAX_VERSION_ATTEMPTS
from components.registry.base import Registry
from components.registry.errors import ConcurrentUpdateError
from components.registry.policy import NAME_RE, VERSION_RE
from components.registry.records import (
    ALIASES_DIR,
    AUDIT_FILE,
    CONFIG_FILE,
    METADATA_FILE,
    TMP_PREFIX,
    alias_bytes,
    alias_names,
    apply_move,
    audit_event,
    metadata_bytes,
    now_iso,
    parse_alias,
    parse_event,
    source_files,
)

logger = logging.getLogger(__name__)


class LocalRegistry(Registry):
    """Registry in a local (or mounted) folder; the layout is in the package docstring (``components.registry``)."""

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
            return [e.name for e in entries if e.is_dir() and NAME_RE.fullmatch(e.name)]

    def _numeric_entries(self, model_dir: str) -> list[int]:
        try:
            return [int(name) for name in os.listdir(model_dir) if VERSION_RE.fullmatch(name)]
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
        tmp_dir = os.path.join(model_dir, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        os.mkdir(tmp_dir)
        try:
            # Not shutil.copytree: it carries on after a failed file and raises a summary
            # shutil.Error at the end instead of the original error.
            for rel in source_files(source_dir):
                dest = os.path.join(tmp_dir, *rel.split("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                self._put_file(os.path.join(source_dir, rel), dest)
            return self._publish(model, model_dir, tmp_dir, metadata)
        except BaseException:
            self._remove_tmp(tmp_dir)
            raise

    def _publish(self, model: str, model_dir: str, tmp_dir: str, metadata: dict) -> int:
        version = 0
        for _ in range(MAX_VERSION_ATTEMPTS):
            # Incomplete numeric folders count too: their numbers are taken.
            version = max([version, *self._numeric_entries(model_dir)]) + 1
            _write_file_atomic(
                os.path.join(tmp_dir, METADATA_FILE), metadata_bytes(metadata, model, version, now_iso())
            )
            try:
                os.rename(tmp_dir, os.path.join(model_dir, str(version)))
                return version
            except OSError as err:
                # Another push took this number first (the target is a non-empty folder, or a file).
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise
        raise ConcurrentUpdateError(
            f"push of model {model!r}: no free version number after {MAX_VERSION_ATTEMPTS} attempts "
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
        return alias_names(names)

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
            current = None if data is None else parse_alias(data, model, alias, path)
            doc = apply_move(model, alias, current, move(current))
            _write_file_atomic(path, alias_bytes(doc))
            # Still under the alias lock, so this alias's events reach the log in commit order.
            self._append_audit(model, audit_event(model, alias, doc["history"][-1]))
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
        return [parse_event(line, path, number) for number, line in enumerate(lines, 1) if line.strip()]

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
