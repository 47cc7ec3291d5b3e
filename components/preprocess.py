"""Preprocess: raw images -> split examples, tf.Transform graph, statistics.

Design (TFX Transform's "analyze, don't materialize"): tf.Transform's Beam pipeline *analyzes*
the data (the label vocabulary) and writes the transform graph; the split examples keep the
encoded image bytes. The graph (decode, resize, pixel scaling for the base model, label ->
index) is applied by the training input pipeline and inside the exported serving signature, so
training and serving run the very same ops, and no float pixels are ever materialized (they are
about 70x the size of the JPEG bytes at 96x96x3, measured on digit JPEGs).

The Beam pipeline (``components.preprocess_beam``) streams the image bytes and groups only one
small record per image. With the in-process runner the outputs are the artifacts' local folders;
with a remote runner (``components.beam_options``: Dataflow, Flink, Spark, a portable runner) they
must be URIs on object storage (the artifacts' ``.uri``), which the workers write directly, and
only the small Markdown report is written locally. Statistics and the bad-input policy are in
``components.preprocess_stats``.

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
import os
import posixpath
import tempfile
import time
import uuid
from typing import Any, Iterable

from components import base_models, beam_options, image_files, sources
from components.settings import (
    BASE_MODEL, DATA_URI, MODEL_NAME, REGISTRY_URI, TARGET_ENV, Setting, at_least, in_range, validate,
)
from components.artifacts import IMAGE_KEY, LABEL_KEY, LABEL_VOCABULARY, STATISTICS_FILE, escape_label
# Public names of the split modules, importable from here as before the split.
from components.beam_options import (  # noqa: F401
    LOCAL_PARALLEL_MIN_CORES, LOCAL_PARALLEL_MIN_FILES, check_beam_args, local_parallelism,
)
from components.preprocess_beam import (  # noqa: F401
    CHUNK_SIZE, _inspect, _resolve_duplicates, assign_split, read_manifest, remove_tree, run_pipeline,
)
from components.preprocess_stats import (  # noqa: F401
    DataError, check_statistics, compare_labels, statistics_markdown, summarize, write_statistics,
)


def _shell_words(value: Any) -> tuple[str, ...]:
    """``beam_pipeline_args`` as a pipeline parameter is one shell-quoted line; here, its words."""
    import shlex

    if not isinstance(value, str):
        return tuple(value)
    try:
        return tuple(shlex.split(value))
    except ValueError as e:  # shlex: "No closing quotation", "No escaped character"
        raise ValueError(f"beam_pipeline_args {value!r}: {e} (one shell-quoted line is expected)") from None


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
            ``LOCAL_PARALLEL_MIN_FILES`` files on (``local_parallelism``). A remote runner
            (``components.beam_options.is_remote``) needs URI outputs and gets
            ``--temp_location`` and ``--sdk_container_image`` defaults (docs/distributed-preprocessing.md).
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
                remove_tree(d)
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
        examples_dir: Output for the split examples and the manifest: a local folder, or a URI
            (``gs://...``; required with a remote runner, see ``components.beam_options``).
        transform_dir: Output for the transform graph, local or URI likewise.
        settings: ``PreprocessSettings``. A remote runner gets ``--temp_location`` (beside
            ``examples_dir``) and ``--sdk_container_image`` (the component image) unless given.
        champion: The target environment's current model, if any, as ``{"version", "alias",
            "labels"}`` (its class names): the statistics then say whether this dataset has the
            same label set (see ``compare_labels``).

    Returns:
        The statistics (see ``summarize``), plus ``champion``: ``{"version", "alias", "labels":
        compare_labels(...)}`` or None, and ``timing``: ``{"imports_s", "pipeline_s"}`` (seconds
        spent importing TensorFlow, Beam and tf.Transform, and on everything after).

    Raises:
        FileNotFoundError: ``data_uri`` is missing or holds no file.
        ValueError: bad ``beam_pipeline_args``, or a local output with a remote runner (names both).
        DataError: the bad-input policy (``check_statistics``). On any error both outputs are
            removed (folders, or every object under the URIs), so no half-written artifact is left behind.
    """
    started = time.perf_counter()
    import apache_beam  # noqa: F401
    import tensorflow_transform.beam  # noqa: F401

    imported = time.perf_counter()
    args = settings.beam_pipeline_args
    check_beam_args(args)
    beam_options.check_output_locations(args, {"examples": examples_dir, "transform_graph": transform_dir})
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
    remote = beam_options.is_remote(args)
    try:
        if remote:
            args = beam_options.remote_args(args, examples_dir)
            # tf.Transform's scratch space must be reachable by every worker.
            temp_dir = posixpath.join(beam_options.option_value(args, "temp_location"), f"tft-{uuid.uuid4().hex[:12]}")
            try:
                run_pipeline(inventory, examples_dir, transform_dir, temp_dir, preprocessing_fn, settings, args)
            finally:
                remove_tree(temp_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="tft-") as tmp:
                # TFRecord input counts as one file per record, unknown before reading: it runs in one process.
                local_args = local_parallelism(args, len(inventory.candidates))
                run_pipeline(inventory, examples_dir, transform_dir, tmp, preprocessing_fn, settings, local_args,
                             beam_options.default_runner(args))
        # The manifest covers every input entry, also those listing already set aside.
        stats = summarize(read_manifest(examples_dir), [], inventory.declared_classes)
        stats["champion"] = champion and {
            "version": champion["version"], "alias": champion["alias"], "labels": compare_labels(stats["classes"], champion["labels"])
        }
        # Where the step's time went, in seconds: imports (TensorFlow, Beam, tf.Transform) and the
        # rest (listing, the Beam pipeline with TFT's analysis, statistics).
        stats["timing"] = {"imports_s": round(imported - started, 2), "pipeline_s": round(time.perf_counter() - imported, 2)}
        check_statistics(stats, settings.max_bad_fraction, settings.min_images_per_class)
    except BaseException:
        for d in (examples_dir, transform_dir):
            remove_tree(d)
        raise
    return stats


def run_preprocess_step(
    examples_dir: str, transform_graph_dir: str, statistics_dir: str, report_path: str | None, settings: PreprocessSettings
) -> dict[str, Any]:
    """The preprocess step: reads ``settings.data_uri``, writes the three artifacts and the report.

    The champion's labels (``settings.registry_uri``/``model_name``/``target_env``) are looked
    up first, so that the statistics say whether this dataset keeps its label set.

    Args:
        examples_dir: Output: the ``examples`` artifact (layout in ``components.artifacts``): its
            local ``.path``, or its ``.uri`` (``gs://...``), which a remote Beam runner requires.
        transform_graph_dir: Output: the ``transform_graph`` artifact, local or URI likewise.
        statistics_dir: Output: the ``statistics`` artifact (``statistics.json``), local or URI likewise.
        report_path: Output: the Markdown statistics report (a local file); None to skip it.
        settings: ``PreprocessSettings`` (``data_uri`` must be set).

    Returns:
        The statistics (``summarize``'s dict).

    Raises:
        ValueError: ``settings.data_uri`` is empty, or a local output with a remote runner
            (``components.beam_options.check_output_locations``: names the runner and the path).
        DataError, FileNotFoundError: see ``run_preprocess_in_process``.
        components.registry.RegistryError: the registry exists but cannot be read
            (``components.registry.champion``).
    """
    from components import registry

    if not settings.data_uri:
        raise ValueError("data_uri is empty: give the folder, CSV manifest or TFRecord files to preprocess")
    beam_options.check_output_locations(
        settings.beam_pipeline_args, {"examples": examples_dir, "transform_graph": transform_graph_dir, "statistics": statistics_dir}
    )
    champion = registry.champion(settings.registry_uri, settings.model_name, settings.target_env)
    stats = run_preprocess(settings.data_uri, examples_dir, transform_graph_dir, settings, champion)
    # The statistics go where the other outputs go; the Markdown report stays local (small).
    join = posixpath.join if beam_options.is_uri(statistics_dir) else os.path.join
    write_statistics(stats, join(statistics_dir, STATISTICS_FILE), report_path)
    for warning in stats["warnings"]:
        print(f"warning: {warning}", flush=True)
    return stats


if __name__ == "__main__":
    import sys

    # Through the package module, so exceptions pickle as components.preprocess.DataError etc.
    from components import preprocess as _module

    _module._worker_main(sys.argv[1], sys.argv[2])
