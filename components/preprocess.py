"""Preprocess: image files in class folders -> split examples, tf.Transform graph, statistics.

The step follows TFX Transform's "analyze, don't materialize" design: tf.Transform's Beam
pipeline *analyzes* the data (the label vocabulary) and writes the transform graph; the split
examples keep the encoded image bytes. The graph (decode, resize, pixel scaling for the base
model, label -> index) is applied by the training input pipeline and inside the exported serving
signature, so training and serving run the very same ops (no training/serving skew) and no
float pixels are ever materialized (they are about 70x the JPEG bytes, see TRAPS.md).

Outputs:
  * examples folder: ``train/``, ``eval/``, ``test/``, each holding TFRecord files of
    ``tf.train.Example`` with ``image`` (bytes, the encoded file) and ``label`` (bytes, class name).
  * transform folder: a ``tft.TFTransformOutput`` (``transform_fn/``, ``transformed_metadata/``).
    Transformed features: ``image`` float32 ``[batch, size, size, 3]`` scaled for the base model,
    ``label`` int64 ``[batch]`` index into the vocabulary named ``label``.
  * ``manifest.jsonl`` in the examples folder: one line per file (uri, label, split, sha256).
  * statistics: ``statistics.json`` (schema in ``summarize``) and a Markdown report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import posixpath
import shutil
import tempfile
from typing import Any, Iterable

from components import base_models, storage

SPLITS = ("train", "eval", "test")
IMAGE_KEY = "image"
LABEL_KEY = "label"
LABEL_VOCABULARY = "label"
# One JSON line per input file (uri, label, split, sha256, size or the reason it was skipped).
MANIFEST = "manifest.jsonl"

# Formats tf.io.decode_image reads (and so the serving signature accepts).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
_PIL_FORMATS = {"PNG", "JPEG", "GIF", "BMP", "MPO"}
# Files that operating systems and tools leave in folders: never data, never a class.
_JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx", "@eadir", "lost+found", "$recycle.bin"}


@dataclasses.dataclass(frozen=True)
class PreprocessSettings:
    """Settings of the preprocess step, validated on construction.

    Attributes:
        image_size: Height and width in pixels the images are resized to (square; bilinear with
            antialiasing). At least the base model's minimum input size.
        base_model: Key of ``components.base_models.BASE_MODELS``; selects the pixel scaling.
        eval_fraction: Share of each class assigned to the eval split, in [0, 1).
        test_fraction: Share of each class assigned to the test split, in [0, 1).
            ``eval_fraction + test_fraction`` must be below 1.
        split_salt: String mixed into the split hash; change it to draw a different split.
        max_pixels: Images whose header declares more pixels (width x height) are rejected
            before decoding (decompression bombs). Default 50 megapixels.
        beam_pipeline_args: Apache Beam options, e.g. ``("--runner=DataflowRunner", ...)``;
            empty means DirectRunner in this process.
    """

    image_size: int = 224
    base_model: str = "mobilenet_v2"
    eval_fraction: float = 0.15
    test_fraction: float = 0.15
    split_salt: str = ""
    max_pixels: int = 50_000_000
    beam_pipeline_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        base_models.check_image_size(self.base_model, self.image_size)
        for name in ("eval_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.eval_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"eval_fraction + test_fraction must be below 1 (nothing left to train on), got "
                f"{self.eval_fraction} + {self.test_fraction}"
            )
        if self.max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")


class DataError(ValueError):
    """The input data cannot make a training set; the message names the class, file or count."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A file found under ``data_uri`` that may be an image of class ``label``."""

    uri: str
    label: str


def is_junk(name: str) -> bool:
    """True for names that tools and operating systems leave in folders (hidden files included)."""
    lowered = name.lower()
    return name.startswith(".") or name.startswith("~$") or lowered in _JUNK_NAMES


def discover(data_uri: str) -> tuple[list[Candidate], list[dict[str, str]]]:
    """Lists the candidate images under ``data_uri`` (``<data_uri>/<class name>/.../<file>``).

    Returns:
        ``(candidates, skipped)``; ``skipped`` holds ``{"uri", "reason"}`` for files that are not
        taken as data (outside a class folder, or not an image file extension). Junk files and
        folders (hidden, ``Thumbs.db``, ``__MACOSX``, ...) are left out silently: they are never
        data, and listing them would drown real problems.

    Raises:
        FileNotFoundError: ``data_uri`` does not exist or is empty.
    """
    root = storage.strip_file_scheme(data_uri).rstrip("/")
    candidates, skipped = [], []
    for uri in storage.list_files(root):
        rel = uri[len(root) + 1:]
        parts = rel.split("/")
        if any(is_junk(p) for p in parts):
            continue
        if len(parts) < 2:
            skipped.append({"uri": uri, "reason": "not inside a class folder"})
            continue
        if not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            skipped.append(
                {"uri": uri, "reason": f"not an image file (extensions read: {', '.join(IMAGE_EXTENSIONS)})"}
            )
            continue
        candidates.append(Candidate(uri=uri, label=parts[0]))
    return candidates, skipped


def assign_split(content_sha256: str, eval_fraction: float, test_fraction: float, salt: str = "") -> str:
    """Deterministic split of one image from the SHA-256 (hex) of its file content.

    The hash maps to a number u uniform in [0, 1): ``test`` when u < test_fraction, ``eval`` when
    u < test_fraction + eval_fraction, else ``train``. Because it depends only on the content
    (and the salt), an image keeps its split across reruns and when other images are added, and
    identical copies of an image always land in the same split (no train/test leakage). Applied
    within every class, each class is split in the same proportions (in expectation).
    """
    digest = hashlib.sha256((salt + content_sha256).encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + eval_fraction:
        return "eval"
    return "train"


def inspect_image(data: bytes, max_pixels: int) -> dict[str, Any]:
    """Reads an image's header and checks it decodes, without decoding it twice.

    Returns:
        ``{"ok": True, "width", "height", "mode", "format"}`` or ``{"ok": False, "reason"}``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt, mode = img.format, img.mode
            if width * height > max_pixels:
                return {"ok": False, "reason": f"{width}x{height} pixels exceeds max_pixels {max_pixels}"}
            if fmt not in _PIL_FORMATS:
                return {"ok": False, "reason": f"image format {fmt} is not one of PNG, JPEG, GIF, BMP"}
            img.verify()
    except UnidentifiedImageError:
        return {"ok": False, "reason": "not a readable image (unidentified format)"}
    except (OSError, SyntaxError, ValueError) as e:  # what PIL raises for truncated/corrupt data
        return {"ok": False, "reason": f"corrupt image: {e}"}
    return {"ok": True, "width": width, "height": height, "mode": mode, "format": fmt}


def decode_images(encoded: Any, image_size: int) -> Any:
    """Decodes and resizes a batch of encoded images (the pixels every model here sees).

    Args:
        encoded: tf.string ``[batch]`` of PNG, JPEG, GIF (first frame) or BMP file contents.
        image_size: Output height and width in pixels.

    Returns:
        float32 ``[batch, image_size, image_size, 3]``, RGB in [0, 255] (grayscale replicated to
        three channels, alpha dropped; bilinear resize with antialiasing).
    """
    import tensorflow as tf

    def decode(one: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(one, channels=3, expand_animations=False)
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.clip_by_value(image, 0.0, 255.0)

    return tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))


def make_preprocessing_fn(image_size: int, scaling: str):
    """Builds the tf.Transform ``preprocessing_fn``.

    Inputs: ``image`` tf.string ``[batch]`` (encoded PNG/JPEG/GIF/BMP), ``label`` tf.string
    ``[batch]``. Outputs: ``image`` float32 ``[batch, image_size, image_size, 3]`` (grayscale
    and RGBA converted to RGB, resized with antialiasing, scaled by ``scaling``) and ``label``
    int64 ``[batch]``: the index in the vocabulary ``label`` (most frequent class first, ties by
    name; -1 for a class absent from it).
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        images = decode_images(inputs[IMAGE_KEY], image_size)
        outputs = {IMAGE_KEY: base_models.scale_pixels(images, scaling)}
        outputs[LABEL_KEY] = tft.compute_and_apply_vocabulary(
            inputs[LABEL_KEY], vocab_filename=LABEL_VOCABULARY, default_value=-1
        )
        return outputs

    return preprocessing_fn


def raw_feature_spec() -> dict[str, Any]:
    """The feature spec of the split examples (and the transform graph's raw input)."""
    import tensorflow as tf

    return {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.string),
    }


def _load(candidate: Candidate, settings: PreprocessSettings) -> dict[str, Any]:
    try:
        data = storage.read_bytes(candidate.uri)
    except OSError as e:
        return {"uri": candidate.uri, "label": candidate.label, "ok": False, "reason": f"unreadable: {e}"}
    info = inspect_image(data, settings.max_pixels)
    record = {"uri": candidate.uri, "label": candidate.label, **info}
    if info["ok"]:
        sha = hashlib.sha256(data).hexdigest()
        record.update(
            sha256=sha,
            split=assign_split(sha, settings.eval_fraction, settings.test_fraction, settings.split_salt),
            data=data,
        )
    return record


def _to_example(record: dict[str, Any]) -> bytes:
    import tensorflow as tf

    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[record["data"]])),
        LABEL_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[record["label"].encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def summarize(records: Iterable[dict[str, Any]], skipped: list[dict[str, str]]) -> dict[str, Any]:
    """Statistics of one preprocess run (what ``statistics.json`` holds).

    Returns:
        ``{"num_images", "classes" (sorted names), "class_counts" {split: {class: n}},
        "image_sizes" {"WxH": n}, "image_modes" {mode: n}, "skipped" [{"uri", "reason"}],
        "duplicates" (images whose content equals an earlier one), "fingerprint"}``.
        ``fingerprint`` is the SHA-256 of the sorted ``(class, content SHA-256)`` pairs: the
        same images with the same labels give the same fingerprint, wherever they are stored.
    """
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    sizes: dict[str, int] = {}
    modes: dict[str, int] = {}
    skipped = list(skipped)
    pairs, seen, duplicates = [], set(), 0
    for r in sorted(records, key=lambda r: r["uri"]):
        if not r["ok"]:
            skipped.append({"uri": r["uri"], "reason": r["reason"]})
            continue
        counts[r["split"]][r["label"]] = counts[r["split"]].get(r["label"], 0) + 1
        size = f"{r['width']}x{r['height']}"
        sizes[size] = sizes.get(size, 0) + 1
        modes[r["mode"]] = modes.get(r["mode"], 0) + 1
        duplicates += r["sha256"] in seen
        seen.add(r["sha256"])
        pairs.append(f"{r['label']}\t{r['sha256']}")
    classes = sorted({c for split in counts.values() for c in split})
    return {
        "num_images": len(pairs),
        "classes": classes,
        "class_counts": {s: dict(sorted(c.items())) for s, c in counts.items()},
        "image_sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
        "image_modes": dict(sorted(modes.items())),
        "skipped": sorted(skipped, key=lambda s: s["uri"]),
        "duplicates": duplicates,
        "fingerprint": hashlib.sha256("\n".join(sorted(pairs)).encode()).hexdigest(),
    }


def check_statistics(stats: dict[str, Any]) -> None:
    """Fails when the data cannot make a classifier.

    Raises:
        DataError: fewer than two classes, or a class with no image in the train split; the
            message names the classes and their counts.
    """
    classes = stats["classes"]
    if len(classes) < 2:
        raise DataError(
            f"found {len(classes)} class(es) with usable images ({', '.join(classes) or 'none'}); "
            "need at least two class folders"
        )
    train = stats["class_counts"]["train"]
    empty = [c for c in classes if train.get(c, 0) == 0]
    if empty:
        totals = {c: sum(stats["class_counts"][s].get(c, 0) for s in SPLITS) for c in empty}
        raise DataError(
            "class(es) with no image in the train split: "
            + ", ".join(f"{c!r} ({n} usable image(s) in all)" for c, n in totals.items())
        )


def statistics_markdown(stats: dict[str, Any]) -> str:
    """A Markdown report of ``stats`` for the KFP UI."""
    lines = [
        "# Preprocessing statistics",
        "",
        f"{stats['num_images']} images in {len(stats['classes'])} classes; "
        f"{len(stats['skipped'])} files skipped; {stats['duplicates']} exact duplicates.",
        "",
        "| class | " + " | ".join(SPLITS) + " |",
        "|---|" + "---:|" * len(SPLITS),
    ]
    for c in stats["classes"]:
        lines.append(f"| {c} | " + " | ".join(str(stats["class_counts"][s].get(c, 0)) for s in SPLITS) + " |")
    if stats["skipped"]:
        lines += ["", "## Skipped files", "", "| file | reason |", "|---|---|"]
        lines += [f"| {s['uri']} | {s['reason']} |" for s in stats["skipped"]]
    lines += ["", f"Dataset fingerprint: `{stats['fingerprint']}`", ""]
    return "\n".join(lines)


def _default_runner(beam_pipeline_args: tuple[str, ...]) -> Any:
    """The runner when the arguments name none: Beam's in-process FnApiRunner.

    Why not ``DirectRunner``: since Beam 2.6x it first tries the Prism runner, which downloads a
    binary at run time (impossible on an air-gapped node), leaves its gRPC server behind when it
    falls back, and the step process then crashed at exit (signal 11) after finishing its work.
    """
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_pipeline_args):
        return None
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    return fn_runner.FnApiRunner()


def run_preprocess(
    data_uri: str,
    examples_dir: str,
    transform_dir: str,
    settings: PreprocessSettings,
) -> dict[str, Any]:
    """Runs the preprocess step (a Beam pipeline with tf.Transform analysis) in a child process.

    Why a child process: after a tf.Transform analysis has run, the Python interpreter crashes
    with signal 11 while garbage-collecting at exit (tensorflow-transform 1.21 / TF 2.21, seen
    with every runner; TRAPS.md). The child does the work, reports its result or exception
    through a pipe, and leaves with ``os._exit`` so the crash cannot turn a finished step into a
    failed one. Arguments, return value and errors are those of ``run_preprocess_in_process``;
    the child's exception is re-raised here unchanged, with its traceback attached as a note.

    Raises:
        RuntimeError: the child died without reporting (e.g. killed for memory); names its exit code.
    """
    import pickle
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="preprocess-worker-") as tmp:
        request, response = os.path.join(tmp, "request.pkl"), os.path.join(tmp, "response.pkl")
        with open(request, "wb") as f:
            pickle.dump((data_uri, examples_dir, transform_dir, settings), f)
        # stdout/stderr are inherited: the worker's logs stay in the step's log.
        proc = subprocess.run([sys.executable, "-m", "components.preprocess", request, response], check=False)
        if not os.path.exists(response):
            for d in (examples_dir, transform_dir):
                shutil.rmtree(d, ignore_errors=True)
            raise RuntimeError(f"the preprocess worker process died with exit code {proc.returncode} before reporting")
        with open(response, "rb") as f:
            ok, payload, child_traceback = pickle.load(f)
    if ok:
        return payload
    payload.add_note(f"in the preprocess worker process:\n{child_traceback}")
    raise payload


def _worker_main(request: str, response: str) -> None:
    import pickle
    import sys
    import traceback

    with open(request, "rb") as f:
        args = pickle.load(f)
    try:
        result = (True, run_preprocess_in_process(*args), "")
    except BaseException as e:  # handed to the parent process, which re-raises it
        result = (False, e, traceback.format_exc())
    try:
        data = pickle.dumps(result)
    except Exception:  # an exception that cannot be pickled travels as its text
        data = pickle.dumps((False, RuntimeError(f"{type(result[1]).__name__}: {result[1]}"), result[2]))
    with open(response + ".tmp", "wb") as f:
        f.write(data)
    os.replace(response + ".tmp", response)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_preprocess_in_process(
    data_uri: str,
    examples_dir: str,
    transform_dir: str,
    settings: PreprocessSettings,
) -> dict[str, Any]:
    """Runs the preprocess step (a Beam pipeline with tf.Transform analysis) in this process.

    Args:
        data_uri: Local folder or ``gs://`` prefix with one sub-folder per class.
        examples_dir: Local output folder for the split examples (created; must not hold data).
        transform_dir: Local output folder for the transform graph.
        settings: ``PreprocessSettings``.

    Returns:
        The statistics (see ``summarize``).

    Raises:
        FileNotFoundError: ``data_uri`` is missing or empty.
        DataError: see ``check_statistics``. On any error both output folders are removed, so
            no half-written artifact is left behind.
    """
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    import tensorflow_transform as tft
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    candidates, skipped = discover(data_uri)
    if not candidates:
        raise DataError(f"no image files under {data_uri!r} (expected <data_uri>/<class>/<image>)")
    spec = base_models.get_spec(settings.base_model)
    preprocessing_fn = make_preprocessing_fn(settings.image_size, spec.scaling)
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(raw_feature_spec())
    try:
        with tempfile.TemporaryDirectory(prefix="tft-") as tmp:
            with beam.Pipeline(runner=_default_runner(settings.beam_pipeline_args), options=PipelineOptions(list(settings.beam_pipeline_args))) as p, tft_beam.Context(temp_dir=tmp):
                records = (
                    p
                    | "ListFiles" >> beam.Create(candidates)
                    | "ReadAndCheck" >> beam.Map(_load, settings)
                )
                good = records | "Usable" >> beam.Filter(lambda r: r["ok"])
                for split in SPLITS:
                    _ = (
                        good
                        | f"Select{split}" >> beam.Filter(lambda r, s=split: r["split"] == s)
                        | f"Encode{split}" >> beam.Map(_to_example)
                        | f"Write{split}" >> beam.io.WriteToTFRecord(
                            posixpath.join(examples_dir, split, "part"), file_name_suffix=".tfrecord"
                        )
                    )
                # The vocabulary is analyzed over every usable image, so a class that falls only
                # into eval/test still has an index (check_statistics then fails it by name).
                raw = good | "ToRaw" >> beam.Map(lambda r: {IMAGE_KEY: r["data"], LABEL_KEY: r["label"].encode()})
                transform_fn = (raw, metadata) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
                _ = transform_fn | "WriteTransform" >> tft_beam.WriteTransformFn(transform_dir)
                _ = (
                    records
                    | "Summaries" >> beam.Map(lambda r: json.dumps({k: v for k, v in r.items() if k != "data"}))
                    | "WriteManifest" >> beam.io.WriteToText(
                        posixpath.join(examples_dir, MANIFEST), shard_name_template=""
                    )
                )
        # WriteTransformFn does not record the raw schema; TFTransformOutput.raw_feature_spec()
        # (what users and the training input pipeline parse examples with) reads it from here.
        metadata_io.write_metadata(metadata, os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
        with open(os.path.join(examples_dir, MANIFEST)) as f:
            stats = summarize((json.loads(line) for line in f), skipped)
        check_statistics(stats)
    except BaseException:
        for d in (examples_dir, transform_dir):
            shutil.rmtree(d, ignore_errors=True)
        raise
    return stats


def write_statistics(stats: dict[str, Any], json_path: str, markdown_path: str | None = None) -> None:
    """Writes ``statistics.json`` (and the Markdown report) atomically (temp file, then rename)."""
    for path, text in ((json_path, json.dumps(stats, indent=2)), (markdown_path, statistics_markdown(stats) if markdown_path else None)):
        if path is None:
            continue
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)


if __name__ == "__main__":
    import sys

    # Through the package module, so exceptions pickle as components.preprocess.DataError etc.
    from components import preprocess as _module

    _module._worker_main(sys.argv[1], sys.argv[2])
