"""Entry points of the registry: open one by URI, and look up an environment's champion."""

from __future__ import annotations

import urllib.parse
from typing import Any

from components.registry.base import Registry
from components.registry.errors import CorruptMetadataError
from components.registry.gcs import GcsRegistry
from components.registry.local import LocalRegistry
from components.registry.records import METADATA_FILE


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


def champion(registry_uri: str, model_name: str, alias: str) -> dict[str, Any] | None:
    """The version an environment alias points at (the champion), with its class labels.

    Args:
        registry_uri: Registry root (see :func:`open_registry`); empty for "no registry".
        model_name: Model name; empty for "no model".
        alias: Environment alias, e.g. ``prod``; empty for "no environment".

    Returns:
        None when any argument is empty, or the registry has no complete version of
        ``model_name`` (including a local registry folder that does not exist yet), or
        ``alias`` was never set. Else ``{"version": int, "alias": str, "labels": list[str]}``:
        ``labels`` is the ``"labels"`` list of the version's ``metadata.json`` (the push step
        writes the class names, in the model's output order), ``[]`` when the metadata has none.

    Raises:
        ValueError: ``registry_uri`` is not a valid registry URI, or ``alias`` is not a valid name.
        RegistryError: The registry exists but cannot be read: e.g. ``CorruptMetadataError`` for a
            damaged alias file or ``metadata.json`` (or ``"labels"`` that is not a list of
            strings), a GCS bucket that does not exist. Never passed off as "no champion".
    """
    if not (registry_uri and model_name and alias):
        return None
    registry = open_registry(registry_uri)
    if model_name not in registry.list_models():
        return None
    version = registry.get_alias(model_name, alias)
    if version is None:
        return None
    labels = registry.get_metadata(model_name, version).get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise CorruptMetadataError(
            f"metadata of model {model_name!r} version {version}: 'labels' is not a list of strings "
            f"(got {labels!r:.80}): {registry.version_uri(model_name, version)}/{METADATA_FILE}"
        )
    return {"version": version, "alias": alias, "labels": list(labels)}
