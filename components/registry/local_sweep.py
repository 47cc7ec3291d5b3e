"""What killed or failed writers leave in a local registry folder, and how each is removed safely.

Found in a model folder (``model_leftovers``):
    * ``.tmp-<hex>/`` with its lease ``.tmp-<hex>.lease``: a push's copy. Stale once its lease
      can be taken (the push is gone); removed under that lease (``leases.claim``).
    * ``.trash-<N>-<hex>/``: a withdrawn version whose removal was cut short.
    * ``aliases/.<alias>.lock`` of an alias that was never set: a stale lock (a refused first
      move, or an older version's rollback of an unset alias). Removed while held, after checking
      that the alias is still unset.
    * ``aliases/.<alias>.json.tmp-<hex>``: an alias write that died before its rename. Removed
      under the alias's lock, which every alias writer holds while its temporary file exists.
    * ``.audit.jsonl.lock`` with no ``audit.jsonl``: a stale lock.
    * an empty ``aliases/`` folder.

Found at the registry root (``root_leftovers``): empty model folders (a failed first push of
an older version) and ``.registry.json.tmp-<hex>`` files (settings are written without a lock,
so these are stale only once older than the registry's ``stale_after_s``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable

from components.registry import leases
from components.registry.backend import Leftover
from components.registry.policy import NAME_RE
from components.registry.records import ALIASES_DIR, AUDIT_FILE, CONFIG_FILE, TMP_PREFIX, TRASH_PREFIX

LOCK_SUFFIX = ".lock"


def alias_lock_path(aliases_dir: str, alias: str) -> str:
    """The lock file of an alias: ``aliases/.<alias>.lock``."""
    return os.path.join(aliases_dir, f".{alias}{LOCK_SUFFIX}")


def audit_lock_path(model_dir: str) -> str:
    """The lock file of the audit log: ``<model>/.audit.jsonl.lock``."""
    return os.path.join(model_dir, f".{AUDIT_FILE}{LOCK_SUFFIX}")


def _listdir(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _remove_lock_if(lock_path: str, stale: Callable[[], bool]) -> bool:
    """Removes a lock file if nobody holds it and ``stale()`` still holds once it is held."""
    handle = leases.acquire(lock_path, blocking=False)
    if handle is None:
        return False
    if not stale():
        handle.close()
        return False
    # Removed while held: a writer that opened it before waits, then sees it gone and retries.
    leases.release(handle, remove=True)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(lock_path))  # only when that leaves the folder empty
    return True


def _remove_under_lock(lock_path: str, path: str) -> bool:
    """Removes ``path`` while holding ``lock_path`` (kept), if nobody else holds it."""
    handle = leases.acquire(lock_path, blocking=False)
    if handle is None:
        return False
    with handle:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return True


def _rmdir_if_empty(folder: str) -> bool:
    try:
        os.rmdir(folder)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # something was written into it meanwhile
    return True


def model_leftovers(model_dir: str) -> list[Leftover]:
    """The leftovers in one model folder (see the module docstring), oldest name first.

    Args:
        model_dir: ``<root>/<model>``; a missing folder has none.
    """
    found = []
    names = _listdir(model_dir)
    for name in names:
        if name.startswith(TRASH_PREFIX):
            # A withdrawn version renamed away, whose removal was cut short (it is never in use:
            # the remover deletes it at once after the rename).
            trash = os.path.join(model_dir, name)
            found.append(Leftover("temporary folder", trash, False, lambda trash=trash: _rmtree(trash)))
    stems = sorted({leases.leased_folder_of(n) for n in names if n.startswith(TMP_PREFIX)})
    for stem in stems:
        folder = os.path.join(model_dir, stem)
        found.append(Leftover(
            "temporary folder", folder, leases.is_held(leases.lease_path(folder)),
            lambda folder=folder: leases.claim(folder),
        ))
    aliases_dir = os.path.join(model_dir, ALIASES_DIR)
    alias_entries = _listdir(aliases_dir)
    for name in alias_entries:
        if name.startswith(".") and name.endswith(LOCK_SUFFIX):
            alias = name[1 : -len(LOCK_SUFFIX)]
            alias_file = os.path.join(aliases_dir, f"{alias}.json")
            if not os.path.exists(alias_file):
                lock = os.path.join(aliases_dir, name)
                found.append(Leftover(
                    "stale lock", lock, leases.is_held(lock),
                    lambda lock=lock, alias_file=alias_file: _remove_lock_if(lock, lambda: not os.path.exists(alias_file)),
                ))
        elif name.startswith(".") and ".json.tmp-" in name:
            alias = name[1 : name.index(".json.tmp-")]
            lock = alias_lock_path(aliases_dir, alias)
            path = os.path.join(aliases_dir, name)
            found.append(Leftover(
                "temporary file", path, leases.is_held(lock), lambda lock=lock, path=path: _remove_under_lock(lock, path)
            ))
    if os.path.isdir(aliases_dir) and not alias_entries:
        found.append(Leftover("empty folder", aliases_dir, False, lambda: _rmdir_if_empty(aliases_dir)))
    audit_lock = audit_lock_path(model_dir)
    audit_file = os.path.join(model_dir, AUDIT_FILE)
    if os.path.exists(audit_lock) and not os.path.exists(audit_file):
        found.append(Leftover(
            "stale lock", audit_lock, leases.is_held(audit_lock),
            lambda: _remove_lock_if(audit_lock, lambda: not os.path.exists(audit_file)),
        ))
    return found


def root_leftovers(root: str, stale_after_s: float) -> list[Leftover]:
    """The leftovers at the registry root (see the module docstring).

    Args:
        root: The registry folder; a missing folder has none.
        stale_after_s: Age in seconds after which an unlocked temporary settings file is stale.
    """
    found = []
    now = time.time()
    for name in _listdir(root):
        path = os.path.join(root, name)
        if NAME_RE.fullmatch(name) and os.path.isdir(path) and not _listdir(path):
            found.append(Leftover("empty folder", path, False, lambda path=path: _rmdir_if_empty(path)))
        elif name.startswith(f".{CONFIG_FILE}.tmp-"):
            try:
                age = now - os.path.getmtime(path)
            except FileNotFoundError:
                continue
            found.append(Leftover("temporary file", path, age < stale_after_s, lambda path=path: _unlink(path)))
    return found


def _rmtree(path: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
    return True


def _unlink(path: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True
