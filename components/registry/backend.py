"""What a storage must provide to the registry: the primitives that ``Registry`` builds on.

``Registry`` (``base.py``) holds the rules (names, versions, alias history, promotion, rollback)
on top of these byte-level primitives, so a local folder (``local.py``) and GCS (``gcs.py``)
behave the same. Each primitive takes names already validated by ``Registry``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable

from components.registry.records import PushFile

# Contention is between a handful of pushes or promotions; a bound keeps a bug from spinning forever.
MAX_VERSION_ATTEMPTS = 1000
MAX_CAS_ATTEMPTS = 200
# A leftover that no lock can vouch for (a partial GCS upload, a temporary settings file) is
# stale once nothing has touched it for this long: far longer than a push spends on one file.
STALE_AFTER_S = 3600.0


@dataclasses.dataclass(frozen=True)
class AliasMove:
    """The alias move that completes a push (see ``Registry.push``).

    Attributes:
        alias: The alias to move to the new version.
        check: Called with the alias document before the move (None: never set); raises to
            refuse the move, e.g. ``ChampionChangedError``. The version is then not published.
        entry: ``entry(current, version)``: the history entry of the move (``records.history_entry``).
    """

    alias: str
    check: Callable[[dict | None], None]
    entry: Callable[[dict | None, int], dict]


@dataclasses.dataclass(frozen=True)
class Leftover:
    """Something a push or an alias update left behind, found by ``_leftovers``.

    Attributes:
        kind: ``"temporary folder"`` (a local push's ``.tmp-<hex>`` and its lease), ``"partial
            version"`` (a GCS push's objects without ``metadata.json``), ``"stale lock"``,
            ``"temporary file"`` or ``"empty folder"``.
        location: Its path or ``gs://`` URI (a GCS partial version: its folder).
        in_use: Whether a live writer may still own it: its lock is held (local), or it changed
            less than ``stale_after_s`` ago where no lock can tell. Such a leftover is not removed.
        remove: Removes it if still unused; returns False when a writer turned out to own it.
        version: The version number a partial version would have had; None for the others.
    """

    kind: str
    location: str
    in_use: bool
    remove: Callable[[], bool] = dataclasses.field(repr=False, compare=False)
    version: int | None = None


class StorageBackend(abc.ABC):
    """The storage primitives of a registry rooted at ``uri``.

    Attributes:
        uri: The registry root: an absolute local path or ``gs://bucket[/prefix]``.
        stale_after_s: Age in seconds after which a leftover that no lock vouches for is stale
            (see :class:`Leftover`).
    """

    def __init__(self, uri: str, stale_after_s: float = STALE_AFTER_S) -> None:
        self.uri = uri
        self.stale_after_s = stale_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # --- versions -----------------------------------------------------------------------------

    @abc.abstractmethod
    def _push(self, model: str, files: list[PushFile], metadata: dict, move: AliasMove | None) -> int:
        """Copies ``files`` into a new complete version, moves ``move.alias`` to it, returns its number.

        ``metadata`` is the complete ``metadata.json`` content except ``version`` and
        ``created_at``. Two concurrent pushes never get the same number. The version is
        published only if ``move.check`` accepts the alias as it is at that moment, atomically
        with the move where the storage allows (see each storage's docstring). A failed or
        refused push leaves no version and no folder it made, unless the alias was moved.
        """

    @abc.abstractmethod
    def _put_file(self, source: str | bytes, dest: str) -> None:
        """Writes one file of a push (a local path to copy, or bytes) to ``dest`` (a path or an object name)."""

    @abc.abstractmethod
    def _model_files(self, model: str) -> dict[int, dict[str, int]]:
        """Every numbered folder of ``model`` (complete or not): its files' paths and sizes in bytes."""

    @abc.abstractmethod
    def _leftovers(self, model: str | None) -> list[Leftover]:
        """What killed or failed writers left in the model's folder (None: at the registry root)."""

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
