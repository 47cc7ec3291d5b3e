"""The preprocess Beam pipeline: inspect, de-duplicate and split the images, write the examples,
and analyze the labels with tf.Transform, writing under output roots that are local folders or
URIs (``gs://...``).

Everything is written through Beam's file systems (``apache_beam.io.filesystems``) and
TensorFlow's (``tf.io.gfile``, which tf.Transform uses), so the same pipeline runs on the
in-process runner writing the artifacts' local ``.path`` and on a remote runner (Dataflow, Flink,
Spark) whose workers write the artifacts' ``.uri`` on object storage (``components.beam_options``).

The pipeline streams: the image bytes flow through one fused stage (read -> normalize -> write)
and never cross a shuffle, so memory does not grow with the number of images; only one small
record per image (path, label, hash, size) is grouped, to find duplicates and conflicting labels.
The files are therefore read twice (inspect, then write).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import typing
from typing import Any, Iterable, Iterator

from components import image_files, sources, storage
from components.artifacts import EXAMPLES_SUFFIX, IMAGE_KEY, LABEL_KEY, MANIFEST_FILE, SPLITS, raw_feature_spec

if typing.TYPE_CHECKING:
    from components.preprocess import PreprocessSettings

# Files per Beam element: Beam costs tens of microseconds per element and stage, more than
# inspecting a small image; 64 files make it negligible and still spread work over many workers.
CHUNK_SIZE = 64


def assign_split(content_sha256: str, eval_fraction: float, test_fraction: float, salt: str = "") -> str:
    """Deterministic split of one image from the SHA-256 (hex) of its file content.

    The hash maps to a number u uniform in [0, 1): ``test`` when u < test_fraction, ``eval`` when
    u < test_fraction + eval_fraction, else ``train``. Because it depends only on the content
    (and the salt), an image keeps its split across reruns and when other images are added, and
    identical copies of an image always land in the same split (no train/test leakage). The
    draw is independent per image, so every class is split in the given proportions in
    expectation (stratified; exact counts vary by a few images in small classes).
    """
    digest = hashlib.sha256((salt + content_sha256).encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + eval_fraction:
        return "eval"
    return "train"



def _read_candidate(candidate: sources.Candidate) -> tuple[str, str, bytes | None, str | None]:
    try:
        return candidate.uri, candidate.label, storage.read_bytes(candidate.uri), None
    except FileNotFoundError:
        return candidate.uri, candidate.label, None, "file not found"
    except OSError as e:
        return candidate.uri, candidate.label, None, f"unreadable: {e}"


def _read_tfrecord(item: tuple[str, bytes]) -> tuple[str, str, bytes | None, str | None]:
    filename, record = item
    data, label, reason = sources.parse_tfrecord_example(record)
    # A record has no name: it is named by its file and the hash of its content.
    uri = f"{filename}[sha256={hashlib.sha256(data if data is not None else record).hexdigest()[:16]}]"
    return uri, label or "", data, reason


def _inspect(item: tuple[str, str, bytes | None, str | None], settings: PreprocessSettings) -> dict[str, Any]:
    uri, label, data, reason = item
    if data is None:
        return {"uri": uri, "label": label, "status": "skipped", "reason": reason}
    info = image_files.inspect_image(data, settings.max_pixels)
    if not info.pop("ok"):
        return {"uri": uri, "label": label, "status": "skipped", "reason": info["reason"]}
    sha = hashlib.sha256(data).hexdigest()
    split = assign_split(sha, settings.eval_fraction, settings.test_fraction, settings.split_salt)
    return {"uri": uri, "label": label, "status": "ok", "sha256": sha, "split": split, **info}


def _resolve_duplicates(group: tuple[str, Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Copies of one image: counted as duplicates, or all excluded when their labels disagree."""
    _, rows = group
    rows = sorted(rows, key=lambda r: r["uri"])
    if rows[0]["status"] != "ok":
        return rows
    labels = sorted({r["label"] for r in rows})
    for i, r in enumerate(rows):
        if len(labels) > 1:
            r.update(status="conflict", reason=f"the same image is labelled {', '.join(map(repr, labels))}")
        r["duplicate"] = i > 0
    return rows


def _item(x: "sources.Candidate | tuple[str, str, bytes | None, str | None]") -> tuple[str, str, bytes | None, str | None]:
    """``(uri, label, bytes or None, reason or None)`` for a candidate file (read now) or a parsed record."""
    return _read_candidate(x) if isinstance(x, sources.Candidate) else x


def _chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _action(row: dict[str, Any]) -> str:
    """What stage 2 does differently for this file: ``drop`` it, ``convert`` it, or nothing ("")."""
    return "drop" if row["status"] != "ok" else "convert" if row.get("convert") else ""


def _inspect_chunk(chunk: list[Any], settings: PreprocessSettings) -> Iterator[tuple[str, tuple[str, str]]]:
    """Stage 1 for a chunk of files: each one's manifest line (JSON) and ``_action``, keyed by
    its content hash. Lines travel as text: the shuffle then moves one string per file, and a
    file without copies (the common case) is never parsed again."""
    for x in chunk:
        r = _inspect(_item(x), settings)
        if r["status"] == "ok":
            r["duplicate"] = False
        yield r.get("sha256") or "uri:" + r["uri"], (json.dumps(r, sort_keys=True), _action(r))


def _resolve_chunk(group: tuple[str, Iterable[tuple[str, str]]]) -> Iterator[Any]:
    """The copies of one image (``_resolve_duplicates``) as manifest lines (JSON), and under the
    tag ``actions`` what stage 2 must do differently for a file: ``(uri, "drop")`` or ``(uri,
    "convert")``. Files written as they are (the common case) get no action, so that side input
    stays small."""
    import apache_beam as beam

    key, copies = group
    copies = list(copies)
    if len(copies) == 1:
        line, action = copies[0]
        yield line
        if action:
            yield beam.pvalue.TaggedOutput("actions", (json.loads(line)["uri"], action))
        return
    for row in _resolve_duplicates((key, [json.loads(line) for line, _ in copies])):
        yield json.dumps(row, sort_keys=True)
        if action := _action(row):
            yield beam.pvalue.TaggedOutput("actions", (row["uri"], action))


def _examples_chunk(chunk: list[Any], actions: dict[str, str], settings: PreprocessSettings) -> Iterator[Any]:
    """Stage 2 for a chunk of files: each usable image as a serialized ``tf.train.Example``,
    tagged with its split, and its class name under the tag ``labels`` as TFT's analysis reads it
    (a raw-data dict with an empty image: the vocabulary needs labels only)."""
    import apache_beam as beam

    for x in chunk:
        uri, label, data, _ = _item(x)
        action = actions.get(uri)
        if data is None or action == "drop":
            continue
        sha = hashlib.sha256(data).hexdigest()
        split = assign_split(sha, settings.eval_fraction, settings.test_fraction, settings.split_salt)
        yield beam.pvalue.TaggedOutput(split, _serialize(image_files.normalize_image(data) if action == "convert" else data, label))
        yield beam.pvalue.TaggedOutput("labels", {IMAGE_KEY: b"", LABEL_KEY: label.encode()})


def _serialize(data: bytes, label: str) -> bytes:
    from tensorflow.core.example import example_pb2, feature_pb2

    feature = {
        IMAGE_KEY: feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[data])),
        LABEL_KEY: feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[label.encode()])),
    }
    return example_pb2.Example(features=feature_pb2.Features(feature=feature)).SerializeToString()



# ---------------------------------------------------------------------------------------------
# The pipeline, and its outputs wherever they are


def run_pipeline(
    inventory: sources.Inventory,
    examples_root: str,
    transform_root: str,
    temp_dir: str,
    preprocessing_fn: Any,
    settings: PreprocessSettings,
    beam_args: tuple[str, ...],
    runner: Any = None,
) -> None:
    """Runs the Beam pipeline: manifest and split examples under ``examples_root``, the transform
    graph (with its raw schema) in ``transform_root``.

    Args:
        inventory: The input files or TFRecords (``components.sources.discover``); its
            ``skipped`` entries are written to the manifest too.
        examples_root, transform_root: Local folders or URIs (``gs://...``); a remote runner's
            workers write them directly.
        temp_dir: tf.Transform's scratch space; must be reachable by every worker (a URI under
            ``--temp_location`` for a remote runner).
        preprocessing_fn: The tf.Transform function (``components.preprocess.make_preprocessing_fn``).
        settings: ``PreprocessSettings`` (split fractions, salt, ``max_pixels``); pickled to the workers.
        beam_args: Complete Beam options (runner, temp location, worker image, ...).
        runner: A runner object, or None for the one ``beam_args`` name.
    """
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(raw_feature_spec())
    # The files listing already set aside (outside a class folder, not an image, a bad CSV row).
    listed_skipped = [json.dumps({"label": None, "reason": s["reason"], "status": "skipped", "uri": s["uri"]}, sort_keys=True)
                      for s in inventory.skipped]

    def chunks(p: Any, stage: str) -> Any:
        """The input as lists of up to ``CHUNK_SIZE`` files (or parsed records): one Beam element
        per chunk keeps Beam's per-element cost off the per-image path."""
        if inventory.kind == "tfrecord":
            return (
                p
                | f"{stage}ListTFRecords" >> beam.Create(inventory.tfrecord_files)
                | f"{stage}ReadTFRecords" >> beam.io.ReadAllFromTFRecord(with_filename=True)
                | f"{stage}Parse" >> beam.Map(_read_tfrecord)
                | f"{stage}Chunk" >> beam.BatchElements(min_batch_size=CHUNK_SIZE, max_batch_size=CHUNK_SIZE)
            )
        return p | f"{stage}Chunks" >> beam.Create(_chunked(inventory.candidates, CHUNK_SIZE))

    with beam.Pipeline(runner=runner, options=PipelineOptions(list(beam_args))) as p, tft_beam.Context(temp_dir=temp_dir):
        # Stage 1: read and inspect every file; only small records leave this stage.
        rows = (
            chunks(p, "Inspect")
            | "Inspect" >> beam.FlatMap(_inspect_chunk, settings)
            | "GroupCopies" >> beam.GroupByKey()
            | "ResolveDuplicates" >> beam.FlatMap(_resolve_chunk).with_outputs("actions", main="manifest")
        )
        _ = (
            (rows.manifest, p | "ListedSkipped" >> beam.Create(listed_skipped))
            | "AllRows" >> beam.Flatten()
            | "WriteManifest" >> beam.io.WriteToText(posixpath.join(examples_root, MANIFEST_FILE), shard_name_template="")
        )
        # Stage 2: read again and stream the usable images into their split's files.
        examples = chunks(p, "Write") | "Examples" >> beam.FlatMap(
            _examples_chunk, beam.pvalue.AsDict(rows.actions), settings).with_outputs(*SPLITS, "labels")
        for split in SPLITS:
            _ = examples[split] | f"Write{split}" >> beam.io.WriteToTFRecord(
                posixpath.join(examples_root, split, "part"), file_name_suffix=EXAMPLES_SUFFIX)
        # The vocabulary needs labels only: the analysis never decodes an image.
        transform_fn = (examples["labels"], metadata) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | "WriteTransform" >> tft_beam.WriteTransformFn(transform_root)
    # WriteTransformFn does not record the raw schema; TFTransformOutput.raw_feature_spec()
    # (what users and the training input pipeline parse examples with) reads it from here.
    metadata_io.write_metadata(metadata, posixpath.join(transform_root, tft.TFTransformOutput.RAW_METADATA_DIR))
    if "://" not in examples_root:
        import os

        # A split with no example still gets its (empty) folder; object storage has no folders.
        for split in SPLITS:
            os.makedirs(os.path.join(examples_root, split), exist_ok=True)


def read_manifest(examples_root: str) -> Iterator[dict[str, Any]]:
    """The manifest rows (one dict per input file) of an examples folder or URI."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(posixpath.join(examples_root, MANIFEST_FILE), compression_type="uncompressed") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def remove_tree(root: str) -> None:
    """Removes a local folder or everything under a URI prefix; nothing there is no error."""
    if "://" not in root:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        return
    from apache_beam.io.filesystems import FileSystems

    prefix = root.rstrip("/") + "/"
    found = [m.path for r in FileSystems.match([prefix + "**"]) for m in r.metadata_list]
    if found:
        FileSystems.delete(found)
