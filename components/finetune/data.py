"""The finetune step's input: split examples -> ``tf.data`` batches through the transform graph.

``prepare_data`` reads the preprocess step's artifacts once (label vocabulary, image size,
example counts, class weights) and builds the datasets both phases use: the train and eval
splits, decoded by the tf.Transform graph. ``training_batches`` gives the batches of the epochs
from ``first_epoch`` on, each epoch shuffled by ``phase seed * 1000 + epoch``; the order of an
epoch depends only on the seed and its number, so a run resumed at epoch e sees the batches an
uninterrupted run would.

Every record is first put in a canonical byte form (``canonical_bytes``: tf.Transform writes the
feature map in no fixed order). The splits are read in a canonical order (records sorted by their
SHA-256) when they fit the memory cache: Beam writes records in no fixed order (two preprocess
runs of the same images gave two orders of the same records), and the shuffle permutes by
position, so without it the same images would train in other batches after preprocess ran again. ``TrainingData.fingerprint``
hashes the records in the order training reads them.

Decoded pixels stay in memory when the train and eval splits fit under
``MEMORY_CACHE_LIMIT_BYTES`` (``cache_in_memory``); above it every epoch decodes again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Callable

from components.artifacts import IMAGE_KEY, LABEL_KEY, split_files, vocabulary
from components.finetune.settings import FinetuneSettings

# Float pixels of the train and eval splits are cached in memory below this size; above it each
# epoch decodes again (a disk cache of float pixels would be about 70x the encoded bytes).
MEMORY_CACHE_LIMIT_BYTES = 1 << 30
# Examples held by each shuffle: at least the whole split for datasets of up to 10,000 images.
SHUFFLE_BUFFER = 10_000
# Records decoded per call of the transform graph.
DECODE_BATCH = 64


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The step's data, read once from the preprocess step's artifacts.

    Attributes:
        tft_output: The ``tft.TFTransformOutput`` of the transform graph.
        labels: Class names in label-index order (at least 2).
        image_size: Height and width of the transformed images, in pixels.
        num_train: Examples in the train split (>= 1).
        num_eval: Examples in the eval split (>= 0).
        batch_size: The global batch: ``settings.batch_size`` times the number of replicas.
        steps_per_epoch: ``ceil(num_train / batch_size)``.
        class_weight: ``{class index: weight}`` for ``class_weight="balanced"``, else None.
        cache: Whether decoded pixels are cached in memory (``cache_in_memory``).
        train_examples: The train split's ``(image, label)`` pairs in file order: ``image``
            float32 ``[size, size, 3]`` (scaled for the base model), ``label`` int64 ``[]``
            (vocabulary index); cached when ``cache``.
        eval_examples: The eval split's ``(image, label)`` pairs in the same order as
            ``train_examples``; cached when ``cache``.
        fingerprint: SHA-256 (hex) of what decides the batches: the labels, the image size and
            every train and eval record in the order training reads them
            (``read_split``).
    """

    tft_output: Any
    labels: list[str]
    image_size: int
    num_train: int
    num_eval: int
    batch_size: int
    steps_per_epoch: int
    class_weight: dict[int, float] | None
    cache: bool
    train_examples: Any
    eval_examples: Any
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class SplitRecords:
    """One split's serialized records as training reads them.

    Attributes:
        records: A ``tf.data.Dataset`` of scalar tf.string records.
        count: How many records it yields.
        digest: SHA-256 (hex) over the records' own SHA-256 digests (of ``canonical_bytes``), in
            that order.
        canonical: Whether the order is canonical (sorted by SHA-256) rather than file order.
    """

    records: Any
    count: int
    digest: str
    canonical: bool


def canonical_bytes(record: bytes) -> bytes:
    """One serialized ``tf.train.Example`` in a canonical byte form: parsed and serialized again
    with protobuf's deterministic serialization, which writes map entries (the feature map) in key
    order.

    tf.Transform's coder writes the feature map in no fixed order: two preprocess runs of the same
    images gave records with ``image`` and ``label`` in either order, so every record's bytes (and
    with them the fingerprint and the canonical order) changed from run to run, and a restart never
    resumed. The parsed example is the same, and so are these bytes.

    Args:
        record: A serialized ``tf.train.Example``.

    Returns:
        The same example's deterministic serialization.

    Raises:
        google.protobuf.message.DecodeError: ``record`` is not a serialized Example.
    """
    from tensorflow.core.example import example_pb2

    return example_pb2.Example.FromString(record).SerializeToString(deterministic=True)


def read_split(files: list[str], canonical: bool) -> SplitRecords:
    """Reads one split's TFRecord ``files`` once, hashing every record.

    Args:
        files: The split's TFRecord files (``artifacts.split_files``), in name order.
        canonical: Hold the records in memory sorted by their SHA-256 (the order then does not
            depend on how Beam wrote them; equal records are the same example, so ties do not
            matter). Otherwise the records stream from the files in file order.

    Returns:
        The split's ``SplitRecords``.
    """
    import tensorflow as tf

    hashes, kept = [], []
    for record in tf.data.TFRecordDataset(files).as_numpy_iterator():
        record = canonical_bytes(record)
        hashes.append(hashlib.sha256(record).digest())
        if canonical:
            kept.append((hashes[-1], record))
    if canonical:
        kept.sort(key=lambda pair: pair[0])
        hashes = [h for h, _ in kept]
        records = tf.data.Dataset.from_tensor_slices(tf.constant([r for _, r in kept], dtype=tf.string))
    else:
        records = tf.data.TFRecordDataset(files)
    return SplitRecords(records, len(hashes), hashlib.sha256(b"".join(hashes)).hexdigest(), canonical)


def count_examples(files: list[str]) -> int:
    """Number of records in TFRecord ``files``."""
    import tensorflow as tf

    return int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1))


def label_counts(files: list[str], tft_output: Any, num_classes: int) -> list[int]:
    """Examples per class index in TFRecord ``files`` (labels only; no image is decoded)."""
    import numpy as np
    import tensorflow as tf

    names = vocabulary(tft_output)
    index = {n: i for i, n in enumerate(names)}
    counts = np.zeros(num_classes, dtype=np.int64)
    spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.string)}
    for batch in tf.data.TFRecordDataset(files).batch(4096).map(lambda x: tf.io.parse_example(x, spec)):
        for label in batch[LABEL_KEY].numpy():
            counts[index[label.decode()]] += 1
    return counts.tolist()


def balanced_class_weights(counts: list[int]) -> dict[int, float]:
    """scikit-learn's "balanced" weights ``n / (k * n_c)``; a class with no example gets 0."""
    n, k = sum(counts), len(counts)
    return {i: (n / (k * c) if c else 0.0) for i, c in enumerate(counts)}


def cache_in_memory(num_examples: int, image_size: int) -> bool:
    """Whether ``num_examples`` decoded images fit the memory cache.

    Args:
        num_examples: Images to cache (the step caches the train and eval splits together).
        image_size: Height and width in pixels; each image is float32 ``[size, size, 3]``.

    Returns:
        True when ``num_examples * image_size**2 * 3 * 4`` bytes are below
        ``MEMORY_CACHE_LIMIT_BYTES`` (1 GiB).
    """
    return num_examples * image_size * image_size * 3 * 4 < MEMORY_CACHE_LIMIT_BYTES


def transform_decoder(tft_output: Any) -> Callable[[Any], Any]:
    """The function from serialized records to ``(image, label)`` pairs through the transform
    graph: records are parsed and transformed ``DECODE_BATCH`` at a time, in parallel, in order.

    Args:
        tft_output: A ``tft.TFTransformOutput``.

    Returns:
        ``decode(records)``: a ``tf.data.Dataset`` of scalar tf.string records -> an unbatched
        dataset of ``image`` float32 ``[size, size, 3]`` and ``label`` int64 ``[]``.
    """
    import tensorflow as tf

    layer = tft_output.transform_features_layer()
    spec = tft_output.raw_feature_spec()

    def decode(records: Any) -> Any:
        ds = records.batch(DECODE_BATCH).map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(lambda raw: layer(raw), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.map(lambda t: (t[IMAGE_KEY], t[LABEL_KEY])).unbatch()

    return decode


def prepare_data(examples_dir: str, transform_graph_dir: str, settings: FinetuneSettings, replicas: int = 1) -> TrainingData:
    """Reads the preprocess step's outputs and builds the step's datasets (nothing is decoded yet).

    Args:
        examples_dir: The preprocess step's examples folder (``train/`` and ``eval/`` TFRecords).
        transform_graph_dir: The preprocess step's transform graph folder.
        settings: Read: ``batch_size`` (per replica), ``class_weight``.
        replicas: Replicas of the distribution strategy (the global batch's factor), >= 1.

    Raises:
        FileNotFoundError: the train or eval split has no TFRecord file.
        ValueError: fewer than two classes in the vocabulary, or an empty train split (names
            the folder).
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    tft_output = tft.TFTransformOutput(transform_graph_dir)
    labels = vocabulary(tft_output)
    if len(labels) < 2:
        raise ValueError(f"the label vocabulary in {transform_graph_dir!r} has {len(labels)} class(es); need at least 2")
    image_size = int(tft_output.transformed_feature_spec()[IMAGE_KEY].shape[0])
    train_files, eval_files = split_files(examples_dir, "train"), split_files(examples_dir, "eval")
    num_train, num_eval = count_examples(train_files), count_examples(eval_files)
    if num_train == 0:
        raise ValueError(f"the train split in {examples_dir!r} is empty")
    batch_size = settings.batch_size * replicas
    balanced = settings.class_weight == "balanced"
    cache = cache_in_memory(num_train + num_eval, image_size)
    # A second pass over the records (the count decides the cache, the cache the order).
    train, evaluation = read_split(train_files, cache), read_split(eval_files, cache)
    fingerprint = hashlib.sha256(json.dumps(
        {"labels": labels, "image_size": image_size, "train": train.digest, "eval": evaluation.digest}, sort_keys=True
    ).encode()).hexdigest()
    decode = transform_decoder(tft_output)
    train_examples, eval_examples = decode(train.records), decode(evaluation.records)
    return TrainingData(
        tft_output=tft_output,
        labels=labels,
        image_size=image_size,
        num_train=num_train,
        num_eval=num_eval,
        batch_size=batch_size,
        steps_per_epoch=math.ceil(num_train / batch_size),
        class_weight=balanced_class_weights(label_counts(train_files, tft_output, len(labels))) if balanced else None,
        cache=cache,
        train_examples=train_examples.cache() if cache else train_examples,
        eval_examples=eval_examples.cache() if cache else eval_examples,
        fingerprint=fingerprint,
    )


def one_hot_batches(examples: Any, batch_size: int, num_classes: int) -> Any:
    """``examples`` (``(x, label index)`` pairs) in batches of ``batch_size``, labels one-hot
    float32 ``[batch, num_classes]`` (label smoothing needs one-hot targets)."""
    import tensorflow as tf

    return examples.batch(batch_size).map(lambda x, y: (x, tf.one_hot(y, num_classes)))


def epoch_ordered(examples: Any, batch_size: int, seed: int, first_epoch: int, epochs: int, num_classes: int) -> Any:
    """One-hot batches of epochs ``first_epoch .. epochs - 1``, each epoch shuffled by
    ``seed * 1000 + epoch``.

    Why: the order of epoch e depends only on e, so a run resumed at epoch e after a crash sees
    exactly the batches an uninterrupted run would have seen. A seeded ``tf.data`` shuffle
    permutes by position, whatever the values, so pixels and the fast path's features in the
    same order get the same batches. Batches never straddle epochs.

    Args:
        examples: ``(x, label index)`` pairs.
        batch_size: The global batch.
        seed: The phase's seed.
        first_epoch: The first epoch to yield (0-based), below ``epochs``.
        epochs: The phase's epochs.
        num_classes: Width of the one-hot labels.

    Raises:
        ValueError: ``first_epoch >= epochs`` (no epoch left).
    """
    import tensorflow as tf

    ds = None
    for epoch in range(first_epoch, epochs):
        one = examples.shuffle(SHUFFLE_BUFFER, seed=seed * 1000 + epoch, reshuffle_each_iteration=False)
        one = one_hot_batches(one, batch_size, num_classes)
        ds = one if ds is None else ds.concatenate(one)
    if ds is None:
        raise ValueError(f"no epoch left to train: first_epoch {first_epoch} >= epochs {epochs}")
    return ds.prefetch(tf.data.AUTOTUNE)


def training_batches(data: TrainingData, seed: int, first_epoch: int, epochs: int) -> Any:
    """The training input of one phase on images (``epoch_ordered`` over the train split).

    Args:
        data: From ``prepare_data``.
        seed: The phase's seed (the head phase uses ``settings.seed``, the fine-tune phase
            ``settings.seed + 1``).
        first_epoch: The first epoch to yield (0-based; > 0 when resuming).
        epochs: The phase's epochs.

    Returns:
        A ``tf.data.Dataset`` of ``(image float32 [batch, size, size, 3], one-hot float32
        [batch, num_classes])``, ``data.steps_per_epoch`` batches per epoch.
    """
    return epoch_ordered(data.train_examples, data.batch_size, seed, first_epoch, epochs, len(data.labels))


def eval_batches(data: TrainingData) -> Any | None:
    """The eval split in one-hot batches of ``data.batch_size``; None when it is empty.

    The dataset declares its length (``ceil(num_eval / batch_size)`` batches): Keras 3.15 warns
    "Your input ran out of data; interrupting training" at the end of a validation pass over a
    dataset of unknown length, although nothing is interrupted (fixed in Keras by
    keras-team/keras#23360), and TFRecord files have an unknown length.
    """
    import tensorflow as tf

    if not data.num_eval:
        return None
    batches = one_hot_batches(data.eval_examples, data.batch_size, len(data.labels))
    return batches.apply(tf.data.experimental.assert_cardinality(math.ceil(data.num_eval / data.batch_size)))
