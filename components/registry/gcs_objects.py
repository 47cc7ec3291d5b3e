"""The object operations of the GCS registry: every request retried, every write safe to retry.

Each request passes ``components.storage.gcs_retry()`` and ``GCS_TIMEOUT_S``: transient answers
(429, 5xx) and connection errors are retried with backoff. A write is retried too, and a retried
write whose first attempt had in fact succeeded is answered 412 (its precondition no longer holds).
So every write here is create-only (``if_generation_match=0``) or a compare-and-swap, and
:meth:`ObjectStore.create` tells its own earlier success (the object holds exactly its bytes) from
another writer's object. The registry's compare-and-swap recognizes its own by event id (``gcs.py``).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from components import storage
from components.registry.errors import ConcurrentUpdateError, RegistryError


class ObjectStore:
    """The objects of one bucket, for the registry at ``uri``.

    Attributes:
        bucket: The ``google.cloud.storage.Bucket``.
        bucket_name: Its name.
    """

    def __init__(self, client: Any, bucket_name: str, uri: str) -> None:
        from google.api_core import exceptions as gexc  # noqa: PLC0415 - kept off the import path

        self.errors = gexc
        self.client = client
        self.bucket = client.bucket(bucket_name)
        self.bucket_name = bucket_name
        self._uri = uri
        self.io = {"retry": storage.gcs_retry(), "timeout": storage.GCS_TIMEOUT_S}

    def list(self, prefix: str, delimiter: str | None = None) -> tuple[list[Any], set[str]]:
        """The objects under ``prefix`` and, with a ``delimiter``, the 'folders' below it.

        Raises:
            RegistryError: The bucket does not exist.
        """
        try:
            it = self.client.list_blobs(self.bucket, prefix=prefix, delimiter=delimiter, **self.io)
            blobs = list(it)
        except self.errors.NotFound as err:
            raise RegistryError(f"bucket {self.bucket_name!r} of registry {self._uri} not found") from err
        return blobs, set(it.prefixes)

    def children(self, prefix: str) -> list[str]:
        """Names of the 'folders' directly under ``prefix/``."""
        base = prefix + "/" if prefix else ""
        _, prefixes = self.list(base, delimiter="/")
        return [p[len(base) :].rstrip("/") for p in prefixes]

    def download(self, name: str) -> tuple[bytes, int] | None:
        """The object's bytes and generation, or None if it does not exist."""
        blob = self.bucket.blob(name)
        try:
            data = blob.download_as_bytes(**self.io)
        except self.errors.NotFound:
            return None
        # The client takes the generation from the download's response headers, so it names
        # exactly the content read: the right value for a compare-and-swap.
        return data, blob.generation

    def delete(self, name: str) -> None:
        """Deletes an object; one already gone is fine (also a retried delete that had succeeded)."""
        try:
            self.bucket.blob(name).delete(**self.io)
        except self.errors.NotFound:
            pass

    def create(self, name: str, source: str | bytes, content_type: str | None = None) -> bool:
        """Writes a new object create-only (``if_generation_match=0``).

        Args:
            name: The object name.
            source: A local file's path, or the bytes to write.
            content_type: The object's content type (default ``application/octet-stream``).

        Returns:
            True when this call created it, also when a retried request answered 412 because its
            first attempt had succeeded (the object holds exactly ``source``); False when the
            object was there with other content (another writer's).
        """
        blob = self.bucket.blob(name)
        try:
            if isinstance(source, bytes):
                blob.upload_from_string(source, content_type=content_type or "application/octet-stream",
                                        if_generation_match=0, **self.io)
            else:
                blob.upload_from_filename(source, if_generation_match=0, **self.io)
            return True
        except self.errors.PreconditionFailed:
            return self.holds(name, source)

    def create_or_fail(self, name: str, source: str | bytes, content_type: str | None = None) -> None:
        """:meth:`create` where nobody else may have written the object.

        Raises:
            ConcurrentUpdateError: Another writer's object is there.
        """
        if not self.create(name, source, content_type):
            raise ConcurrentUpdateError(
                f"gs://{self.bucket_name}/{name} was written by another writer while this one owned it"
            )

    def holds(self, name: str, source: str | bytes) -> bool:
        """Whether object ``name`` exists with exactly the bytes of ``source`` (compared by MD5)."""
        found = self.bucket.get_blob(name, **self.io)
        if found is None:
            return False
        digest = hashlib.md5(usedforsecurity=False)
        if isinstance(source, bytes):
            digest.update(source)
        else:
            with open(source, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        return found.md5_hash == base64.b64encode(digest.digest()).decode("ascii")

    def swap(self, name: str, data: bytes, generation: int) -> bool:
        """Replaces an object only if it is still at ``generation`` (0: only if absent).

        Returns:
            False when the precondition failed (another writer, or a retried request of this one
            that had succeeded: the caller tells which).
        """
        try:
            self.bucket.blob(name).upload_from_string(
                data, content_type="application/json", if_generation_match=generation, **self.io
            )
        except self.errors.PreconditionFailed:
            return False
        return True

    def put(self, name: str, data: bytes) -> None:
        """Writes an object, last writer wins (so repeating the request is harmless)."""
        self.bucket.blob(name).upload_from_string(data, content_type="application/json", **self.io)
