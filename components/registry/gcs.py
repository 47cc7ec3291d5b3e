"""The registry on Google Cloud Storage (``gs://bucket[/prefix]``).

GCS has no rename and no append, so the local folder's mechanisms are replaced by generation
preconditions (``if_generation_match``):
    * A push claims version N with a create-only write (``if_generation_match=0``) of the marker
      ``<model>/.reserved/<N>``; a 412 answer means the number is taken and the next is tried.
      The files are then uploaded create-only (``saved_model.pb`` after the variables, so a
      TF Serving poll never finds a graph without its weights), and ``metadata.json`` last: the
      version is listed only once that exists.
    * An alias update is a compare-and-swap on the alias object's generation, retried on 412.
    * Each audit event is its own create-only object named ``<UTC time>-<random>``, so writers
      never touch the same object and a listing is in time order.

Preconditions hold for uploads sent in one request; GCS also checks them on resumable uploads
(over 8 MiB), but the fake-gcs-server emulator used by the tests ignores them there. The
``google-cloud-storage`` client is imported only when a ``gs://`` registry is opened.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any

from components.registry.backend import MAX_CAS_ATTEMPTS, MAX_VERSION_ATTEMPTS
from components.registry.base import Registry
from components.registry.errors import ConcurrentUpdateError, RegistryError
from components.registry.policy import NAME_RE, VERSION_RE
from components.registry.records import (
    ALIASES_DIR,
    AUDIT_DIR,
    CONFIG_FILE,
    GCS_RESERVED_DIR,
    METADATA_FILE,
    alias_bytes,
    alias_names,
    apply_move,
    audit_event,
    metadata_bytes,
    now_iso,
    parse_alias,
    parse_event,
    source_files,
)

logger = logging.getLogger(__name__)


class GcsRegistry(Registry):
    """Registry under ``gs://bucket/prefix``; the layout is in the package docstring (``components.registry``).

    Uses the official ``google-cloud-storage`` client. When ``STORAGE_EMULATOR_HOST`` is set (read
    when the registry is opened) the client talks to that emulator with anonymous credentials;
    otherwise it uses Application Default Credentials.
    """

    def __init__(self, bucket: str, prefix: str, client: Any = None) -> None:
        prefix = prefix.strip("/")
        super().__init__(f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}")
        from google.api_core import exceptions as gexc  # noqa: PLC0415 - kept off the import path

        self._gexc = gexc
        if client is None:
            from components.storage import gcs_client  # noqa: PLC0415

            client = gcs_client()
        self._client = client
        self._bucket = client.bucket(bucket)
        self.bucket_name = bucket
        self.prefix = prefix

    def _name(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def _version_uri(self, model: str, version: int) -> str:
        return f"gs://{self.bucket_name}/{self._name(model, str(version))}"

    def _metadata_location(self, model: str, version: int) -> str:
        return f"{self._version_uri(model, version)}/{METADATA_FILE}"

    def _alias_location(self, model: str, alias: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(model, ALIASES_DIR, alias + '.json')}"

    def _list(self, prefix: str, delimiter: str | None = None) -> tuple[list[Any], set[str]]:
        try:
            it = self._client.list_blobs(self._bucket, prefix=prefix, delimiter=delimiter)
            blobs = list(it)
        except self._gexc.NotFound as err:
            raise RegistryError(f"bucket {self.bucket_name!r} of registry {self.uri} not found") from err
        return blobs, set(it.prefixes)

    def _children(self, prefix: str) -> list[str]:
        """Names of the 'folders' directly under ``prefix/``."""
        base = prefix + "/" if prefix else ""
        _, prefixes = self._list(base, delimiter="/")
        return [p[len(base) :].rstrip("/") for p in prefixes]

    def _download_bytes(self, name: str) -> tuple[bytes, int] | None:
        blob = self._bucket.blob(name)
        try:
            data = blob.download_as_bytes()
        except self._gexc.NotFound:
            return None
        # The client takes the generation from the download's response headers, so it names
        # exactly the content read: the right value for a compare-and-swap.
        return data, blob.generation

    def _list_model_names(self) -> list[str]:
        return [n for n in self._children(self.prefix) if NAME_RE.fullmatch(n)]

    def _list_versions(self, model: str) -> list[int]:
        blobs, _ = self._list(self._name(model) + "/")
        pattern = re.compile(re.escape(self._name(model)) + r"/([0-9]+)/" + re.escape(METADATA_FILE))
        versions = {int(m.group(1)) for b in blobs if (m := pattern.fullmatch(b.name))}
        return [v for v in versions if v >= 1]

    def _version_complete(self, model: str, version: int) -> bool:
        return self._bucket.blob(self._name(model, str(version), METADATA_FILE)).exists()

    def _read_metadata(self, model: str, version: int) -> bytes | None:
        got = self._download_bytes(self._name(model, str(version), METADATA_FILE))
        return None if got is None else got[0]

    def _put_file(self, local_path: str, dest: str) -> None:
        # Create-only: nobody else may write into a reserved version. Small files go up in one
        # request, where the precondition holds (resumable uploads over 8 MiB are also checked by
        # GCS itself, but not by fake-gcs-server).
        self._bucket.blob(dest).upload_from_filename(local_path, if_generation_match=0)

    def _reserve_version(self, model: str) -> int:
        version = 0
        for _ in range(MAX_VERSION_ATTEMPTS):
            # Numbers are taken by version folders (complete or not, including any pushed by other
            # tools) and by reservation markers of pushes still uploading.
            taken = [int(n) for n in self._children(self._name(model)) if VERSION_RE.fullmatch(n)]
            markers, _ = self._list(self._name(model, GCS_RESERVED_DIR) + "/")
            taken += [int(n) for b in markers if VERSION_RE.fullmatch(n := b.name.rsplit("/", 1)[-1])]
            version = max([version, *taken]) + 1
            marker = self._bucket.blob(self._name(model, GCS_RESERVED_DIR, str(version)))
            try:
                marker.upload_from_string(
                    now_iso().encode(), content_type="text/plain", if_generation_match=0
                )
                return version
            except self._gexc.PreconditionFailed:
                continue
        raise ConcurrentUpdateError(
            f"push of model {model!r}: no free version number after {MAX_VERSION_ATTEMPTS} attempts "
            f"in {self.uri}"
        )

    def _push(self, model: str, source_dir: str, metadata: dict) -> int:
        files = source_files(source_dir)
        # The marker stays outside the version folder: a TF Serving poll must not see the version
        # before its files.
        version = self._reserve_version(model)
        uploaded: list[str] = []
        try:
            for rel in files:
                dest = self._name(model, str(version), rel)
                self._put_file(os.path.join(source_dir, rel), dest)
                uploaded.append(dest)
            meta = self._name(model, str(version), METADATA_FILE)
            self._bucket.blob(meta).upload_from_string(
                metadata_bytes(metadata, model, version, now_iso()),
                content_type="application/json",
                if_generation_match=0,
            )
            return version
        except BaseException:
            self._cleanup_failed_push(model, version, uploaded)
            raise

    def _cleanup_failed_push(self, model: str, version: int, uploaded: list[str]) -> None:
        # Files first, marker last: while the marker exists no other push can take this number,
        # so a later push never sees a half-deleted folder as its own.
        for name in [*uploaded, self._name(model, GCS_RESERVED_DIR, str(version))]:
            try:
                self._bucket.blob(name).delete()
            except self._gexc.NotFound:
                pass
            except Exception as err:  # noqa: BLE001 - the push's own error is the one raised
                logger.warning(
                    "failed push of model %r: could not delete gs://%s/%s: %s", model, self.bucket_name, name, err
                )

    def _download(self, model: str, version: int, dest_dir: str) -> str:
        dest_dir = os.path.abspath(dest_dir)
        if os.path.isdir(dest_dir) and os.listdir(dest_dir):
            raise ValueError(f"download dest_dir {dest_dir!r} is not empty")
        os.makedirs(dest_dir, exist_ok=True)
        base = self._name(model, str(version)) + "/"
        blobs, _ = self._list(base)
        for blob in blobs:
            rel = blob.name[len(base) :]
            if not rel or rel.endswith("/"):
                continue  # folder placeholders made by some tools
            target = os.path.abspath(os.path.join(dest_dir, *rel.split("/")))
            if not target.startswith(dest_dir + os.sep):
                raise RegistryError(
                    f"object gs://{self.bucket_name}/{blob.name} would land outside {dest_dir}"
                )
            os.makedirs(os.path.dirname(target), exist_ok=True)
            blob.download_to_filename(target)
        return dest_dir

    def _list_alias_names(self, model: str) -> list[str]:
        base = self._name(model, ALIASES_DIR) + "/"
        blobs, _ = self._list(base, delimiter="/")
        names = [b.name[len(base) :] for b in blobs]
        return alias_names(names)

    def _read_alias(self, model: str, alias: str) -> bytes | None:
        got = self._download_bytes(self._name(model, ALIASES_DIR, f"{alias}.json"))
        return None if got is None else got[0]

    def _update_alias(self, model: str, alias: str, move: Callable[[dict | None], dict]) -> dict:
        name = self._name(model, ALIASES_DIR, f"{alias}.json")
        location = self._alias_location(model, alias)
        for attempt in range(MAX_CAS_ATTEMPTS):
            got = self._download_bytes(name)
            if got is None:
                current, generation = None, 0  # generation 0: "only if the object does not exist"
            else:
                current, generation = parse_alias(got[0], model, alias, location), got[1]
            doc = apply_move(model, alias, current, move(current))
            try:
                self._bucket.blob(name).upload_from_string(
                    alias_bytes(doc), content_type="application/json", if_generation_match=generation
                )
            except self._gexc.PreconditionFailed:
                # Someone else moved the alias in between: re-read and re-apply. Jitter keeps
                # the same writers from colliding in lockstep.
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))
                continue
            # Only after the commit: an event for a move that lost its compare-and-swap would be
            # a lie. A process killed right here leaves the move in the alias history only.
            self._append_audit(model, audit_event(model, alias, doc["history"][-1]))
            return doc
        raise ConcurrentUpdateError(
            f"alias {alias!r} of model {model!r}: gave up after {MAX_CAS_ATTEMPTS} concurrent updates "
            f"({location})"
        )

    def _append_audit(self, model: str, event: dict) -> None:
        # One object per event, create-only: no writer ever rewrites another's event, so there
        # is nothing to lose under concurrency (GCS has no append).
        blob = self._bucket.blob(self._name(model, AUDIT_DIR, f"{event['id']}.json"))
        blob.upload_from_string(
            json.dumps(event, sort_keys=True) + "\n", content_type="application/json", if_generation_match=0
        )

    def _read_audit(self, model: str) -> list[dict]:
        blobs, _ = self._list(self._name(model, AUDIT_DIR) + "/", delimiter="/")
        events = []
        for blob in sorted(blobs, key=lambda b: b.name):
            if not blob.name.endswith(".json"):
                continue
            events.append(parse_event(blob.download_as_bytes(), f"gs://{self.bucket_name}/{blob.name}"))
        return events

    def _config_location(self) -> str:
        return f"gs://{self.bucket_name}/{self._name(CONFIG_FILE)}"

    def _read_config(self) -> bytes | None:
        got = self._download_bytes(self._name(CONFIG_FILE))
        return None if got is None else got[0]

    def _write_config(self, data: bytes) -> None:
        self._bucket.blob(self._name(CONFIG_FILE)).upload_from_string(data, content_type="application/json")
