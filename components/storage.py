"""Reading data and weights from a local path or a ``gs://bucket/path`` URI.

``gs://`` goes through the official ``google-cloud-storage`` client, which honours
``STORAGE_EMULATOR_HOST`` (``tf.io.gfile`` ignores it: measured with TF 2.21, it always
reaches the real Google endpoint), so the same code runs against
Google Cloud Storage and against a local emulator in tests.

Transient faults: every GCS request here and in the registry passes :func:`gcs_retry` and
:data:`GCS_TIMEOUT_S`. Retried are the answers and errors Google's retry strategy names
(https://cloud.google.com/storage/docs/retry-strategy: 408, 429, 500, 502, 503, 504, connection
errors and timeouts; the client library's own predicate), with truncated exponential backoff and
full jitter. The library's default gives up only after 120 s; here an endpoint that does not
answer fails after about :data:`GCS_RETRY_TIMEOUT_S` with :class:`StorageUnavailableError`,
which names the bucket. Retrying a write is safe only when it is idempotent: the registry makes
every write create-only or compare-and-swap and recognizes its own earlier success (``gcs.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

# Per request: (connect, read) seconds. A read timeout bounds the wait for the next bytes, not a
# whole transfer; GCS answers within a second when healthy.
GCS_TIMEOUT_S = (5.0, 10.0)
# Retrying stops once this much time has passed since the first attempt.
GCS_RETRY_TIMEOUT_S = 15.0
# Backoff: the n-th wait is uniform in [0, min(initial * 2**n, maximum)] seconds.
GCS_RETRY_INITIAL_S = 0.5
GCS_RETRY_MAXIMUM_S = 4.0


class StorageUnavailableError(ConnectionError):
    """A GCS endpoint did not answer, or kept answering with a transient error, until retrying gave up."""


def gcs_retry() -> Any:
    """The retry policy of every GCS request (a ``google.api_core.retry.Retry``); see the module docstring."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(
        initial=GCS_RETRY_INITIAL_S, maximum=GCS_RETRY_MAXIMUM_S, multiplier=2.0
    ).with_timeout(GCS_RETRY_TIMEOUT_S)


def gcs_endpoint() -> str:
    """The GCS endpoint requests go to: ``STORAGE_EMULATOR_HOST`` when set, else Google's."""
    return os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the endpoint did not answer (in time)" once retries are spent."""
    import requests
    from google.api_core.exceptions import RetryError
    from google.auth.exceptions import TransportError

    return (RetryError, TransportError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)


@contextlib.contextmanager
def unavailable_as_error(bucket: str) -> Iterator[None]:
    """Turns a transport failure inside the block into :class:`StorageUnavailableError` naming ``bucket``.

    Raises:
        StorageUnavailableError: ``"GCS bucket 'b' at <endpoint> did not answer: gave up after
            16 s of retries with backoff (<last error>)"``; the original error is its ``__cause__``.
    """
    start = time.monotonic()
    try:
        yield
    except transport_errors() as err:
        cause = getattr(err, "cause", None) or err
        detail = " ".join(str(cause).split())[:300]
        raise StorageUnavailableError(
            f"GCS bucket {bucket!r} at {gcs_endpoint()} did not answer: gave up after "
            f"{time.monotonic() - start:.0f} s of retries with backoff ({type(cause).__name__}: {detail})"
        ) from err


def is_gcs(uri: str) -> bool:
    """True for ``gs://`` URIs."""
    return uri.startswith("gs://")


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """Splits ``gs://bucket/some/path`` into ``("bucket", "some/path")``.

    Raises:
        ValueError: not a ``gs://`` URI or no bucket name.
    """
    if not is_gcs(uri):
        raise ValueError(f"{uri!r} is not a gs:// URI")
    bucket, _, path = uri[len("gs://"):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} has no bucket name")
    return bucket, path


def gcs_client() -> Any:
    """A ``google.cloud.storage.Client``; anonymous when ``STORAGE_EMULATOR_HOST`` is set."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or "emulator", credentials=AnonymousCredentials())
    return storage.Client()


def strip_file_scheme(uri: str) -> str:
    """``file:///a/b`` -> ``/a/b``; other strings unchanged."""
    return uri[len("file://"):] if uri.startswith("file://") else uri


def list_files(uri: str) -> list[str]:
    """Every file under folder ``uri`` (recursive), as URIs/paths in sorted order.

    Raises:
        FileNotFoundError: a local folder that does not exist, or a ``gs://`` prefix with no object.
        StorageUnavailableError: the GCS endpoint did not answer (see the module docstring).
    """
    if is_gcs(uri):
        bucket, prefix = split_gcs_uri(uri.rstrip("/") + "/")
        with unavailable_as_error(bucket):
            blobs = gcs_client().list_blobs(bucket, prefix=prefix, retry=gcs_retry(), timeout=GCS_TIMEOUT_S)
            names = sorted(b.name for b in blobs if not b.name.endswith("/"))
        if not names:
            raise FileNotFoundError(f"no object under {uri!r}")
        return [f"gs://{bucket}/{name}" for name in names]
    root = strip_file_scheme(uri)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data folder {root!r} does not exist or is not a folder")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


def read_bytes(uri: str) -> bytes:
    """The content of file ``uri``.

    Raises:
        FileNotFoundError: no such file or object.
        StorageUnavailableError: the GCS endpoint did not answer (see the module docstring).
    """
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        bucket, name = split_gcs_uri(uri)
        try:
            with unavailable_as_error(bucket):
                return gcs_client().bucket(bucket).blob(name).download_as_bytes(retry=gcs_retry(), timeout=GCS_TIMEOUT_S)
        except NotFound:
            raise FileNotFoundError(f"no object {uri!r}") from None
    with open(strip_file_scheme(uri), "rb") as f:
        return f.read()


def fetch_to_local(uri: str, local_dir: str) -> str:
    """Returns a local path holding file ``uri``: the path itself when local, else a download.

    Raises:
        FileNotFoundError: no such file or object.
    """
    if not is_gcs(uri):
        path = strip_file_scheme(uri)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no file {path!r}")
        return path
    os.makedirs(local_dir, exist_ok=True)
    dest = os.path.join(local_dir, os.path.basename(split_gcs_uri(uri)[1]))
    with open(dest, "wb") as f:
        f.write(read_bytes(uri))
    return dest
