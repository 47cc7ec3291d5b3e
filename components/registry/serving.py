"""Export of a registry alias to a TF Serving model base path (``kfp-finetune models export-serving``).

Not to be confused with ``components.finetune.export.save_serving_model``, which saves a trained model's
serving SavedModel: this module copies a version that is already in the registry to the folder a
TF Serving server watches.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import uuid

from components.locations import is_inside, refuse_inside
from components.registry.base import Registry
from components.registry.errors import ServingExportError
from components.registry.local import LocalRegistry
from components.registry.policy import VERSION_RE
from components.registry.records import METADATA_FILE, TMP_PREFIX, TRASH_PREFIX, parse_metadata

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServingExport:
    """What :func:`export_to_serving_base` did.

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


def export_to_serving_base(
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
        ValueError: Bad name, a ``keep`` that is not an int >= 1, a ``gs://`` (any URI) base path,
            a base path inside the registry (which would make the export remove versions) or holding
            it, a base path that is a file.
        ServingExportError: a numbered folder the export would remove (above N, or below it with
            ``keep``) is not an export of ``model`` (no ``metadata.json`` naming it); checked before
            anything is written.
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
    if isinstance(registry, LocalRegistry):
        # Inside the registry the export would take versions for its own folders and remove them.
        refuse_inside({"serving base path": base_path}, {"registry": registry.uri})
        # ... and a registry inside the base path could be one of the numbered folders it removes.
        if is_inside(registry.uri, base_path):
            raise ValueError(
                f"the registry {registry.uri!r} lies inside the serving base path {base_path!r}: the export "
                "removes numbered folders there; choose a base path that does not contain the registry"
            )
    base = os.path.abspath(base_path)
    if os.path.exists(base) and not os.path.isdir(base):
        raise ValueError(f"serving base path {base_path!r} is a file: expected a folder (TF Serving's --model_base_path)")
    found = registry.resolve(model, alias=alias)
    version = found.version
    expected = registry.get_metadata(model, version)
    # Only this model's own exports are removed: a numbered folder that holds anything else stops
    # the export before it writes.
    for n in _numbered(base) if os.path.isdir(base) else []:
        removable = n > version or (n < version and keep is not None)
        if removable and (other := _not_an_export(os.path.join(base, str(n)), model)):
            raise ServingExportError(
                f"serving base path {base} holds folder {n}, which is not an export of model {model!r} ({other}); "
                "the export would remove it: move it away or use another base path"
            )
    os.makedirs(base, exist_ok=True)
    target = os.path.join(base, str(version))
    copied = False
    if not os.path.isdir(target):
        tmp = os.path.join(base, f"{TMP_PREFIX}export-{uuid.uuid4().hex}")
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

    numbered = _numbered(base)
    removed = [v for v in numbered if v > version]
    lower = [v for v in numbered if v < version]
    if keep is not None:
        removed += lower[: max(0, len(lower) - (keep - 1))]
    # Higher folders first: the moment the last one goes, TF Serving's latest version is N.
    for v in sorted(removed, reverse=True):
        trash = os.path.join(base, f"{TRASH_PREFIX}{v}-{uuid.uuid4().hex}")
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


def _numbered(base: str) -> list[int]:
    """The numbered folders of a serving base path, ascending."""
    return sorted(int(n) for n in os.listdir(base) if VERSION_RE.fullmatch(n) and os.path.isdir(os.path.join(base, n)))


def _not_an_export(folder: str, model: str) -> str | None:
    """None when ``folder`` holds an export of ``model`` (its ``metadata.json`` names it), else what it holds."""
    try:
        with open(os.path.join(folder, METADATA_FILE), "rb") as f:
            got = json.loads(f.read())
    except FileNotFoundError:
        return "no metadata.json"
    except (OSError, ValueError) as err:
        return f"unreadable metadata.json: {err}"
    if not isinstance(got, dict) or got.get("model") != model:
        return f"metadata.json names model {got.get('model') if isinstance(got, dict) else None!r}"
    return None


def _check_exported(folder: str, model: str, version: int, expected: dict) -> None:
    path = os.path.join(folder, METADATA_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = None
    got = None if data is None else parse_metadata(data, model, version, path)
    key = ("model", "version", "created_at")
    if got is None or tuple(got.get(k) for k in key) != tuple(expected.get(k) for k in key):
        found = "no metadata.json" if got is None else ", ".join(f"{k}={got.get(k)!r}" for k in key)
        raise ServingExportError(
            f"serving folder {folder} does not hold model {model!r} version {version} created at "
            f"{expected.get('created_at')} ({found}); move it away or use another base path"
        )
