"""Where the images come from: class folders, a CSV manifest, or TFRecord files.

``data_uri`` (a local path or ``gs://`` URI) is one of:

* a folder with one sub-folder per class (``<data_uri>/<class>/**/<image>``), the layout Keras'
  ``image_dataset_from_directory`` reads;
* a ``.csv`` file with rows ``path,label`` (an optional header row ``path,label``); relative paths
  are relative to the CSV's folder, absolute paths and ``gs://`` URIs are taken as they are;
* a ``.tfrecord`` / ``.tfrecord.gz`` file, or a folder holding only such files, of
  ``tf.train.Example`` with ``image/encoded`` (bytes) and ``image/class/label`` (bytes/string).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import posixpath
from typing import Any

from components import storage
from components.image_files import IMAGE_EXTENSIONS, is_junk
from components.step_errors import one_line

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecord.gz", ".tfrecords", ".tfrecords.gz")
TFRECORD_IMAGE_KEY = "image/encoded"
TFRECORD_LABEL_KEY = "image/class/label"


class DamagedTFRecordError(ValueError):
    """A TFRecord file that cannot be read to its end (truncated, corrupt, not TFRecord at all)."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A file that should be an image of class ``label``."""

    uri: str
    label: str


@dataclasses.dataclass
class Inventory:
    """What ``discover`` found.

    Attributes:
        kind: ``folders``, ``csv`` or ``tfrecord``.
        candidates: Image files to read (``folders`` and ``csv``).
        tfrecord_files: TFRecord files to read (``tfrecord``).
        skipped: ``{"uri", "reason"}`` of entries that are not taken as data (they count as bad
            input): files outside a class folder, non-image files, bad CSV rows.
        declared_classes: Every class the input names (class folders, even empty ones, or
            CSV labels), so a class left with no usable image can be named.
    """

    kind: str
    candidates: list[Candidate] = dataclasses.field(default_factory=list)
    tfrecord_files: list[str] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    declared_classes: set[str] = dataclasses.field(default_factory=set)


def _is_tfrecord(name: str) -> bool:
    return name.lower().endswith(TFRECORD_SUFFIXES)


def discover(data_uri: str) -> Inventory:
    """Lists the input at ``data_uri`` (see the module docstring for the three layouts).

    Junk that tools and operating systems leave (hidden files, ``Thumbs.db``, ``__MACOSX``, ...)
    is left out silently: it is never data and never a class.

    Raises:
        FileNotFoundError: ``data_uri`` does not exist or holds no file.
        DataError-like ValueError: a CSV without a ``path,label`` structure.
    """
    uri = storage.strip_file_scheme(data_uri).rstrip("/")
    if uri.lower().endswith(".csv"):
        return _discover_csv(uri)
    if _is_tfrecord(uri):
        return Inventory(kind="tfrecord", tfrecord_files=[uri])
    if not storage.is_gcs(uri) and os.path.isfile(uri):
        raise ValueError(
            f"data_uri {data_uri!r} is a file, but not a .csv manifest or a .tfrecord[.gz] file "
            "(expected a folder of class folders, a CSV manifest or TFRecord files)"
        )
    files = storage.list_files(uri)
    rels = [(f, f[len(uri) + 1:].split("/")) for f in files]
    rels = [(f, parts) for f, parts in rels if not any(is_junk(p) for p in parts)]
    if not rels:
        raise FileNotFoundError(f"no file under {data_uri!r} (only hidden or system files)")
    if all(_is_tfrecord(f) for f, _ in rels):
        return Inventory(kind="tfrecord", tfrecord_files=[f for f, _ in rels])
    inv = Inventory(kind="folders")
    for f, parts in rels:
        if len(parts) < 2:
            inv.skipped.append({"uri": f, "reason": "not inside a class folder"})
            continue
        inv.declared_classes.add(parts[0])
        if not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            inv.skipped.append({"uri": f, "reason": f"not an image file (extension {posixpath.splitext(parts[-1])[1] or 'none'})"})
            continue
        inv.candidates.append(Candidate(uri=f, label=parts[0]))
    if storage.is_gcs(uri):
        return inv
    # Empty class folders are classes too (list_files only sees files).
    for name in os.listdir(uri):
        if os.path.isdir(os.path.join(uri, name)) and not is_junk(name):
            inv.declared_classes.add(name)
    return inv


def _discover_csv(csv_uri: str) -> Inventory:
    text = storage.read_bytes(csv_uri).decode("utf-8-sig")
    base = posixpath.dirname(csv_uri)
    inv = Inventory(kind="csv")
    rows = list(csv.reader(io.StringIO(text)))
    if rows and [c.strip().lower() for c in rows[0]] == ["path", "label"]:
        rows, first_line = rows[1:], 2
    else:
        first_line = 1
    for line, row in enumerate(rows, start=first_line):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line is not a row
        where = f"{csv_uri}:{line}"
        if all(not c.strip() for c in row):
            inv.skipped.append({"uri": where, "reason": f"empty row {','.join(row)!r}: expected 'path,label'"})
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            inv.skipped.append({"uri": where, "reason": f"expected 'path,label', got {','.join(row)!r}"})
            continue
        path, label = row[0].strip(), row[1].strip()
        inv.declared_classes.add(label)
        if not (path.startswith("/") or "://" in path):
            path = posixpath.join(base, path)
        inv.candidates.append(Candidate(uri=storage.strip_file_scheme(path), label=label))
    if not inv.candidates and not inv.skipped:
        raise ValueError(f"CSV manifest {csv_uri!r} has no row (expected 'path,label' rows)")
    return inv


def parse_tfrecord_example(serialized: bytes) -> tuple[bytes | None, str | None, str | None]:
    """``(image bytes, label, None)`` of a serialized ``tf.train.Example``, or ``(None, None, reason)``."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    try:
        example.ParseFromString(serialized)
    except Exception as e:  # protobuf's DecodeError: the record is not an Example
        return None, None, f"not a tf.train.Example: {e}"
    feature = example.features.feature
    if TFRECORD_IMAGE_KEY not in feature or not feature[TFRECORD_IMAGE_KEY].bytes_list.value:
        return None, None, f"no '{TFRECORD_IMAGE_KEY}' bytes feature"
    if TFRECORD_LABEL_KEY not in feature or not feature[TFRECORD_LABEL_KEY].bytes_list.value:
        return None, None, f"no '{TFRECORD_LABEL_KEY}' bytes feature"
    label = feature[TFRECORD_LABEL_KEY].bytes_list.value[0].decode("utf-8", errors="replace").strip()
    if not label:
        return None, None, f"empty '{TFRECORD_LABEL_KEY}'"
    return feature[TFRECORD_IMAGE_KEY].bytes_list.value[0], label, None


def tfrecord_labels(files: list[str]) -> set[str]:
    """The distinct labels of TFRecord ``files`` (one streaming pass; records without a label,
    reported by the preprocess pipeline, are left out).

    Raises:
        DamagedTFRecordError: a file is truncated or corrupt (names the file and the record).
    """
    import tensorflow as tf

    labels: set[str] = set()
    for f in files:
        compression = "GZIP" if f.lower().endswith(".gz") else ""
        read = 0
        try:
            for raw in tf.data.TFRecordDataset(f, compression_type=compression).as_numpy_iterator():
                read += 1
                label = parse_tfrecord_example(raw)[1]
                if label:
                    labels.add(label)
        except tf.errors.DataLossError as e:
            raise DamagedTFRecordError(
                f"TFRecord file {f!r} is damaged at record {read + 1} ({read} whole record(s) before it): "
                f"{one_line(e.message)}; expected whole TFRecord records{' in a gzip file' if compression else ''}"
            ) from None
    return labels
