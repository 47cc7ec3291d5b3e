"""The artifact contract between the pipeline's steps: one home for every name they share.

Each step writes and reads artifact folders whose layout is fixed here: split names, feature keys,
file and folder names, the label vocabulary's name and escaping, and the serving signature's
names. Steps import this leaf module and never one another, so a step can be replaced (or run by
another tool) as long as it keeps this layout.

Layout of each artifact (``<folder>`` is the artifact's local ``.path``, or for preprocess's
artifacts under a remote Beam runner its ``.uri`` on object storage):

* preprocess ``examples``: ``<folder>/<split>/*.tfrecord`` for each of ``SPLITS`` (records of
  ``tf.train.Example`` with ``IMAGE_KEY`` = encoded image bytes and ``LABEL_KEY`` = the class
  name as UTF-8 bytes, see ``raw_feature_spec``), and ``<folder>/MANIFEST_FILE`` (one JSON line
  per input file).
* preprocess ``transform_graph``: a ``tft.TFTransformOutput`` folder whose vocabulary
  ``LABEL_VOCABULARY`` holds the class names escaped by ``escape_label``, one per line.
* preprocess ``statistics``: ``<folder>/STATISTICS_FILE``.
* finetune ``model``: ``KERAS_FILE``, ``SERVING_DIR/`` (a SavedModel with the serving signature
  below), ``TRAINING_FILE``, ``TRAINING_REPORT_FILE``, ``TRAINING_HTML_FILE`` (the learning
  curves as a self-contained HTML page), ``TENSORBOARD_DIR/`` and, unless
  ``checkpoint_dir`` is set, ``CHECKPOINT_DIR/``.
* evaluate ``evaluation``: one JSON file (the artifact's path itself); a registry version keeps
  a copy named ``EVALUATION_FILE``.

Serving signature (``SERVING_SIGNATURE``): input ``SERVING_INPUT`` tf.string ``[batch]`` of
encoded image files; outputs ``OUTPUT_PROBABILITIES`` float32 ``[batch, num_classes]``
(vocabulary order), ``OUTPUT_CLASS_ID`` int64 ``[batch]``, ``OUTPUT_LABEL`` tf.string
``[batch]`` and ``OUTPUT_CONFIDENCE`` float32 ``[batch]``; the saved object also carries
``CLASS_NAMES`` (tf.string ``[num_classes]``).
"""

from __future__ import annotations

import glob
import os
import posixpath
from typing import Any

# --- examples and transform graph (preprocess -> finetune, evaluate) -----------------------------
SPLITS = ("train", "eval", "test")
IMAGE_KEY = "image"
LABEL_KEY = "label"
LABEL_VOCABULARY = "label"
EXAMPLES_SUFFIX = ".tfrecord"
MANIFEST_FILE = "manifest.jsonl"
STATISTICS_FILE = "statistics.json"

# --- model (finetune -> evaluate, push) -----------------------------------------------------------
KERAS_FILE = "model.keras"
SERVING_DIR = "serving"
TRAINING_FILE = "training.json"
TRAINING_REPORT_FILE = "training.md"
TRAINING_HTML_FILE = "training.html"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"

# --- evaluation (evaluate -> push) ----------------------------------------------------------------
EVALUATION_FILE = "evaluation.json"

# --- serving signature (finetune writes it; evaluate, predict and TF Serving read it) -------------
SERVING_SIGNATURE = "serving_default"
SERVING_INPUT = "image_bytes"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_CLASS_ID = "class_id"
OUTPUT_LABEL = "label"
OUTPUT_CONFIDENCE = "confidence"
CLASS_NAMES = "class_names"


# Fewest images a class should have in the eval and in the test split. Below it the statistics
# and the evaluate report warn: with n images of a class one image moves its recall by 1/n (20 %
# at 5), so its per-class metrics, early stopping on eval accuracy and the champion comparison
# rest on noise for that class.
MIN_SPLIT_IMAGES_PER_CLASS = 5


def few_images_warnings(class_counts: dict[str, dict[str, int]], classes: list[str], splits: tuple[str, ...] = ("eval", "test"),
                        minimum: int = MIN_SPLIT_IMAGES_PER_CLASS) -> list[str]:
    """One warning per class and split with fewer than ``minimum`` images.

    Args:
        class_counts: ``{split: {class: images}}`` (a class missing from a split has 0).
        classes: Every class of the dataset.
        splits: The splits to look at.
        minimum: See ``MIN_SPLIT_IMAGES_PER_CLASS``.

    Returns:
        e.g. ``"class '7' has 2 images in the test split (fewer than 5): its test metrics are unreliable"``,
        in split, then class order.
    """
    return [
        f"class {c!r} has {n} image{'' if n == 1 else 's'} in the {split} split (fewer than {minimum}): "
        f"its {split} metrics are unreliable"
        for split in splits for c in classes
        if (n := class_counts.get(split, {}).get(c, 0)) < minimum
    ]


def split_files(examples_dir: str, split: str) -> list[str]:
    """The TFRecord files of one split of an ``examples`` artifact, sorted by name.

    Args:
        examples_dir: The ``examples`` artifact folder, or its URI (``gs://...``, read with
            ``tf.io.gfile``) when a remote Beam runner wrote it.
        split: One of ``SPLITS``.

    Raises:
        ValueError: ``split`` is not one of ``SPLITS``.
        FileNotFoundError: the split has no file (names the folder).
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if "://" in examples_dir:  # written by a remote Beam runner to the artifact's URI
        import tensorflow as tf

        folder = posixpath.join(examples_dir, split)
        files = sorted(tf.io.gfile.glob(posixpath.join(folder, f"*{EXAMPLES_SUFFIX}")))
    else:
        folder = os.path.join(examples_dir, split)
        files = sorted(glob.glob(os.path.join(folder, f"*{EXAMPLES_SUFFIX}")))
    if not files:
        raise FileNotFoundError(f"no TFRecord file for split {split!r} in {folder!r}")
    return files


def raw_feature_spec() -> dict[str, Any]:
    """The feature spec of the split examples (and of the transform graph's raw input):
    ``IMAGE_KEY`` and ``LABEL_KEY``, both scalar ``tf.string``."""
    import tensorflow as tf

    return {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.string),
    }


def escape_label(label: str) -> str:
    """A class name as stored in the vocabulary file: ``\\`` -> ``\\\\``, line feed -> ``\\n``,
    carriage return -> ``\\r`` (one token per line); every other name is unchanged."""
    return label.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def unescape_label(token: str) -> str:
    """Inverse of ``escape_label``."""
    out, i = [], 0
    while i < len(token):
        if token[i] == "\\" and i + 1 < len(token):
            out.append({"n": "\n", "r": "\r"}.get(token[i + 1], token[i + 1]))
            i += 2
        else:
            out.append(token[i])
            i += 1
    return "".join(out)


def vocabulary(tft_output: Any) -> list[str]:
    """The class names of a transform graph (a ``tft.TFTransformOutput``), in label-index order."""
    return [unescape_label(v.decode()) for v in tft_output.vocabulary_by_name(LABEL_VOCABULARY)]
