"""Locks of a registry in a local folder: ``fcntl.flock`` on small lock files.

Two uses:
    * :func:`locked`: the lock of an alias or of the audit log, held while it is changed.
    * :func:`temporary_folder`: a push's hidden ``.tmp-<hex>`` folder with its *lease*, the lock
      file ``.tmp-<hex>.lease`` beside it, held for as long as the push runs. The kernel drops a
      flock when its process dies, so a lease that can be taken belongs to a push that is gone:
      :func:`claim` is how ``models check --repair`` and the next push tell a killed push's
      folder from one still being written, with no age threshold to guess.

A lock file may be removed (a stale lock, or a lease whose folder was swept) while another process
has it open and waits for it; that process would then hold a lock nobody else can see. So every
acquisition checks, once it holds the lock, that the path still names the file it locked, and
starts over otherwise. The lease sits beside the folder, not inside it, because the folder is
renamed into the version and must not carry the lease with it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import BinaryIO

logger = logging.getLogger(__name__)

LEASE_SUFFIX = ".lease"
# Each retry follows a removal by another process, which happens at most once per stale file.
_MAX_ATTEMPTS = 100


def _still_named(path: str, handle: BinaryIO) -> bool:
    """Whether ``path`` still names the open file ``handle`` (it was not removed or replaced)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def acquire(path: str, blocking: bool = True) -> BinaryIO | None:
    """Takes the exclusive lock of the lock file ``path``, creating the file if missing.

    Args:
        path: The lock file; its folder must exist.
        blocking: Wait for the lock; else return None at once when another process holds it.

    Returns:
        The open lock file (close it, or :func:`release` it, to unlock); None when ``blocking``
        is False and the lock is held elsewhere.

    Raises:
        FileNotFoundError: The lock file's folder does not exist.
        OSError: The lock could not be taken (e.g. a file system without ``flock``), or the lock
            file kept being replaced (more than 100 times).
    """
    for _ in range(_MAX_ATTEMPTS):
        handle = open(path, "a+b")  # noqa: SIM115 - returned to the caller, who closes it
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        except BaseException:
            handle.close()
            raise
        if _still_named(path, handle):
            return handle
        handle.close()  # removed while we waited for it: lock the file that is there now
    raise OSError(errno.EAGAIN, f"lock file {path} kept being replaced; gave up after {_MAX_ATTEMPTS} attempts")


def release(handle: BinaryIO, remove: bool = False) -> None:
    """Unlocks a lock file taken by :func:`acquire`, removing it first when ``remove``."""
    try:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(handle.name)
    finally:
        handle.close()


@contextlib.contextmanager
def locked(path: str) -> Iterator[BinaryIO]:
    """Holds the lock of ``path`` (see :func:`acquire`) for the ``with`` block."""
    handle = acquire(path)
    assert handle is not None  # a blocking acquire either locks or raises
    try:
        yield handle
    finally:
        handle.close()


def lease_path(folder: str) -> str:
    """The lease file of a temporary folder: ``<folder>.lease``, beside it."""
    return folder + LEASE_SUFFIX


def leased_folder_of(name: str) -> str:
    """The folder name a ``.lease`` file name belongs to (``name`` itself if it is not one)."""
    return name[: -len(LEASE_SUFFIX)] if name.endswith(LEASE_SUFFIX) else name


@contextlib.contextmanager
def temporary_folder(parent: str, prefix: str) -> Iterator[str]:
    """A new folder ``<parent>/<prefix><hex>`` whose lease this process holds until the block ends.

    On leaving the block the folder is removed if it is still there (the block may have renamed
    it away), then its lease. ``parent`` is created if missing, also when a sweep removes it in
    between (an empty model folder is a leftover).

    Yields:
        The folder's path.

    Raises:
        OSError: The folder or its lease could not be made.
    """
    for _ in range(_MAX_ATTEMPTS):
        folder = os.path.join(parent, f"{prefix}{uuid.uuid4().hex}")
        os.makedirs(parent, exist_ok=True)
        try:
            handle = acquire(lease_path(folder))
        except FileNotFoundError:
            continue  # the empty parent was swept in between: make it again
        try:
            os.mkdir(folder)
        except BaseException:
            release(handle, remove=True)
            raise
        break
    else:
        raise OSError(errno.EAGAIN, f"could not make a temporary folder in {parent} after {_MAX_ATTEMPTS} attempts")
    assert handle is not None
    try:
        yield folder
    finally:
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            pass
        except OSError as err:
            # The block's own error is the one to raise; the folder stays, and with its lease
            # released the next push or `models check --repair` removes it.
            logger.warning("could not remove temporary folder %s: %s", folder, err)
        release(handle, remove=True)


def claim(folder: str) -> bool:
    """Removes a temporary folder and its lease if no live process holds the lease.

    Safe against the folder's owner: its lease is held from before the folder exists until after
    it is renamed or removed, and a removed lease makes the owner start over with a new name.

    Args:
        folder: A folder made by :func:`temporary_folder` (it may be gone, or may never have been
            made when its owner died early).

    Returns:
        True when nobody held the lease and both are gone now; False when a live process holds it.

    Raises:
        OSError: The folder could not be removed (the lease is then left too).
    """
    handle = acquire(lease_path(folder), blocking=False)
    if handle is None:
        return False
    try:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)
    except BaseException:
        handle.close()
        raise
    release(handle, remove=True)
    return True


def is_held(path: str) -> bool:
    """Whether another process holds the lock of the existing lock file ``path`` (False if missing)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; never creates the file
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
