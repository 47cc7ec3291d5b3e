"""Reading a model registry: versions, their metadata, aliases, settings and the audit log.

:class:`RegistryReader` holds every read rule on top of the storage primitives of
:class:`~components.registry.backend.StorageBackend`, so that a local folder and GCS read the
same; :class:`~components.registry.base.Registry` adds the changes. Get one with
:func:`components.registry.open_registry`.
"""

from __future__ import annotations

import dataclasses

from components.registry.backend import StorageBackend
from components.registry.errors import AliasNotFoundError, ModelNotFoundError, VersionNotFoundError
from components.registry.policy import DEFAULT_ENV_ORDER, validate_name, validate_version
from components.registry.records import parse_alias, parse_config, parse_metadata


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


class RegistryReader(StorageBackend):
    """The read side of a model registry (see :class:`~components.registry.base.Registry`)."""

    # --- versions -----------------------------------------------------------------------------

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
        return parse_metadata(data, model, version, self._metadata_location(model, version))

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

    # --- settings and audit log ----------------------------------------------------------------

    def env_order(self) -> tuple[str, ...]:
        """The registry's environment order: ``env_order`` of ``registry.json``, else dev, staging, prod.

        Raises:
            RegistryConfigError: ``registry.json`` is not a JSON object with a valid ``env_order``
                (and no other key); the message names the file.
        """
        data = self._read_config()
        if data is None:
            return DEFAULT_ENV_ORDER
        doc = parse_config(data, self._config_location())
        return tuple(doc.get("env_order", DEFAULT_ENV_ORDER))

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

    # --- shared helpers -----------------------------------------------------------------------

    def _alias_doc(self, model: str, alias: str) -> dict | None:
        validate_name(model)
        validate_name(alias, "alias")
        data = self._read_alias(model, alias)
        if data is None:
            return None
        return parse_alias(data, model, alias, self._alias_location(model, alias))

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
