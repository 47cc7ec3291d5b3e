"""Reading data and weights from a local path or a ``gs://bucket/path`` URI.

``gs://`` goes through the official ``google-cloud-storage`` client, which honours
``STORAGE_EMULATOR_HOST`` (``tf.io.gfile`` ignores it: measured with TF 2.21, it always
reaches the real Google endpoint), so the same code runs against
Google Cloud Storage and against a local emulator in tests.
"""

from __future__ import annotations

import os
from typing import Any


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
    """
    if is_gcs(uri):
        bucket, prefix = split_gcs_uri(uri.rstrip("/") + "/")
        names = sorted(
            b.name for b in gcs_client().list_blobs(bucket, prefix=prefix) if not b.name.endswith("/")
        )
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
    """
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        bucket, name = split_gcs_uri(uri)
        try:
            return gcs_client().bucket(bucket).blob(name).download_as_bytes()
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
