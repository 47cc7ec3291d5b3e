"""Fine-tune: a pretrained base model, frozen, under a new classification head.

The recipe is the feature-extraction half of Keras' transfer-learning guide
(https://keras.io/guides/transfer_learning/): the base model is frozen and called with
``training=False`` so its BatchNormalization layers stay in inference mode (their moving
statistics belong to the pretraining data and must not drift on a small dataset), and a new head
(global average pooling, dropout, softmax dense layer) is trained on top.

Input: the split examples and the tf.Transform graph of the preprocess step. The graph is
applied in the tf.data input pipeline here and inside the exported serving signature.

Output folder (the KFP ``Model`` artifact):
  * ``model.keras``: the Keras model (input: transformed pixels), for further fine-tuning.
  * ``serving/``: a SavedModel whose ``serving_default`` signature takes raw encoded image bytes
    (see ``export_serving``).
  * ``training.json``: settings, label vocabulary, per-epoch history.
  * ``tensorboard/``: TensorBoard logs.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import tempfile
import time
from typing import Any

from components import base_models, storage
from components.preprocess import IMAGE_KEY, LABEL_KEY, LABEL_VOCABULARY

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SERVING_DIR = "serving"
KERAS_FILE = "model.keras"
TRAINING_FILE = "training.json"
# Transformed float pixels are cached in memory below this size; above it each epoch decodes
# again (a disk cache of float pixels would be ~70x the encoded bytes).
_MEMORY_CACHE_LIMIT_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """Settings of the finetune step, validated on construction.

    Attributes:
        base_model: Key of ``components.base_models.BASE_MODELS``.
        base_weights: ``imagenet`` (Keras downloads them: connected clusters only), ``none``
            (random initialisation, for baselines), or a local path / ``gs://`` URI of a
            ``.weights.h5`` file saved from the same architecture (air-gapped clusters).
        width_multiplier: MobileNet ``alpha``; 1.0 for other families.
        epochs: Passes over the train split, >= 1.
        batch_size: Images per step, >= 1.
        learning_rate: Optimizer step size, > 0 (Keras' default for Adam is 1e-3).
        optimizer: One of ``OPTIMIZERS``.
        dropout: Dropout rate before the classification layer, in [0, 1).
        seed: Seed for weight initialisation, shuffling and dropout.
    """

    base_model: str = "mobilenet_v2"
    base_weights: str = "imagenet"
    width_multiplier: float = 1.0
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    dropout: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        base_models.get_spec(self.base_model)
        if not self.base_weights:
            raise ValueError("base_weights must be 'imagenet', 'none', or a path / gs:// URI of a weights file")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be > 0, got {self.width_multiplier}")


def split_files(examples_dir: str, split: str) -> list[str]:
    """The TFRecord files of one split.

    Raises:
        FileNotFoundError: the split has no file (names the folder).
    """
    files = sorted(glob.glob(os.path.join(examples_dir, split, "*.tfrecord")))
    if not files:
        raise FileNotFoundError(f"no TFRecord file for split {split!r} in {os.path.join(examples_dir, split)!r}")
    return files


def count_examples(files: list[str]) -> int:
    """Number of records in TFRecord ``files``."""
    import tensorflow as tf

    return int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1))


def make_dataset(files: list[str], tft_output: Any, batch_size: int, shuffle_seed: int | None = None, cache: bool = False):
    """``tf.data.Dataset`` of ``(image, label)`` batches with the transform graph applied.

    Yields: ``image`` float32 ``[batch, size, size, 3]`` (scaled for the base model),
    ``label`` int64 ``[batch]`` (vocabulary index). ``shuffle_seed`` None keeps file order.
    """
    import tensorflow as tf

    layer = tft_output.transform_features_layer()
    spec = tft_output.raw_feature_spec()
    ds = tf.data.TFRecordDataset(files)
    if shuffle_seed is not None and not cache:
        ds = ds.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda raw: layer(raw), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda t: (t[IMAGE_KEY], t[LABEL_KEY]))
    if cache:
        ds = ds.unbatch().cache()
        if shuffle_seed is not None:
            ds = ds.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_base_model(settings: FinetuneSettings, image_size: int, scratch_dir: str) -> Any:
    """Builds the base model and loads its weights from ``settings.base_weights``.

    Raises:
        FileNotFoundError: the weights file does not exist.
        ValueError: the weights file does not fit the architecture (the message names the file,
            the base model and Keras' own description of the mismatch).
    """
    source = settings.base_weights
    if source.lower() in ("imagenet", "none"):
        return base_models.build_base_model(
            settings.base_model, image_size, source.lower() if source.lower() == "imagenet" else None,
            settings.width_multiplier,
        )
    path = storage.fetch_to_local(source, scratch_dir)
    base = base_models.build_base_model(settings.base_model, image_size, None, settings.width_multiplier)
    try:
        base.load_weights(path)
    except ValueError as e:
        raise ValueError(
            f"weights file {source!r} does not fit base model {settings.base_model!r} "
            f"(width_multiplier {settings.width_multiplier}): {e}"
        ) from e
    return base


def build_classifier(base: Any, num_classes: int, dropout: float) -> Any:
    """Frozen ``base`` under a new head: pooling, dropout, softmax dense layer.

    Returns:
        ``keras.Model``: float32 ``[batch, H, W, 3]`` -> probabilities float32
        ``[batch, num_classes]`` (rows sum to 1).
    """
    import keras

    base.trainable = False
    inputs = keras.Input(shape=base.input_shape[1:], name=IMAGE_KEY)
    # training=False keeps BatchNormalization in inference mode even if the base is unfrozen
    # later (Keras transfer-learning guide): its statistics belong to the pretraining data.
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head_classifier")(x)
    return keras.Model(inputs, outputs, name=f"{base.name}_classifier")


def make_optimizer(name: str, learning_rate: float) -> Any:
    """A Keras optimizer by name (``OPTIMIZERS``); SGD uses momentum 0.9 (the usual choice)."""
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    raise ValueError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")


def _progress_callback(num_examples: int):
    import keras

    class EpochProgress(keras.callbacks.Callback):
        """Prints one line per epoch: loss, accuracy, eval metrics, learning rate, images/s."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.perf_counter() - self._start
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            print(
                f"epoch {epoch + 1}/{self.params['epochs']}: loss {logs.get('loss', float('nan')):.4f} "
                f"accuracy {logs.get('accuracy', float('nan')):.4f} "
                f"eval_loss {logs.get('val_loss', float('nan')):.4f} eval_accuracy {logs.get('val_accuracy', float('nan')):.4f} "
                f"lr {lr:.3g} {num_examples / seconds:.0f} images/s",
                flush=True,
            )

    return EpochProgress()


def export_serving(model: Any, tft_output: Any, labels: list[str], export_dir: str) -> None:
    """Writes a SavedModel whose serving signature takes raw encoded image bytes.

    Signature ``serving_default``: input ``image_bytes`` tf.string ``[batch]`` (PNG, JPEG, GIF or
    BMP file contents); outputs ``probabilities`` float32 ``[batch, num_classes]`` (vocabulary
    order), ``class_id`` int64 ``[batch]``, ``label`` tf.string ``[batch]`` and ``confidence``
    float32 ``[batch]`` (the top probability). The loaded object also has ``class_names``
    (tf.string ``[num_classes]``). The tf.Transform layer (with its vocabulary asset) is tracked
    by the module, so decoding, resizing and scaling run exactly as in training.

    Why a ``tf.Module``: the TFT layer is a tf_keras object and cannot sit inside a Keras 3
    functional model (TRAPS.md); a module tracking both saves them together.
    """
    import tensorflow as tf

    class ServingModule(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.tft_layer = tft_output.transform_features_layer()
            self.class_names = tf.Variable(labels, dtype=tf.string, trainable=False, name="class_names")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            features = self.tft_layer({IMAGE_KEY: image_bytes})
            probabilities = self.model(features[IMAGE_KEY], training=False)
            class_id = tf.argmax(probabilities, axis=-1)
            return {
                "probabilities": probabilities,
                "class_id": class_id,
                "label": tf.gather(self.class_names, class_id),
                "confidence": tf.reduce_max(probabilities, axis=-1),
            }

    module = ServingModule()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})


def run_finetune(examples_dir: str, transform_dir: str, model_dir: str, settings: FinetuneSettings) -> dict[str, Any]:
    """Trains the head on the train split (eval split for validation) and exports the model.

    Args:
        examples_dir: The preprocess step's examples folder.
        transform_dir: The preprocess step's transform graph folder.
        model_dir: Output folder (see the module docstring for its content).
        settings: ``FinetuneSettings``.

    Returns:
        What ``training.json`` holds: ``settings``, ``labels``, ``image_size``, ``history``
        (per-epoch lists: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``), ``train_examples``,
        ``eval_examples``, ``seconds``.

    Raises:
        FileNotFoundError: a split or the weights file is missing.
        ValueError: invalid settings, image size below the base model's minimum, weights that do
            not fit, fewer than two classes in the vocabulary.
    """
    import keras
    import tensorflow_transform as tft

    start = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    tft_output = tft.TFTransformOutput(transform_dir)
    labels = [v.decode() for v in tft_output.vocabulary_by_name(LABEL_VOCABULARY)]
    if len(labels) < 2:
        raise ValueError(f"the label vocabulary in {transform_dir!r} has {len(labels)} class(es); need at least 2")
    image_size = int(tft_output.transformed_feature_spec()[IMAGE_KEY].shape[0])
    train_files, eval_files = split_files(examples_dir, "train"), split_files(examples_dir, "eval")
    num_train, num_eval = count_examples(train_files), count_examples(eval_files)
    cache = (num_train + num_eval) * image_size * image_size * 3 * 4 < _MEMORY_CACHE_LIMIT_BYTES
    train_ds = make_dataset(train_files, tft_output, settings.batch_size, shuffle_seed=settings.seed, cache=cache)
    eval_ds = make_dataset(eval_files, tft_output, settings.batch_size, cache=cache)

    os.makedirs(model_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="weights-") as scratch:
        base = load_base_model(settings, image_size, scratch)
    model = build_classifier(base, len(labels), settings.dropout)
    model.compile(
        optimizer=make_optimizer(settings.optimizer, settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        train_ds,
        validation_data=eval_ds if num_eval else None,
        epochs=settings.epochs,
        verbose=0,
        callbacks=[
            _progress_callback(num_train),
            keras.callbacks.TensorBoard(os.path.join(model_dir, "tensorboard"), profile_batch=0),
        ],
    )
    model.save(os.path.join(model_dir, KERAS_FILE))
    export_serving(model, tft_output, labels, os.path.join(model_dir, SERVING_DIR))
    summary = {
        "settings": dataclasses.asdict(settings),
        "labels": labels,
        "image_size": image_size,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "train_examples": num_train,
        "eval_examples": num_eval,
        "seconds": round(time.perf_counter() - start, 2),
    }
    with open(os.path.join(model_dir, TRAINING_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
