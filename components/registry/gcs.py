"""The registry on Google Cloud Storage (``gs://bucket[/prefix]``).

GCS has no rename and no append, so the local folder's mechanisms are replaced by generation
preconditions (``if_generation_match``):
    * A push claims version N with a create-only write (``if_generation_match=0``) of the marker
      ``<model>/.reserved/<N>``; a 412 answer means the number is taken and the next is tried.
      The files are then uploaded create-only (``saved_model.pb`` after the variables, so a
      TF Serving poll never finds a graph without its weights), and ``metadata.json`` last: the
      version is listed only once that exists.
    * An alias update is a compare-and-swap on the alias object's generation, retried on 412.
      A push that moves an alias checks the gate on the alias it read, writes ``metadata.json``,
      then swaps the alias; if the swap finds the alias moved and the gate now refuses, the
      version is withdrawn (``metadata.json`` first) and was visible for that one request only.
    * Each audit event is its own create-only object named ``<UTC time>-<random>``, so writers
      never touch the same object and a listing is in time order.
    * Killed pushes leave objects without ``metadata.json`` (the marker keeps the number taken).
      With no lock to ask, they are stale once none has changed for ``stale_after_s``; the next
      push of the model and ``models check --repair`` delete them.

Transient faults (429, 5xx, timeouts) are retried per request (``components.storage.gcs_retry``).
A retried write whose first attempt had in fact succeeded answers 412; every write here is
create-only or compare-and-swap and tells its own earlier success from another writer's object
(same bytes, same event id), so a retry never pushes, moves or audits twice. An endpoint that
does not answer fails within ``components.storage.GCS_RETRY_TIMEOUT_S`` with
``StorageUnavailableError`` naming the bucket.

Preconditions hold for uploads sent in one request; GCS also checks them on resumable uploads
(over 8 MiB), but the fake-gcs-server emulator used by the tests ignores them there. The
``google-cloud-storage`` client is imported only when a ``gs://`` registry is opened.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from components import storage
from components.registry.backend import (
    MAX_CAS_ATTEMPTS,
    MAX_VERSION_ATTEMPTS,
    STALE_AFTER_S,
    AliasMove,
    Leftover,
    StorageBackend,
)
from components.registry.base import Registry
from components.registry.errors import ConcurrentUpdateError, RegistryError
from components.registry.gcs_objects import ObjectStore
from components.registry.policy import NAME_RE, VERSION_RE
from components.registry.records import (
    ALIASES_DIR,
    AUDIT_DIR,
    CONFIG_FILE,
    GCS_RESERVED_DIR,
    METADATA_FILE,
    PushFile,
    alias_bytes,
    alias_names,
    apply_move,
    audit_event,
    metadata_bytes,
    now_iso,
    parse_alias,
    parse_event,
)

logger = logging.getLogger(__name__)


def _naming_the_bucket(cls: type) -> type:
    """Wraps every storage primitive of ``cls`` so that a GCS endpoint that does not answer
    raises ``StorageUnavailableError`` naming the bucket instead of a transport error."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: GcsRegistry, *args: Any, **kwargs: Any) -> Any:
            with storage.unavailable_as_error(self.bucket_name):
                return method(self, *args, **kwargs)

        return call

    for name in StorageBackend.__abstractmethods__:
        if name in cls.__dict__:
            setattr(cls, name, wrap(cls.__dict__[name]))
    return cls


@_naming_the_bucket
class GcsRegistry(Registry):
    """Registry under ``gs://bucket/prefix``; the layout is in the package docstring (``components.registry``).

    Uses the official ``google-cloud-storage`` client. When ``STORAGE_EMULATOR_HOST`` is set (read
    when the registry is opened) the client talks to that emulator with anonymous credentials;
    otherwise it uses Application Default Credentials.
    """

    def __init__(self, bucket: str, prefix: str, client: Any = None, stale_after_s: float = STALE_AFTER_S) -> None:
        prefix = prefix.strip("/")
        super().__init__(f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}", stale_after_s)
        self._store = ObjectStore(client if client is not None else storage.gcs_client(), bucket, self.uri)
        self._client, self._bucket, self._gexc = self._store.client, self._store.bucket, self._store.errors
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

    def _list_model_names(self) -> list[str]:
        return [n for n in self._store.children(self.prefix) if NAME_RE.fullmatch(n)]

    def _objects_by_version(self, model: str) -> dict[int, list[Any]]:
        """Every object under ``<model>/<N>/``, by N."""
        blobs, _ = self._store.list(self._name(model) + "/")
        pattern = re.compile(re.escape(self._name(model)) + r"/([0-9]+)/(.+)")
        found: dict[int, list[Any]] = {}
        for blob in blobs:
            if (m := pattern.fullmatch(blob.name)) and int(m.group(1)) >= 1:
                found.setdefault(int(m.group(1)), []).append(blob)
        return found

    def _list_versions(self, model: str) -> list[int]:
        return [v for v, blobs in self._objects_by_version(model).items()
                if any(b.name == self._name(model, str(v), METADATA_FILE) for b in blobs)]

    def _model_files(self, model: str) -> dict[int, dict[str, int]]:
        found = {}
        for version, blobs in self._objects_by_version(model).items():
            base = self._name(model, str(version)) + "/"
            found[version] = {b.name[len(base) :]: int(b.size or 0) for b in blobs if not b.name.endswith("/")}
        return found

    def _version_complete(self, model: str, version: int) -> bool:
        return self._bucket.blob(self._name(model, str(version), METADATA_FILE)).exists(**self._store.io)

    def _read_metadata(self, model: str, version: int) -> bytes | None:
        got = self._store.download(self._name(model, str(version), METADATA_FILE))
        return None if got is None else got[0]

    def _put_file(self, source: str | bytes, dest: str) -> None:
        # Create-only: nobody else may write into a reserved version. Small files go up in one
        # request, where the precondition holds (resumable uploads over 8 MiB are also checked by
        # GCS itself, but not by fake-gcs-server).
        self._store.create_or_fail(dest, source)

    def _reserve_version(self, model: str) -> int:
        version = 0
        # Unique content: a retried create that had succeeded is told from another push's marker.
        token = f"{now_iso()} {uuid.uuid4().hex}".encode()
        for _ in range(MAX_VERSION_ATTEMPTS):
            # Numbers are taken by version folders (complete or not, including any pushed by other
            # tools) and by reservation markers of pushes still uploading.
            taken = [int(n) for n in self._store.children(self._name(model)) if VERSION_RE.fullmatch(n)]
            markers, _ = self._store.list(self._name(model, GCS_RESERVED_DIR) + "/")
            taken += [int(n) for b in markers if VERSION_RE.fullmatch(n := b.name.rsplit("/", 1)[-1])]
            version = max([version, *taken]) + 1
            if self._store.create(self._name(model, GCS_RESERVED_DIR, str(version)), token, "text/plain"):
                return version
        raise ConcurrentUpdateError(
            f"push of model {model!r}: no free version number after {MAX_VERSION_ATTEMPTS} attempts "
            f"in {self.uri}"
        )

    def _push(self, model: str, files: list[PushFile], metadata: dict, move: AliasMove | None) -> int:
        self._sweep(model)
        # The marker stays outside the version folder: a TF Serving poll must not see the version
        # before its files.
        version = self._reserve_version(model)
        uploaded: list[str] = []
        published: list[str] = []
        meta = self._name(model, str(version), METADATA_FILE)
        data = metadata_bytes(metadata, model, version, now_iso(), {f.rel: f.size for f in files})

        def publish() -> None:
            if not published:
                self._store.create_or_fail(meta, data, "application/json")
                published.append(meta)

        try:
            for f in files:
                dest = self._name(model, str(version), f.rel)
                self._put_file(f.source, dest)
                uploaded.append(dest)
            if move is None:
                publish()
                return version

            def gated_move(current: dict | None) -> dict:
                move.check(current)  # may run again after a lost swap: then it sees the new alias
                publish()
                return move.entry(current, version)

            self._update_alias(model, move.alias, gated_move)
            return version
        except BaseException:
            if published and (move is None or self._points_at(model, move.alias, version)):
                raise  # the version is out and in use: a later error (the audit event) changes nothing
            # metadata.json first: the version stops being listed before its files go.
            self._cleanup_failed_push(model, version, [*published, *uploaded])
            raise

    def _cleanup_failed_push(self, model: str, version: int, uploaded: list[str]) -> None:
        # Files first, marker last: while the marker exists no other push can take this number,
        # so a later push never sees a half-deleted folder as its own.
        for name in [*uploaded, self._name(model, GCS_RESERVED_DIR, str(version))]:
            try:
                self._store.delete(name)
            except storage.transport_errors() as err:
                # The endpoint is gone: each further delete would wait out its own retries. What is
                # left is a partial version, which the next push or `models check --repair` removes.
                logger.warning("failed push of model %r: gs://%s unreachable, leaving %s: %s",
                               model, self.bucket_name, self._version_uri(model, version), err)
                return
            except Exception as err:  # noqa: BLE001 - the push's own error is the one raised
                logger.warning(
                    "failed push of model %r: could not delete gs://%s/%s: %s", model, self.bucket_name, name, err
                )

    def _sweep(self, model: str) -> None:
        """Deletes the partial versions of killed pushes of ``model`` (stale ones only), before a push."""
        for leftover in self._leftovers(model):
            if not leftover.in_use:
                try:
                    if leftover.remove():
                        logger.info("removed %s left by a killed push", leftover.location)
                except self._gexc.GoogleAPIError as err:
                    logger.warning("could not remove %s left by a killed push: %s", leftover.location, err)

    def _leftovers(self, model: str | None) -> list[Leftover]:
        if model is None:
            return []  # settings are written in one request; nothing is left at the root
        found = []
        for version, blobs in sorted(self._objects_by_version(model).items()):
            if any(b.name == self._name(model, str(version), METADATA_FILE) for b in blobs):
                continue  # complete
            in_use = self._age_s(blobs) < self.stale_after_s
            found.append(Leftover(
                "partial version", f"{self._version_uri(model, version)}/ ({len(blobs)} objects, no {METADATA_FILE})",
                in_use, lambda version=version: self._remove_partial(model, version), version,
            ))
        return found

    @staticmethod
    def _age_s(blobs: list[Any]) -> float:
        """Seconds since the newest of ``blobs`` was written (by the server's clock and this one's)."""
        newest = max(b.updated for b in blobs)
        return (datetime.datetime.now(datetime.timezone.utc) - newest).total_seconds()

    def _remove_partial(self, model: str, version: int) -> bool:
        blobs, _ = self._store.list(self._name(model, str(version)) + "/")
        if not blobs:
            return True
        if any(b.name == self._name(model, str(version), METADATA_FILE) for b in blobs):
            return False  # completed meanwhile
        if self._age_s(blobs) < self.stale_after_s:
            return False  # its push is alive after all
        for blob in blobs:
            self._store.delete(blob.name)
        return True

    def _download(self, model: str, version: int, dest_dir: str) -> str:
        dest_dir = os.path.abspath(dest_dir)
        if os.path.isdir(dest_dir) and os.listdir(dest_dir):
            raise ValueError(f"download dest_dir {dest_dir!r} is not empty")
        os.makedirs(dest_dir, exist_ok=True)
        base = self._name(model, str(version)) + "/"
        blobs, _ = self._store.list(base)
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
            blob.download_to_filename(target, **self._store.io)
        return dest_dir

    def _list_alias_names(self, model: str) -> list[str]:
        base = self._name(model, ALIASES_DIR) + "/"
        blobs, _ = self._store.list(base, delimiter="/")
        names = [b.name[len(base) :] for b in blobs]
        return alias_names(names)

    def _read_alias(self, model: str, alias: str) -> bytes | None:
        got = self._store.download(self._name(model, ALIASES_DIR, f"{alias}.json"))
        return None if got is None else got[0]

    def _update_alias(self, model: str, alias: str, move: Callable[[dict | None], dict]) -> dict:
        name = self._name(model, ALIASES_DIR, f"{alias}.json")
        location = self._alias_location(model, alias)
        for attempt in range(MAX_CAS_ATTEMPTS):
            got = self._store.download(name)
            if got is None:
                current, generation = None, 0  # generation 0: "only if the object does not exist"
            else:
                current, generation = parse_alias(got[0], model, alias, location), got[1]
            doc = apply_move(model, alias, current, move(current))
            if self._store.swap(name, alias_bytes(doc), generation) or self._committed(name, model, alias, doc):
                break  # swapped, possibly by a retried request whose first attempt had succeeded
            # Someone else moved the alias in between: re-read and re-apply. Jitter keeps the
            # same writers from colliding in lockstep.
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))
        else:
            raise ConcurrentUpdateError(
                f"alias {alias!r} of model {model!r}: gave up after {MAX_CAS_ATTEMPTS} concurrent updates "
                f"({location})"
            )
        # Only after the commit: an event for a move that lost its compare-and-swap would be
        # a lie. A process killed right here leaves the move in the alias history only.
        self._append_audit(model, audit_event(model, alias, doc["history"][-1]))
        return doc

    def _committed(self, name: str, model: str, alias: str, doc: dict) -> bool:
        """Whether the alias object's latest move is the one of ``doc`` (same event id)."""
        got = self._store.download(name)
        if got is None:
            return False
        history = parse_alias(got[0], model, alias, self._alias_location(model, alias))["history"]
        return bool(history) and history[-1].get("event_id") == doc["history"][-1]["event_id"]

    def _append_audit(self, model: str, event: dict) -> None:
        # One object per event, create-only: no writer ever rewrites another's event, so there
        # is nothing to lose under concurrency (GCS has no append).
        name = self._name(model, AUDIT_DIR, f"{event['id']}.json")
        self._store.create_or_fail(name, (json.dumps(event, sort_keys=True) + "\n").encode("utf-8"), "application/json")

    def _read_audit(self, model: str) -> list[dict]:
        blobs, _ = self._store.list(self._name(model, AUDIT_DIR) + "/", delimiter="/")
        events = []
        for blob in sorted(blobs, key=lambda b: b.name):
            if not blob.name.endswith(".json"):
                continue
            events.append(parse_event(blob.download_as_bytes(**self._store.io), f"gs://{self.bucket_name}/{blob.name}"))
        return events

    def _config_location(self) -> str:
        return f"gs://{self.bucket_name}/{self._name(CONFIG_FILE)}"

    def _read_config(self) -> bytes | None:
        got = self._store.download(self._name(CONFIG_FILE))
        return None if got is None else got[0]

    def _write_config(self, data: bytes) -> None:
        self._store.put(self._name(CONFIG_FILE), data)
