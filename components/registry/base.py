"""Changing a model registry: push, alias moves, promotion, rollback and settings.

:class:`Registry` is the whole registry: the reads of
:class:`~components.registry.reader.RegistryReader` plus every change, each checked by the same
rules on every storage. Get one with :func:`components.registry.open_registry`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

from components.registry.backend import AliasMove
from components.registry.errors import AliasNotFoundError, ChampionChangedError, NoPreviousVersionError
from components.registry.policy import (
    ALIAS_ACTIONS,
    check_promotion,
    environments_of_version,
    rollback_target,
    validate_env_order,
    validate_name,
    validate_version,
)
from components.registry.reader import ModelVersion, RegistryReader
from components.registry.records import history_entry, push_files

logger = logging.getLogger(__name__)


class _Ungated:
    """The type of :data:`UNGATED`."""

    def __repr__(self) -> str:
        return "UNGATED"


# ``Registry.push(compared_with=UNGATED)``: move the alias whatever it points at (no gate).
UNGATED = _Ungated()


class Registry(RegistryReader):
    """A model registry; get one with :func:`components.registry.open_registry`.

    Subclasses store bytes; this class and :class:`~components.registry.reader.RegistryReader`
    hold the rules (names, versions, alias history, promotion, rollback), so both storages behave
    the same.
    """

    def push(
        self,
        model: str,
        source_dir: str,
        metadata: dict,
        alias: str | None = None,
        actor: str | None = None,
        compared_with: int | None | _Ungated = UNGATED,
        extra_files: Mapping[str, str | bytes] | None = None,
    ) -> ModelVersion:
        """Copies a local folder into a new version of ``model``, and moves ``alias`` to it.

        The whole folder is copied (a SavedModel at its root: ``saved_model.pb``, ``variables/``,
        ``assets/``, plus any other file) and ``extra_files`` into ``<root>/<model>/<N>/`` with
        N = the highest existing version + 1, then ``metadata.json`` is written: ``metadata``
        plus ``"model"``, ``"version"``, ``"created_at"`` (ISO-8601, UTC) and ``"files"`` (the
        manifest: path -> size in bytes of every other file), which override keys of the same
        name. A ``metadata.json`` at the root of ``source_dir`` is replaced. The version is
        listed only once complete. If the copy fails, nothing is listed, what the push made
        (the partial copy, and a model or registry folder it created) is removed and the
        original error is raised.

        The champion/challenger gate: with ``compared_with`` (the version ``alias`` pointed at
        when the challenger was evaluated; None for "it was unset"), the alias is moved only if
        it still points there, checked before anything is written and again, atomically with
        the move, when the version is published; otherwise nothing is published and
        :class:`~components.registry.errors.ChampionChangedError` names both versions. The move
        is recorded with ``gated: true`` and ``compared_with``. (On GCS, a champion that changes
        in the last instant before publication leaves the version visible for about one request
        before it is withdrawn: see ``gcs.py``.)

        Args:
            model: Model name (see :func:`~components.registry.policy.validate_name`).
            source_dir: Local folder to copy.
            metadata: JSON-serializable object: metrics, dataset fingerprint, base model, weights
                source, hyperparameters, pipeline run id.
            alias: If given, moved to the new version (action ``"push"``).
            actor: Who pushed, recorded in the alias history.
            compared_with: The gate's expected alias version (see above); :data:`UNGATED`
                (default) moves the alias whatever it points at.
            extra_files: More files for the version: relative ``/``-separated path -> a local
                file's path, or its content as bytes (see ``records.push_files``).

        Returns:
            The new version.

        Raises:
            ValueError: Bad model or alias name, ``compared_with`` without an alias or not a
                version, bad ``extra_files`` names, or metadata that is not a JSON-serializable dict.
            NotADirectoryError: ``source_dir`` is not a folder.
            ChampionChangedError: The gate refused; nothing was published.
            ConcurrentUpdateError: No free version number found after many attempts.
            RegistryError: The GCS bucket does not exist.
            OSError, google.api_core.exceptions.GoogleAPIError: A failed read or write, raised as
                it came, after the partial version was removed.
        """
        validate_name(model)
        gated = not isinstance(compared_with, _Ungated)
        if alias is not None:
            validate_name(alias, "alias")
        elif gated:
            raise ValueError(f"push of model {model!r}: compared_with={compared_with!r} needs an alias to gate")
        if gated and compared_with is not None:
            validate_version(compared_with)
        if not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata is not JSON-serializable: {err}") from err
        if not os.path.isdir(source_dir):
            raise NotADirectoryError(f"push source_dir {source_dir!r} is not a folder")
        files = push_files(source_dir, extra_files)
        if not any(f.rel == "saved_model.pb" for f in files):
            logger.warning("push of model %r: %s has no saved_model.pb at its root", model, source_dir)
        move = None
        if alias is not None:
            move = self._push_move(model, alias, actor, compared_with if gated else UNGATED)
            # Refused before any byte is written; the move re-checks atomically at publication.
            move.check(self._alias_doc(model, alias))
        version = self._push(model, files, metadata, move)
        logger.info("pushed model %r version %d to %s", model, version, self.uri)
        return ModelVersion(model=model, version=version, uri=self._version_uri(model, version))

    def _points_at(self, model: str, alias: str, version: int) -> bool:
        """Whether the alias points at ``version``, after a push failed: True when that cannot be
        read, so that a version that may be in use is kept."""
        try:
            return self.get_alias(model, alias) == version
        except Exception as err:  # noqa: BLE001 - the push's own error is the one raised
            logger.warning("could not read alias %r of model %r after a failed push: %s", alias, model, err)
            return True

    @staticmethod
    def _push_move(model: str, alias: str, actor: str | None, compared_with: int | None | _Ungated) -> AliasMove:
        gated = not isinstance(compared_with, _Ungated)
        expected = None if isinstance(compared_with, _Ungated) else compared_with

        def check(current: dict | None) -> None:
            now = None if current is None else current["version"]
            if gated and now != expected:
                raise ChampionChangedError(model, alias, expected, now)

        def entry(current: dict | None, version: int) -> dict:
            return history_entry(current, version, "push", actor, None, False, (), gated=gated, compared_with=expected)

        return AliasMove(alias, check, entry)

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
            return history_entry(current, version, action, actor, reason, forced, overridden)

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

        The policy is :func:`~components.registry.policy.check_promotion` with the version's
        metadata, the environment order of :meth:`env_order` and the alias histories of that
        order's environments. The rules only look at immutable or append-only records (metadata,
        alias histories), so checking before the atomic move cannot be invalidated by a
        concurrent writer.

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
        histories = {alias: self.alias_history(model, alias) for alias in order}
        environments = environments_of_version(histories, version)
        overridden = check_promotion(model, version, metadata, env, environments, order, force, reason)
        if overridden:
            # info, not warning: the caller reports it (the CLI prints it once; a warning reached
            # stderr through logging's last-resort handler as a second copy); the audit keeps it.
            logger.info(
                "forced promotion of model %r version %d to %r by %s: %s (overrode: %s)",
                model, version, env, actor, reason, "; ".join(overridden),
            )
        return self.set_alias(
            model, env, version, action="promote", actor=actor, reason=reason, forced=force, overridden=overridden
        )

    def set_env_order(self, order: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """Writes ``{"env_order": order}`` to ``<root>/registry.json`` (last writer wins).

        Raises:
            ValueError: See :func:`~components.registry.policy.validate_env_order`.
        """
        order = validate_env_order(order)
        self._write_config((json.dumps({"env_order": list(order)}, indent=2) + "\n").encode("utf-8"))
        logger.info("environment order of %s set to %s", self.uri, " -> ".join(order))
        return order

    def rollback(
        self, model: str, alias: str, actor: str | None = None, reason: str | None = None
    ) -> int:
        """Moves an alias back to the version it pointed at before its current one.

        The target is :func:`~components.registry.policy.rollback_target` of the alias history
        (the ``previous_version`` of the latest move that differs from the current version), read
        and changed in one atomic update. A second rollback therefore undoes the first (it goes
        back to the version the first rollback left).

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
        # Refused before the alias's lock or folder is made: an alias is never unset again, so
        # the move below cannot find it unset once this read found it set.
        self._require_alias(model, alias)
        chosen: list[int] = []

        def move(current: dict | None) -> dict:
            if current is None:
                raise AliasNotFoundError(f"alias {alias!r} of model {model!r} is not set in {self.uri}")
            target = rollback_target(current["history"], current["version"])
            if target is None:
                raise NoPreviousVersionError(
                    f"alias {alias!r} of model {model!r} has no previous version to roll back to "
                    f"(it points at version {current['version']} and has no earlier one)"
                )
            self._require_version(model, target)
            chosen[:] = [target]
            return history_entry(current, target, "rollback", actor, reason, False, ())

        self._update_alias(model, alias, move)
        logger.info("alias %r of model %r rolled back to version %d", alias, model, chosen[0])
        return chosen[0]
