"""The head phase's fast path: the frozen base's outputs computed once, the head trained on them.

With the base frozen and in inference mode (and nothing random before it), the base is a fixed
function of each image: one forward pass over the train and eval splits gives the pooled
features, and the head trains on those in the very batches ``model.fit`` on images would see
(the same example order and per-epoch shuffles, ``data.epoch_ordered``), without a forward pass of
the base per epoch.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from components.finetune.data import TrainingData, epoch_ordered, one_hot_batches

# Images per forward pass of the base while computing features.
FEATURE_BATCH = 256


def feature_function(model: Any) -> Any:
    """The base's pooled output (``head_pool``) of ``model`` as one ``tf.function`` traced once
    for any batch size: input float32 ``[batch, size, size, 3]`` (scaled pixels), output float32
    ``[batch, channels]``, inference mode. Keras' ``predict_on_batch`` traces again for every new
    batch size (the last, smaller batch and the eval split), about a second each on a CPU."""
    import keras
    import tensorflow as tf

    extractor = keras.Model(model.input, model.get_layer("head_pool").output)
    spec = tf.TensorSpec([None, *extractor.input_shape[1:]], tf.float32)
    return tf.function(lambda images: tf.cast(extractor(images, training=False), tf.float32), input_signature=[spec])


def feature_batches(
    model: Any, data: TrainingData, checkpoint_dir: str, seed: int, epochs: int
) -> tuple[Callable[[int], Any], Any | None]:
    """The head phase's training input and eval batches on features instead of images.

    Features are computed once (``extract_features``, kept in ``checkpoint_dir`` for a restart)
    from the train split in the order ``data.train_examples`` yields and the eval split in file order.

    Args:
        model: The classifier (``model.build_classifier``), base frozen.
        data: From ``data.prepare_data``.
        checkpoint_dir: Where ``train_features.npy`` / ``eval_features.npy`` are kept.
        seed: The head phase's seed.
        epochs: The head phase's epochs.

    Returns:
        ``(train, eval)``: ``train(first_epoch)`` gives one-hot batches of features float32
        ``[batch, channels]`` for the epochs from ``first_epoch`` on (``data.epoch_ordered``);
        ``eval`` the eval split's batches, or None when it is empty.
    """
    import numpy as np
    import tensorflow as tf

    forward = feature_function(model)
    num_classes = len(data.labels)
    train_x, train_y = extract_features(forward, data.train_examples, data.num_train, os.path.join(checkpoint_dir, "train_features.npy"))
    evaluation = None
    if data.num_eval:
        eval_x, eval_y = extract_features(forward, data.eval_examples, data.num_eval, os.path.join(checkpoint_dir, "eval_features.npy"))
        evaluation = one_hot_batches(tf.data.Dataset.from_tensor_slices((np.asarray(eval_x), eval_y)), data.batch_size, num_classes)
    features = tf.data.Dataset.from_tensor_slices((np.asarray(train_x), train_y))
    return (lambda first: epoch_ordered(features, data.batch_size, seed, first, epochs, num_classes)), evaluation


def extract_features(forward: Any, examples: Any, count: int, path: str, batch_size: int = FEATURE_BATCH) -> tuple[Any, Any]:
    """Pooled base outputs (``forward``, see ``feature_function``) and labels of ``examples``, in one pass.

    The features go to a ``.npy`` file written as they are computed (memory-mapped: a dataset
    larger than memory streams through), the labels to ``<path>.labels.npy``. Complete files
    are reused (a resumed step does not compute them again).

    Args:
        forward: From ``feature_function``.
        examples: Unbatched ``(image, label index)`` pairs.
        count: How many pairs ``examples`` yields.
        path: The features file, ending in ``.npy``.
        batch_size: Images per forward pass.

    Returns:
        ``(features float32 [count, channels] (memory map), labels int64 [count])``.

    Raises:
        RuntimeError: ``examples`` yielded a number of pairs other than ``count``.
    """
    import numpy as np

    labels_path = path[: -len(".npy")] + ".labels.npy"
    if os.path.exists(path) and os.path.exists(labels_path):
        return np.load(path, mmap_mode="r"), np.load(labels_path)
    dim = forward.get_concrete_function().structured_outputs.shape[-1]
    tmp = path + ".partial.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, dim))
    labels = np.zeros(count, dtype=np.int64)
    row = 0
    for images, batch_labels in examples.batch(batch_size):
        n = int(images.shape[0])
        out[row:row + n] = forward(images).numpy()
        labels[row:row + n] = batch_labels.numpy()
        row += n
    if row != count:
        raise RuntimeError(f"expected {count} examples while computing features, got {row}")
    out.flush()
    del out
    np.save(labels_path + ".partial.npy", labels)
    os.replace(labels_path + ".partial.npy", labels_path)
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r"), labels
