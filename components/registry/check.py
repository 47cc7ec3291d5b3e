"""Checking a registry (``kfp-finetune models check``): what is damaged, and what writers left behind.

Reported, never changed (versions and aliases are production state; a person decides):
    * a **damaged version**: a numbered folder whose ``metadata.json`` is missing (local: a
      version appears by an atomic rename, so a folder without it was made by another tool),
      is not a JSON object, names another model or version (a copy put there by hand or by an
      export into the registry), or whose files differ from the manifest recorded at push
      (``"files"``: a file missing, of another size, or one more);
    * a **damaged alias** (its file is not valid, or it points at a missing or damaged version)
      and a **damaged audit log**;
    * a **stray folder**: a folder at the registry root that holds no numbered version (not a model).

Reported and removed with ``repair`` (the storage decides what is safe, see ``Leftover``):
temporary folders of killed pushes (local, lock-aware), partial versions of killed pushes
(GCS, by age), stale locks, temporary files, empty folders, and the system temporary folder's
``push-*`` staging folders of pushes by earlier versions of this package (by age). A leftover
that a live writer may still own is reported as in use and left alone, so a check is safe to
run while pushes are in flight.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

from components.registry.backend import Leftover, StorageBackend
from components.registry.errors import CorruptMetadataError
from components.registry.records import METADATA_FILE, parse_metadata

DAMAGED_VERSION = "damaged version"
DAMAGED_ALIAS = "damaged alias"
DAMAGED_AUDIT = "damaged audit log"
STRAY_FOLDER = "stray folder"
# Earlier versions of the push step copied each version into <system temp>/push-<random>/version/.
LEGACY_STAGING_PREFIX = "push-"
LEGACY_STAGING_FILES = ("evaluation.json", "training.json")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing ``check_registry`` found.

    Attributes:
        kind: ``"damaged version"``, ``"damaged alias"``, ``"damaged audit log"``, ``"stray
            folder"``, or a leftover's kind (``"temporary folder"``, ``"partial version"``,
            ``"stale lock"``, ``"temporary file"``, ``"empty folder"``, ``"staging folder"``).
        location: The path or ``gs://`` URI.
        problem: What is wrong, in words.
        model, version: What it belongs to, where known.
        leftover: Whether ``repair`` may remove it.
        in_use: A leftover a live writer may still own: not a problem, left alone.
        removed: Removed by this check's ``repair``.
    """

    kind: str
    location: str
    problem: str
    model: str | None = None
    version: int | None = None
    leftover: bool = False
    in_use: bool = False
    removed: bool = False

    @property
    def is_problem(self) -> bool:
        """Whether it still needs attention: damage, or a stale leftover that was not removed."""
        return not (self.in_use or self.removed)


def version_problem(model: str, version: int, files: dict[str, int], metadata: bytes | None, where: str) -> str | None:
    """What is wrong with one numbered folder (pure: reads nothing).

    Args:
        model, version: The folder's model and number.
        files: The folder's files: ``/``-separated path -> size in bytes (``metadata.json`` included).
        metadata: ``metadata.json``'s bytes, or None without one.
        where: The ``metadata.json`` location, for messages.

    Returns:
        None for a sound version; else one line, e.g. ``"metadata.json is not valid JSON: ..."``
        or ``"files differ from the manifest: missing variables/variables.index"``.
    """
    if metadata is None:
        return f"no {METADATA_FILE}: not a complete version (made outside the registry?)"
    try:
        doc = parse_metadata(metadata, model, version, where)
    except CorruptMetadataError as err:
        return str(err)
    if (doc.get("model"), doc.get("version")) != (model, version):
        return (f"{METADATA_FILE} names model {doc.get('model')!r} version {doc.get('version')!r}, not "
                f"{model!r} version {version}: a copy put here from elsewhere")
    manifest = doc.get("files")
    if manifest is None:
        return None  # pushed before manifests were recorded: nothing to compare with
    if not isinstance(manifest, dict) or not all(isinstance(n, int) and not isinstance(n, bool) for n in manifest.values()):
        return f"{METADATA_FILE} has a malformed 'files' manifest (expected path -> size in bytes)"
    present = {rel: size for rel, size in files.items() if rel != METADATA_FILE}
    differences = [f"missing {rel}" for rel in sorted(set(manifest) - set(present))]
    differences += [f"{rel} has {present[rel]} bytes, not {manifest[rel]}"
                    for rel in sorted(set(manifest) & set(present)) if present[rel] != manifest[rel]]
    differences += [f"unexpected {rel}" for rel in sorted(set(present) - set(manifest))]
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        return f"files differ from the manifest recorded at push: {shown}"
    return None


def damaged_versions(registry: StorageBackend, model: str) -> dict[int, str]:
    """The complete versions of ``model`` (those with a ``metadata.json``) that are damaged.

    Returns:
        Version -> :func:`version_problem`'s line.
    """
    damaged = {}
    for version, files in registry._model_files(model).items():
        if METADATA_FILE in files:
            problem = version_problem(model, version, files, registry._read_metadata(model, version),
                                      registry._metadata_location(model, version))
            if problem:
                damaged[version] = problem
    return damaged


def _from_leftover(leftover: Leftover, model: str | None) -> Finding:
    what = "in use by a live writer, left alone" if leftover.in_use else "left by a killed or failed writer"
    return Finding(leftover.kind, leftover.location, what, model, leftover.version, leftover=True, in_use=leftover.in_use)


def legacy_staging_folders(temp_dir: str, stale_after_s: float) -> list[Leftover]:
    """``push-*`` staging folders of earlier push steps in ``temp_dir`` (a folder ``version/``
    holding ``evaluation.json`` and ``training.json``); in use while younger than ``stale_after_s``."""
    found = []
    try:
        names = sorted(os.listdir(temp_dir))
    except FileNotFoundError:
        return []
    now = time.time()
    for name in names:
        folder = os.path.join(temp_dir, name)
        version = os.path.join(folder, "version")
        if not name.startswith(LEGACY_STAGING_PREFIX) or not all(
            os.path.isfile(os.path.join(version, f)) for f in LEGACY_STAGING_FILES
        ):
            continue
        try:
            age = now - max(os.path.getmtime(folder), os.path.getmtime(version))
        except FileNotFoundError:
            continue

        def remove(folder: str = folder) -> bool:
            shutil.rmtree(folder, ignore_errors=False)
            return True

        found.append(Leftover("staging folder", folder, age < stale_after_s, remove))
    return found


def _model_findings(
    registry: StorageBackend, model: str, at_root: set[str]
) -> tuple[list[Finding], list[tuple[Leftover, str]]]:
    findings: list[Finding] = []
    leftovers = [(leftover, model) for leftover in registry._leftovers(model)]
    partial = {leftover.version for leftover, _ in leftovers if leftover.version is not None}
    folders = registry._model_files(model)
    sound = set()
    for version, files in sorted(folders.items()):
        if version in partial:
            continue  # a push's upload (in flight or killed), reported as a leftover
        location = registry._metadata_location(model, version)
        metadata = registry._read_metadata(model, version) if METADATA_FILE in files else None
        problem = version_problem(model, version, files, metadata, location)
        if problem:
            findings.append(Finding(DAMAGED_VERSION, registry._version_uri(model, version), problem, model, version))
        else:
            sound.add(version)
    for alias in sorted(registry._list_alias_names(model)):
        location = registry._alias_location(model, alias)
        try:
            version = registry.get_alias(model, alias)
        except CorruptMetadataError as err:
            findings.append(Finding(DAMAGED_ALIAS, location, str(err), model))
            continue
        if version is not None and version not in sound:
            state = "damaged" if version in folders else "missing"
            findings.append(Finding(DAMAGED_ALIAS, location, f"points at version {version}, which is {state}", model, version))
    try:
        registry.audit(model)
    except CorruptMetadataError as err:
        findings.append(Finding(DAMAGED_AUDIT, registry.uri, str(err), model))
    stray = f"{registry.uri}/{model}"
    if not folders and not registry._list_alias_names(model) and not leftovers and stray not in at_root:
        findings.append(Finding(STRAY_FOLDER, stray,
                                "holds no numbered version folder: not a model (written by another tool?)", model))
    return findings, leftovers


def check_registry(
    registry: StorageBackend, repair: bool = False, temp_dir: str | None = None
) -> list[Finding]:
    """Checks every model of a registry; with ``repair``, removes the stale leftovers.

    Safe while pushes and alias moves are in flight: only leftovers that no live writer can own
    are removed (see the module docstring), and damage is only reported.

    Args:
        registry: The registry (its ``stale_after_s`` decides when an unlockable leftover is stale).
        repair: Remove the stale leftovers found.
        temp_dir: The system temporary folder to search for earlier push steps' staging folders;
            None searches none.

    Returns:
        Every finding, registry root first, then model by model; ``[]`` for a sound registry.

    Raises:
        OSError, google.api_core.exceptions.GoogleAPIError: The registry could not be read, or a
            leftover could not be removed.
        RegistryError: The GCS bucket does not exist.
    """
    findings: list[Finding] = []
    leftovers: list[tuple[Leftover, str | None]] = [(leftover, None) for leftover in registry._leftovers(None)]
    at_root = {leftover.location for leftover, _ in leftovers}
    for model in sorted(registry._list_model_names()):
        found, model_leftovers = _model_findings(registry, model, at_root)
        findings += found
        leftovers += model_leftovers
    if temp_dir is not None:
        leftovers += [(leftover, None) for leftover in legacy_staging_folders(temp_dir, registry.stale_after_s)]
    for leftover, model in leftovers:
        finding = _from_leftover(leftover, model)
        if repair and not leftover.in_use:
            removed = leftover.remove()
            finding = dataclasses.replace(finding, removed=removed, in_use=not removed,
                                          problem="removed" if removed else "in use by a live writer, left alone")
        findings.append(finding)
    return findings
