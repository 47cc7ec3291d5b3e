"""Errors of the model registry: every one is a :class:`RegistryError`.

Bad arguments (a malformed name, version or URI) are ``ValueError`` instead, so that callers can
tell "you asked wrongly" from "the registry said no".
"""

from __future__ import annotations


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
    """A ``metadata.json``, alias file or audit event is not valid JSON or does not have the expected shape."""


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


class ChampionChangedError(RegistryError):
    """A gated push was refused: the alias no longer points at the version the challenger was
    compared with (another run moved it since the evaluation). Nothing was published.

    Attributes:
        model: The model.
        alias: The alias the push would have moved.
        compared_with: The version the evaluation compared with (None: the alias was unset).
        current: The version the alias points at now (None: unset).
        reason: ``"the champion changed from v2 to v3 since evaluation"`` (``none`` for unset).
    """

    def __init__(self, model: str, alias: str, compared_with: int | None, current: int | None) -> None:
        self.model, self.alias, self.compared_with, self.current = model, alias, compared_with, current
        self.reason = (
            f"the champion changed from {version_label(compared_with)} to {version_label(current)} since evaluation"
        )
        super().__init__(
            f"not pushed: {self.reason} (alias {alias!r} of model {model!r}); evaluate again against the new champion"
        )


def version_label(version: int | None) -> str:
    """``v3`` for version 3, ``none`` for an unset alias (for messages)."""
    return "none" if version is None else f"v{version}"
