"""What a storage must provide to the registry: the primitives that ``Registry`` builds on.

``Registry`` (``base.py``) holds the rules (names, versions, alias history, promotion, rollback)
on top of these byte-level primitives, so a local folder (``local.py``) and GCS (``gcs.py``)
behave the same. Each primitive takes names already validated by ``Registry``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

# Contention is between a handful of pushes or promotions; a bound keeps a bug from spinning forever.
MAX_VERSION_ATTEMPTS = 1000
MAX_CAS_ATTEMPTS = 200


class StorageBackend(abc.ABC):
    """The storage primitives of a registry rooted at ``uri``.

    Attributes:
        uri: The registry root: an absolute local path or ``gs://bucket[/prefix]``.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # --- versions -----------------------------------------------------------------------------

    @abc.abstractmethod
    def _push(self, model: str, source_dir: str, metadata: dict) -> int:
        """Copies ``source_dir`` into a new complete version and returns its number.

        Two concurrent pushes never get the same number; a failed copy leaves no listed version.
        """

    @abc.abstractmethod
    def _put_file(self, local_path: str, dest: str) -> None:
        """Copies one file of a push into place (a path or an object name)."""

    @abc.abstractmethod
    def _list_model_names(self) -> list[str]:
        """Names of the model folders (complete or not); ``[]`` when the root does not exist."""

    @abc.abstractmethod
    def _list_versions(self, model: str) -> list[int]:
        """Complete versions of ``model`` (those with a ``metadata.json``), in any order."""

    @abc.abstractmethod
    def _version_complete(self, model: str, version: int) -> bool:
        """Whether the version's ``metadata.json`` exists."""

    @abc.abstractmethod
    def _read_metadata(self, model: str, version: int) -> bytes | None:
        """The version's ``metadata.json`` bytes, or None if it has none."""

    @abc.abstractmethod
    def _metadata_location(self, model: str, version: int) -> str:
        """Where the version's ``metadata.json`` is, for messages."""

    @abc.abstractmethod
    def _version_uri(self, model: str, version: int) -> str:
        """The version folder: an absolute path or ``gs://...``."""

    @abc.abstractmethod
    def _download(self, model: str, version: int, dest_dir: str) -> str:
        """A local folder holding the complete version (``dest_dir``, or the version folder itself)."""

    # --- aliases and audit log ----------------------------------------------------------------

    @abc.abstractmethod
    def _list_alias_names(self, model: str) -> list[str]:
        """Names of the model's alias files (see ``records.alias_names``)."""

    @abc.abstractmethod
    def _read_alias(self, model: str, alias: str) -> bytes | None:
        """The alias file's bytes, or None if the alias was never set."""

    @abc.abstractmethod
    def _alias_location(self, model: str, alias: str) -> str:
        """Where the alias file is, for messages."""

    @abc.abstractmethod
    def _update_alias(self, model: str, alias: str, move: Callable[[dict | None], dict]) -> dict:
        """Atomically appends ``move(current)`` to the alias and returns the new alias document.

        ``move`` may be called more than once (GCS retries) and may raise to abort. Once the move
        is committed, its audit event (``records.audit_event``) is appended to the audit log.
        """

    @abc.abstractmethod
    def _read_audit(self, model: str) -> list[dict]:
        """Every audit event of ``model``, oldest first."""

    # --- settings -----------------------------------------------------------------------------

    @abc.abstractmethod
    def _read_config(self) -> bytes | None:
        """``registry.json``'s bytes, or None if there is none."""

    @abc.abstractmethod
    def _write_config(self, data: bytes) -> None:
        """Replaces ``registry.json`` (last writer wins)."""

    @abc.abstractmethod
    def _config_location(self) -> str:
        """Where ``registry.json`` is, for messages."""
