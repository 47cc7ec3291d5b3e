"""The registry in a local (or mounted) folder.

Concurrency on a local disk (Linux):
    * A push writes the whole version, ``metadata.json`` included, into a hidden ``.tmp-<hex>``
      folder inside the model folder, then renames it to ``<N>``: the version appears atomically.
      ``os.rename`` of a folder onto an existing non-empty folder fails on Linux, so a push that
      loses the race for N retries with the next number. The push holds the folder's lease
      (``.tmp-<hex>.lease``, ``leases.py``) until then, so a folder whose lease can be taken was
      left by a killed push: the next push of the model removes it.
    * An alias update is a read-modify-write under an ``fcntl`` lock file, whose write is
      write-temp-then-``os.replace``: two updates never lose one another. A push that moves an
      alias publishes its version (the rename) under that alias's lock, after checking the gate
      there, so "the alias still points at the champion" and "publish and move" are one step.
    * The audit log ``audit.jsonl`` is appended with one ``write`` under a second ``fcntl`` lock,
      taken while the alias lock is held, so the file is in commit order.

Every writer of a registry must lock this way (this module, any version since leases exist):
a push by a program that writes ``.tmp-`` folders without a lease would look killed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator

from components.registry import leases, local_sweep
from components.registry.backend import MAX_VERSION_ATTEMPTS, STALE_AFTER_S, AliasMove, Leftover
from components.registry.base import Registry
from components.registry.errors import ConcurrentUpdateError
from components.registry.policy import NAME_RE, VERSION_RE
from components.registry.records import (
    ALIASES_DIR,
    AUDIT_FILE,
    CONFIG_FILE,
    METADATA_FILE,
    TMP_PREFIX,
    TRASH_PREFIX,
    PushFile,
    alias_bytes,
    alias_names,
    apply_move,
    audit_event,
    metadata_bytes,
    now_iso,
    parse_alias,
    parse_event,
)

logger = logging.getLogger(__name__)


class LocalRegistry(Registry):
    """Registry in a local (or mounted) folder; the layout is in the package docstring (``components.registry``)."""

    def __init__(self, root: str, stale_after_s: float = STALE_AFTER_S) -> None:
        root = os.path.abspath(root)
        super().__init__(root, stale_after_s)
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

    def _put_file(self, source: str | bytes, dest: str) -> None:
        if isinstance(source, bytes):
            with open(dest, "wb") as f:
                f.write(source)
        else:
            shutil.copy2(source, dest)

    def _push(self, model: str, files: list[PushFile], metadata: dict, move: AliasMove | None) -> int:
        model_dir = self._model_dir(model)
        created = _missing_folders(model_dir)
        self._sweep(model)
        published: list[int] = []
        try:
            # Hidden and inside the model folder: same file system as the target (rename stays
            # atomic), and neither this registry nor TF Serving takes it for a version.
            with leases.temporary_folder(model_dir, TMP_PREFIX) as tmp_dir:
                # Not shutil.copytree: it carries on after a failed file and raises a summary
                # shutil.Error at the end instead of the original error.
                for f in files:
                    dest = os.path.join(tmp_dir, *f.rel.split("/"))
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    self._put_file(f.source, dest)
                manifest = {f.rel: f.size for f in files}
                if move is None:
                    published.append(self._publish(model, model_dir, tmp_dir, metadata, manifest))
                    return published[0]

                def gated_move(current: dict | None) -> dict:
                    move.check(current)
                    published.append(self._publish(model, model_dir, tmp_dir, metadata, manifest))
                    return move.entry(current, published[0])

                self._update_alias(model, move.alias, gated_move)
                return published[0]
        except BaseException:
            if move is not None and published and not self._points_at(model, move.alias, published[0]):
                self._withdraw(model, published[0])
            _remove_empty(created)
            raise

    def _withdraw(self, model: str, version: int) -> None:
        """Removes a version published by a push whose alias move then failed: nothing points at it."""
        folder = self._version_uri(model, version)
        trash = os.path.join(self._model_dir(model), f"{TRASH_PREFIX}{version}-{uuid.uuid4().hex}")
        try:
            os.rename(folder, trash)  # TF Serving stops seeing it at once; the removal may take longer
            shutil.rmtree(trash)
        except OSError as err:
            logger.warning("could not withdraw version %d of model %r (%s): %s", version, model, folder, err)

    def _publish(self, model: str, model_dir: str, tmp_dir: str, metadata: dict, manifest: dict[str, int]) -> int:
        version = 0
        for _ in range(MAX_VERSION_ATTEMPTS):
            # Incomplete numeric folders count too: their numbers are taken.
            version = max([version, *self._numeric_entries(model_dir)]) + 1
            _write_file_atomic(
                os.path.join(tmp_dir, METADATA_FILE), metadata_bytes(metadata, model, version, now_iso(), manifest)
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

    def _sweep(self, model: str) -> None:
        """Removes what killed pushes of ``model`` left (their leases are free), before a push."""
        for leftover in self._leftovers(model):
            if leftover.kind == "temporary folder" and not leftover.in_use:
                try:
                    if leftover.remove():
                        logger.info("removed %s left by a killed push", leftover.location)
                except OSError as err:
                    logger.warning("could not remove %s left by a killed push: %s", leftover.location, err)

    def _model_files(self, model: str) -> dict[int, dict[str, int]]:
        model_dir = self._model_dir(model)
        found = {}
        for version in self._numeric_entries(model_dir):
            folder = os.path.join(model_dir, str(version))
            files = {}
            for dirpath, _, filenames in os.walk(folder):
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    with contextlib.suppress(FileNotFoundError):
                        files[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
            found[version] = files
        return found

    def _leftovers(self, model: str | None) -> list[Leftover]:
        if model is None:
            return local_sweep.root_leftovers(self.root, self.stale_after_s)
        return local_sweep.model_leftovers(self._model_dir(model))

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

    @contextlib.contextmanager
    def _alias_lock(self, model: str, alias: str) -> Iterator[None]:
        """Holds the alias's lock; a move that fails on a never-set alias leaves no lock file or folder."""
        aliases_dir = os.path.join(self._model_dir(model), ALIASES_DIR)
        lock_path = local_sweep.alias_lock_path(aliases_dir, alias)
        for _ in range(MAX_VERSION_ATTEMPTS):
            created = _missing_folders(aliases_dir)
            try:
                # A separate lock file, because the alias file itself is replaced (a lock on a
                # replaced inode would protect nothing). flock also excludes threads.
                lock = leases.acquire(lock_path)
                break
            except FileNotFoundError:
                continue  # the empty aliases folder was swept in between: make it again
        else:
            raise ConcurrentUpdateError(f"alias {alias!r} of model {model!r}: could not lock {lock_path}")
        assert lock is not None
        try:
            yield
        except BaseException:
            if self._read_alias(model, alias) is None:
                # Removed while held, so that a waiting writer sees the lock file go and retries.
                leases.release(lock, remove=True)
                _remove_empty(created)
            raise
        finally:
            lock.close()

    def _update_alias(self, model: str, alias: str, move: Callable[[dict | None], dict]) -> dict:
        path = self._alias_location(model, alias)
        with self._alias_lock(model, alias):
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
        with leases.locked(local_sweep.audit_lock_path(self._model_dir(model))):
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


def _missing_folders(folder: str) -> list[str]:
    """Makes ``folder`` and its missing parents; returns those it made, outermost first."""
    missing = []
    current = os.path.abspath(folder)
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    os.makedirs(folder, exist_ok=True)
    return missing[::-1]


def _remove_empty(folders: list[str]) -> None:
    """Removes the folders of :func:`_missing_folders` again, innermost first, while they are empty."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            continue
        except OSError:
            return  # not empty: someone else uses it now (and so its parents)


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
