"""Preprocess: raw images -> split examples, tf.Transform graph, statistics.

Design (TFX Transform's "analyze, don't materialize"): tf.Transform's Beam pipeline *analyzes*
the data (the label vocabulary) and writes the transform graph; the split examples keep the
encoded image bytes. The graph (decode, resize, pixel scaling for the base model, label ->
index) is applied by the training input pipeline and inside the exported serving signature, so
training and serving run the very same ops, and no float pixels are ever materialized (they are
about 70x the size of the JPEG bytes at 96x96x3, measured on digit JPEGs).

The Beam pipeline streams: the image bytes flow through one fused stage (read -> normalize ->
write) and never cross a shuffle, so memory does not grow with the number of images; only one
small record per image (path, label, hash, size) is grouped, to find duplicates and conflicting
labels. The files are therefore read twice (inspect, then write).

Inputs: see ``components.sources`` (class folders, a CSV manifest, or TFRecord files).

Outputs:
  * examples folder: ``train/``, ``eval/``, ``test/`` with TFRecord files of ``tf.train.Example``
    holding ``image`` (bytes: PNG, JPEG or GIF, see ``components.image_files.normalize_image``) and
    ``label`` (bytes: the class name), and ``manifest.jsonl``: one JSON line per input file
    (``uri``, ``label``, ``status`` = ``ok`` / ``skipped`` / ``conflict``, ``split``, ``sha256``,
    size, mode, format, ``reason`` when not used).
  * transform folder: a ``tft.TFTransformOutput``. Transformed features: ``image`` float32
    ``[batch, size, size, 3]`` scaled for the base model; ``label`` int64 ``[batch]``, the index
    into the vocabulary ``label`` (class names sorted by code point: stable across runs).
  * statistics (``summarize``): counts per split and class, size/mode/format histograms,
    skipped files with reasons, duplicates, label conflicts, a dataset fingerprint.

Bad input policy (``check_statistics``): unusable files are skipped and listed up to
``max_bad_fraction`` of all files; beyond it, or with fewer than two classes, a class without a
usable image, or a class below ``min_images_per_class``, the step fails with a ``DataError``
naming the files, classes and counts, and removes its outputs (no half-written artifact).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import time
from typing import Any, Iterable, Iterator

from components import base_models, image_files, sources, storage
from components.settings import (
    BASE_MODEL, DATA_URI, MODEL_NAME, REGISTRY_URI, TARGET_ENV, Setting, at_least, in_range, validate,
)
from components.artifacts import (
    EXAMPLES_SUFFIX, IMAGE_KEY, LABEL_KEY, LABEL_VOCABULARY, MANIFEST_FILE, SPLITS, STATISTICS_FILE, escape_label,
    few_images_warnings, raw_feature_spec,
)

# One JSON line per input file (see the module docstring).
# Files per Beam element: Beam costs tens of microseconds per element and stage, more than
# inspecting a small image; 64 files make it negligible and still spread work over many workers.
CHUNK_SIZE = 64
# Size histogram buckets: the longer side of the image, in pixels.
_SIZE_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def _shell_words(value: Any) -> tuple[str, ...]:
    """``beam_pipeline_args`` as a pipeline parameter is one shell-quoted line; here, its words."""
    import shlex

    return tuple(shlex.split(value)) if isinstance(value, str) else tuple(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreprocessSettings:
    """Settings of the preprocess step, validated on construction.

    Attributes:
        data_uri: Where the images are: a local path or ``gs://`` URI (see ``components.sources``).
        registry_uri, model_name, target_env: Where the champion is (the target environment's
            current model): the statistics compare this dataset's labels with its labels. An
            empty ``registry_uri`` skips the comparison.
        image_size: Height and width in pixels the images are resized to (square; bilinear with
            antialiasing). At least the base model's minimum input size.
        base_model: Key of ``components.base_models.BASE_MODELS``; selects the pixel scaling.
        eval_fraction: Expected share of each class in the eval split, in [0, 1).
        test_fraction: Expected share of each class in the test split, in [0, 1).
            ``eval_fraction + test_fraction`` must be below 1.
        split_salt: String mixed into the split hash; change it to draw a different split.
        max_pixels: Images whose header declares more pixels (width x height) are rejected
            before decoding (decompression bombs). Default 50 megapixels.
        max_bad_fraction: Largest share of unusable input files (damaged, not an image, outside
            a class folder, conflicting labels) that is skipped; more fails the step. In [0, 1].
        min_images_per_class: Fewest usable images a class may have (all splits together), >= 1.
        beam_pipeline_args: Apache Beam options, e.g. ``("--runner=DataflowRunner", ...)`` (a
            pipeline parameter gives them as one shell-quoted line);
            empty means Beam's in-process runner, with one worker process per core from
            ``LOCAL_PARALLEL_MIN_FILES`` files on (``local_parallelism``).
    """

    data_uri: str = DATA_URI.field()
    registry_uri: str = REGISTRY_URI.field()
    model_name: str = MODEL_NAME.field()
    target_env: str = TARGET_ENV.field()
    image_size: int = Setting(int, 224, "input height and width in pixels", check=at_least(1)).field()
    eval_fraction: float = Setting(
        float, 0.15, "share of each class in the eval split", check=in_range(0, 1, high_open=True)
    ).field()
    test_fraction: float = Setting(
        float, 0.15, "share of each class in the test split", check=in_range(0, 1, high_open=True)
    ).field()
    split_salt: str = Setting(str, "", "string mixed into the content hash that assigns splits").field()
    max_bad_fraction: float = Setting(
        float, 0.01, "largest share of unusable input files that is skipped; more fails the run", check=in_range(0, 1)
    ).field()
    min_images_per_class: int = Setting(int, 5, "fewest usable images a class may have", check=at_least(1)).field()
    beam_pipeline_args: tuple[str, ...] = Setting(
        str, "", "Apache Beam options for preprocessing, e.g. '--runner=DataflowRunner --project=P'", parse=_shell_words
    ).field()
    base_model: str = BASE_MODEL.field()
    max_pixels: int = image_files.DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        validate(self)
        base_models.check_image_size(self.base_model, self.image_size)
        if self.eval_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"eval_fraction + test_fraction must be below 1 (nothing left to train on), got "
                f"{self.eval_fraction} + {self.test_fraction}"
            )
        if self.max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")


class DataError(ValueError):
    """The input data cannot make a training set; the message names the class, file or count."""


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

    def resize(image: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(tf.image.resize(image, [image_size, image_size], antialias=True), 0.0, 255.0)

    def decode(one: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(one, channels=3, expand_animations=False)
        # channels=3 and no animation make it [height, width, 3]; say so, or graph-mode tracing
        # (tf.Transform) loses the rank inside tf.cond.
        image.set_shape([None, None, 3])
        # An image already at the target size passes unchanged: the resize would return the same
        # pixels (measured: largest difference 0.0) at about twice the cost of the whole decode.
        same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], image_size))
        return tf.cond(same_size, lambda: tf.cast(image, tf.float32), lambda: resize(image))

    return tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))


def make_preprocessing_fn(image_size: int, scaling: str, labels: Iterable[str]):
    """Builds the tf.Transform ``preprocessing_fn``.

    Args:
        image_size: Output height and width in pixels.
        scaling: The base model's pixel scaling (``components.base_models.SCALING_MODES``).
        labels: Every class name; the vocabulary holds them sorted by code point, so a class
            keeps its index across runs whatever the class frequencies (TFT's own order is by
            frequency). Given to TFT as ``reserved_tokens``.

    The function maps ``image`` tf.string ``[batch]`` (encoded PNG/JPEG/GIF/BMP) and ``label``
    tf.string ``[batch]`` to ``image`` float32 ``[batch, image_size, image_size, 3]`` (RGB,
    resized with antialiasing, scaled by ``scaling``) and ``label`` int64 ``[batch]`` (index in
    the vocabulary ``label``; -1 for an unknown class). ``label`` may be left out (serving).
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    vocabulary = [escape_label(c) for c in sorted(set(labels))]

    def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        images_ = decode_images(inputs[IMAGE_KEY], image_size)
        outputs = {IMAGE_KEY: base_models.scale_pixels(images_, scaling)}
        # TFT's text vocabulary silently drops tokens with line breaks, and its TFRecord format
        # cannot be exported inside a SavedModel: class names are escaped instead.
        escaped = tf.strings.regex_replace(inputs[LABEL_KEY], r"\\", r"\\\\")
        escaped = tf.strings.regex_replace(escaped, "\n", r"\\n")
        escaped = tf.strings.regex_replace(escaped, "\r", r"\\r")
        outputs[LABEL_KEY] = tft.compute_and_apply_vocabulary(
            escaped, vocab_filename=LABEL_VOCABULARY, default_value=-1, reserved_tokens=vocabulary
        )
        return outputs

    return preprocessing_fn


# ---------------------------------------------------------------------------------------------
# Beam stages


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
# Statistics and policy


def _size_order(bucket: str) -> int:
    """Sort key of a ``_size_bucket`` name: its bound (the open-ended bucket last)."""
    return int(bucket[2:]) if bucket.startswith("<=") else _SIZE_BUCKETS[-1] + 1


def _size_bucket(width: int, height: int) -> str:
    side = max(width, height)
    for bound in _SIZE_BUCKETS:
        if side <= bound:
            return f"<={bound}"
    return f">{_SIZE_BUCKETS[-1]}"


def summarize(rows: Iterable[dict[str, Any]], skipped: list[dict[str, str]], declared_classes: Iterable[str] = ()) -> dict[str, Any]:
    """Statistics of one preprocess run (what ``statistics.json`` holds), in one streaming pass.

    Args:
        rows: Manifest rows (see the module docstring).
        skipped: ``{"uri", "reason"}`` found before reading (``sources.Inventory.skipped``).
        declared_classes: Every class the input names, usable images or not.

    Returns:
        ``num_files`` (every input entry), ``num_images`` (usable), ``classes`` (sorted names with
        usable images), ``declared_classes``, ``class_counts`` {split: {class: n}},
        ``class_totals`` {class: n}, ``image_sizes`` {"<=N px": n} (longer side),
        ``image_modes``, ``image_formats``, ``converted`` (re-encoded as PNG), ``skipped``
        [{"uri", "reason"}], ``conflicts`` (images excluded for disagreeing labels),
        ``duplicates`` (usable images whose content equals another's), ``bad_fraction``,
        ``warnings`` (``artifacts.few_images_warnings``: classes with few eval or test images), and
        ``fingerprint``: SHA-256 over the sorted ``class<TAB>content SHA-256`` lines of the usable
        images (same images with the same labels -> same fingerprint, wherever they are stored).
    """
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    hist: dict[str, dict[str, int]] = {"image_sizes": {}, "image_modes": {}, "image_formats": {}}
    skipped = list(skipped)
    pairs: list[str] = []
    duplicates = conflicts = converted = 0
    num_files = len(skipped)
    for r in rows:
        num_files += 1
        if r["status"] != "ok":
            skipped.append({"uri": r["uri"], "reason": r["reason"]})
            conflicts += r["status"] == "conflict"
            continue
        counts[r["split"]][r["label"]] = counts[r["split"]].get(r["label"], 0) + 1
        for key, value in (("image_sizes", _size_bucket(r["width"], r["height"])), ("image_modes", r["mode"]), ("image_formats", r["format"])):
            hist[key][value] = hist[key].get(value, 0) + 1
        duplicates += bool(r.get("duplicate"))
        converted += bool(r.get("convert"))
        pairs.append(f"{r['label']}\t{r['sha256']}")
    totals: dict[str, int] = {}
    for split in counts.values():
        for c, n in split.items():
            totals[c] = totals.get(c, 0) + n
    classes = sorted(totals)
    return {
        "num_files": num_files,
        "num_images": len(pairs),
        "classes": classes,
        "declared_classes": sorted(set(declared_classes) | set(classes)),
        "class_counts": {s: dict(sorted(c.items())) for s, c in counts.items()},
        "class_totals": dict(sorted(totals.items())),
        # Sizes smallest first; modes and formats most frequent first.
        "image_sizes": dict(sorted(hist["image_sizes"].items(), key=lambda kv: _size_order(kv[0]))),
        **{k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in hist.items() if k != "image_sizes"},
        "converted": converted,
        "skipped": sorted(skipped, key=lambda s: s["uri"]),
        "conflicts": conflicts,
        "duplicates": duplicates,
        "bad_fraction": (len(skipped) / num_files) if num_files else 0.0,
        "warnings": few_images_warnings(counts, classes),
        "fingerprint": hashlib.sha256("\n".join(sorted(pairs)).encode()).hexdigest(),
    }


def check_statistics(stats: dict[str, Any], max_bad_fraction: float = 0.01, min_images_per_class: int = 1) -> None:
    """Applies the bad-input policy (see the module docstring).

    Raises:
        DataError: too many unusable files (names the first ones, grouped by reason), fewer
            than two classes, a class with no usable image or below ``min_images_per_class``, or
            a class with no image in the train split; the message names classes and counts.
    """
    skipped = stats["skipped"]
    if stats["num_files"] and stats["bad_fraction"] > max_bad_fraction:
        shown = "; ".join(f"{s['uri']} ({s['reason']})" for s in skipped[:5])
        raise DataError(
            f"{len(skipped)} of {stats['num_files']} input files ({stats['bad_fraction']:.1%}) are unusable, more than "
            f"max_bad_fraction {max_bad_fraction:.1%}: {shown}" + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        )
    totals = stats["class_totals"]
    empty = [c for c in stats["declared_classes"] if totals.get(c, 0) == 0]
    if empty:
        raise DataError("class(es) with no usable image: " + ", ".join(repr(c) for c in empty))
    if len(stats["classes"]) < 2:
        raise DataError(
            f"found {len(stats['classes'])} class(es) with usable images ({', '.join(stats['classes']) or 'none'}); "
            "need at least two classes"
        )
    small = {c: n for c, n in totals.items() if n < min_images_per_class}
    if small:
        raise DataError(
            f"class(es) below min_images_per_class {min_images_per_class}: "
            + ", ".join(f"{c!r} has {n}" for c, n in small.items())
        )
    train = stats["class_counts"]["train"]
    no_train = [c for c in stats["classes"] if train.get(c, 0) == 0]
    if no_train:
        raise DataError(
            "class(es) with no image in the train split: "
            + ", ".join(f"{c!r} ({totals[c]} usable image(s) in all)" for c in no_train)
        )


def compare_labels(classes: list[str], champion_labels: list[str]) -> dict[str, Any]:
    """How this dataset's classes differ from the champion's.

    Returns:
        ``{"same": bool, "added": [...], "removed": [...]}`` (sorted names).
    """
    added, removed = sorted(set(classes) - set(champion_labels)), sorted(set(champion_labels) - set(classes))
    return {"same": not added and not removed, "added": added, "removed": removed}


def statistics_markdown(stats: dict[str, Any]) -> str:
    """A Markdown report of ``stats`` for the KFP UI."""
    lines = [
        "# Preprocessing statistics",
        "",
        f"{stats['num_images']} usable images of {stats['num_files']} input files in {len(stats['classes'])} classes; "
        f"{len(stats['skipped'])} skipped ({stats['bad_fraction']:.1%}); {stats['duplicates']} exact duplicate{'' if stats['duplicates'] == 1 else 's'} "
        f"(kept in one split); {stats['conflicts']} with conflicting labels (excluded); {stats['converted']} re-encoded as PNG.",
        "",
        "| class | " + " | ".join(SPLITS) + " | total |",
        "|---|" + "---:|" * (len(SPLITS) + 1),
    ]
    for c in stats["classes"]:
        row = [str(stats["class_counts"][s].get(c, 0)) for s in SPLITS]
        lines.append(f"| {c} | " + " | ".join(row) + f" | {stats['class_totals'][c]} |")
    for key, title in (("image_sizes", "Image size (longer side, px)"), ("image_modes", "Pixel mode"), ("image_formats", "Format")):
        lines += ["", f"**{title}**: " + ", ".join(f"{k}: {v}" for k, v in stats[key].items())]
    if stats.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in stats["warnings"]]
    champion = stats.get("champion")
    if champion:
        if champion["labels"]["same"]:
            lines += ["", f"Same label set as the champion (version {champion['version']} of {champion['alias']!r})."]
        else:
            lines += [
                "",
                f"**The label set differs from the champion's** (version {champion['version']} of {champion['alias']!r}): "
                f"added {champion['labels']['added']}, removed {champion['labels']['removed']}. "
                "The two models solve different tasks and are not compared.",
            ]
    if stats["skipped"]:
        lines += ["", "## Skipped files", "", "| file | reason |", "|---|---|"]
        lines += [f"| {s['uri']} | {s['reason']} |" for s in stats["skipped"][:200]]
        if len(stats["skipped"]) > 200:
            lines.append(f"| ... | {len(stats['skipped']) - 200} more in statistics.json |")
    lines += ["", f"Dataset fingerprint: `{stats['fingerprint']}`", ""]
    return "\n".join(lines)


# From this many input files on, and with at least LOCAL_PARALLEL_MIN_CORES cores, a local run
# uses one Beam worker process per core (at most 8). Each extra worker costs ~8 s of start-up
# (it imports TensorFlow and tf.Transform; ``make bench``, preprocess_parallel_throughput). On 2
# cores, which the runner's own threads share with the workers, two workers measured no clear
# per-image gain (0.84 vs 0.89 of tf.data in one run, 2.3 vs 1.3 in another), so 2-core
# machines stay with one process; with 4 or more cores, 50,000 files repay the start-up.
LOCAL_PARALLEL_MIN_FILES = 50_000
LOCAL_PARALLEL_MIN_CORES = 4


def _default_runner(beam_pipeline_args: tuple[str, ...]) -> Any:
    """The runner when the arguments name none: Beam's in-process FnApiRunner.

    Why not ``DirectRunner``: since Beam 2.6x it first tries the Prism runner, which downloads a
    binary at run time (impossible on an air-gapped node), leaves its gRPC server behind when it
    falls back, and the step process then crashed at exit (signal 11) after finishing its work.
    The FnApiRunner honours ``--direct_num_workers`` and ``--direct_running_mode``.
    """
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_pipeline_args):
        return None
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    return fn_runner.FnApiRunner()


def check_beam_args(beam_pipeline_args: tuple[str, ...]) -> None:
    """Parses ``beam_pipeline_args`` with Beam's own option parser before any work starts.

    Raises:
        ValueError: an argument that is not an option (``--name=value`` or ``--name value``),
            or a value Beam refuses (e.g. ``--direct_num_workers=abc``); the message names the
            argument and gives Beam's own complaint instead of its usage text.
    """
    if not beam_pipeline_args:
        return  # nothing to parse, and no reason to import Beam (run-local checks in its own process)
    import contextlib
    import io

    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_pipeline_args)
    for i, arg in enumerate(args):
        if not arg.startswith("--") and (i == 0 or not args[i - 1].startswith("--") or "=" in args[i - 1]):
            raise ValueError(f"beam_pipeline_args: {arg!r} is not an option; write --{arg.lstrip('-')}")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            PipelineOptions(args).get_all_options()
    except SystemExit:
        complaint = stderr.getvalue().strip().splitlines()[-1:] or ["rejected"]
        raise ValueError(f"beam_pipeline_args {' '.join(args)!r}: {complaint[0].split(': error: ')[-1]}") from None


def local_parallelism(beam_pipeline_args: tuple[str, ...], num_files: int, cpu_count: int | None = None) -> tuple[str, ...]:
    """``beam_pipeline_args``, plus one worker process per core for a large local run.

    When no ``--runner`` and no ``--direct_num_workers`` is given, ``num_files`` is at least
    ``LOCAL_PARALLEL_MIN_FILES`` and the machine has at least ``LOCAL_PARALLEL_MIN_CORES`` cores
    (``cpu_count``, default ``os.cpu_count()``), appends ``--direct_num_workers=<cores, at most 8>
    --direct_running_mode=multi_processing``. Otherwise returns the arguments unchanged.
    """
    given = {a.split("=", 1)[0] for a in beam_pipeline_args}
    cores = min(8, cpu_count or os.cpu_count() or 1)
    if "--runner" in given or "--direct_num_workers" in given or num_files < LOCAL_PARALLEL_MIN_FILES or cores < LOCAL_PARALLEL_MIN_CORES:
        return tuple(beam_pipeline_args)
    return (*beam_pipeline_args, f"--direct_num_workers={cores}", "--direct_running_mode=multi_processing")


def run_preprocess(
    data_uri: str,
    examples_dir: str,
    transform_dir: str,
    settings: PreprocessSettings,
    champion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs the preprocess step (a Beam pipeline with tf.Transform analysis) in a child process.

    Why a child process: after a tf.Transform analysis has run, the Python interpreter crashes
    with signal 11 while garbage-collecting at exit (tensorflow-transform 1.21 / TF 2.21, seen
    with every runner, not in every process). The child does the work, reports its result or exception
    through a pickle file, and leaves with ``os._exit`` so the crash cannot turn a finished step into a
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
            pickle.dump((data_uri, examples_dir, transform_dir, settings, champion), f)
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

    from components.step_logging import quiet_tensorflow

    quiet_tensorflow("preprocess")
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
    champion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs the preprocess step (a Beam pipeline with tf.Transform analysis) in this process.

    Args:
        data_uri: Local path or ``gs://`` URI (see ``components.sources``).
        examples_dir: Local output folder for the split examples and the manifest.
        transform_dir: Local output folder for the transform graph.
        settings: ``PreprocessSettings``.
        champion: The target environment's current model, if any, as ``{"version", "alias",
            "labels"}`` (its class names): the statistics then say whether this dataset has the
            same label set (see ``compare_labels``).

    Returns:
        The statistics (see ``summarize``), plus ``champion``: ``{"version", "alias", "labels":
        compare_labels(...)}`` or None, and ``timing``: ``{"imports_s", "pipeline_s"}`` (seconds
        spent importing TensorFlow, Beam and tf.Transform, and on everything after).

    Raises:
        FileNotFoundError: ``data_uri`` is missing or holds no file.
        DataError: the bad-input policy (``check_statistics``). On any error both output folders
            are removed, so no half-written artifact is left behind.
    """
    started = time.perf_counter()
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    imported = time.perf_counter()
    check_beam_args(settings.beam_pipeline_args)
    inventory = sources.discover(data_uri)
    labels = set(inventory.declared_classes) | {c.label for c in inventory.candidates}
    if inventory.kind == "tfrecord":
        labels |= sources.tfrecord_labels(inventory.tfrecord_files)
    if not inventory.candidates and not inventory.tfrecord_files:
        stats = summarize([], inventory.skipped, inventory.declared_classes)
        raise DataError(f"no image file under {data_uri!r} (expected <data_uri>/<class>/<image>, a CSV manifest or TFRecords); "
                        + (f"skipped: {stats['skipped'][0]['uri']} ({stats['skipped'][0]['reason']})" if stats["skipped"] else "it is empty"))
    spec = base_models.get_spec(settings.base_model)
    preprocessing_fn = make_preprocessing_fn(settings.image_size, spec.scaling, labels)
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(raw_feature_spec())
    manifest = posixpath.join(examples_dir, MANIFEST_FILE)

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

    try:
        with tempfile.TemporaryDirectory(prefix="tft-") as tmp:
            # TFRecord input counts as one file per record, unknown before reading: it runs in one process.
            options = PipelineOptions(list(local_parallelism(settings.beam_pipeline_args, len(inventory.candidates))))
            with beam.Pipeline(runner=_default_runner(settings.beam_pipeline_args), options=options) as p, \
                    tft_beam.Context(temp_dir=tmp):
                # Stage 1: read and inspect every file; only small records leave this stage.
                rows = (
                    chunks(p, "Inspect")
                    | "Inspect" >> beam.FlatMap(_inspect_chunk, settings)
                    | "GroupCopies" >> beam.GroupByKey()
                    | "ResolveDuplicates" >> beam.FlatMap(_resolve_chunk).with_outputs("actions", main="manifest")
                )
                _ = rows.manifest | "WriteManifest" >> beam.io.WriteToText(manifest, shard_name_template="")
                # Stage 2: read again and stream the usable images into their split's files.
                examples = chunks(p, "Write") | "Examples" >> beam.FlatMap(
                    _examples_chunk, beam.pvalue.AsDict(rows.actions), settings).with_outputs(*SPLITS, "labels")
                for split in SPLITS:
                    _ = examples[split] | f"Write{split}" >> beam.io.WriteToTFRecord(
                        posixpath.join(examples_dir, split, "part"), file_name_suffix=EXAMPLES_SUFFIX)
                # The vocabulary needs labels only: the analysis never decodes an image.
                transform_fn = (examples["labels"], metadata) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
                _ = transform_fn | "WriteTransform" >> tft_beam.WriteTransformFn(transform_dir)
        # WriteTransformFn does not record the raw schema; TFTransformOutput.raw_feature_spec()
        # (what users and the training input pipeline parse examples with) reads it from here.
        metadata_io.write_metadata(metadata, os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
        for split in SPLITS:
            os.makedirs(os.path.join(examples_dir, split), exist_ok=True)
        with open(manifest) as f:
            stats = summarize((json.loads(line) for line in f), inventory.skipped, inventory.declared_classes)
        # The manifest covers every input entry: also those listing already set aside (a file
        # outside a class folder, a non-image, a bad CSV row).
        with open(manifest, "a") as f:
            for s in inventory.skipped:
                f.write(json.dumps({"label": None, "reason": s["reason"], "status": "skipped", "uri": s["uri"]}, sort_keys=True) + "\n")
        stats["champion"] = champion and {
            "version": champion["version"], "alias": champion["alias"], "labels": compare_labels(stats["classes"], champion["labels"])
        }
        # Where the step's time went, in seconds: imports (TensorFlow, Beam, tf.Transform) and the
        # rest (listing, the Beam pipeline with TFT's analysis, statistics).
        stats["timing"] = {"imports_s": round(imported - started, 2), "pipeline_s": round(time.perf_counter() - imported, 2)}
        check_statistics(stats, settings.max_bad_fraction, settings.min_images_per_class)
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



def run_preprocess_step(
    examples_dir: str, transform_graph_dir: str, statistics_dir: str, report_path: str | None, settings: PreprocessSettings
) -> dict[str, Any]:
    """The preprocess step: reads ``settings.data_uri``, writes the three artifacts and the report.

    The champion's labels (``settings.registry_uri``/``model_name``/``target_env``) are looked
    up first, so that the statistics say whether this dataset keeps its label set.

    Args:
        examples_dir: Output: the ``examples`` artifact folder (layout in ``components.artifacts``).
        transform_graph_dir: Output: the ``transform_graph`` artifact folder.
        statistics_dir: Output: the ``statistics`` artifact folder (``statistics.json``).
        report_path: Output: the Markdown statistics report; None to skip it.
        settings: ``PreprocessSettings`` (``data_uri`` must be set).

    Returns:
        The statistics (``summarize``'s dict).

    Raises:
        ValueError: ``settings.data_uri`` is empty.
        DataError, FileNotFoundError: see ``run_preprocess_in_process``.
        components.registry.RegistryError: the registry exists but cannot be read
            (``components.registry.champion``).
    """
    from components import registry

    if not settings.data_uri:
        raise ValueError("data_uri is empty: give the folder, CSV manifest or TFRecord files to preprocess")
    champion = registry.champion(settings.registry_uri, settings.model_name, settings.target_env)
    stats = run_preprocess(settings.data_uri, examples_dir, transform_graph_dir, settings, champion)
    write_statistics(stats, os.path.join(statistics_dir, STATISTICS_FILE), report_path)
    for warning in stats["warnings"]:
        print(f"warning: {warning}", flush=True)
    return stats

if __name__ == "__main__":
    import sys

    # Through the package module, so exceptions pickle as components.preprocess.DataError etc.
    from components import preprocess as _module

    _module._worker_main(sys.argv[1], sys.argv[2])
