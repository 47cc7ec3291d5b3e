"""Fine-tune: a pretrained base model under a new classification head, the standard recipes.

The recipes follow Keras' transfer-learning guide (https://keras.io/guides/transfer_learning/)
and the TensorFlow fine-tuning tutorial:

1. **Head phase**: the base model is frozen and a new head (pooling, optional dense layers,
   dropout, softmax) is trained. When nothing random runs before the base (no augmentation), the
   base's outputs are computed once and the head trains on them (``fast path``): the same
   result as ``model.fit`` on images, without a forward pass of the base per epoch.
2. **Fine-tune phase** (``fine_tune_epochs > 0``): the top of the base is unfrozen (``unfreeze``)
   and training continues at a lower learning rate, after recompiling (``trainable`` changes
   only take effect on compile).

The base is always called with ``training=False`` and its BatchNormalization layers stay frozen,
also when unfrozen: their moving statistics belong to the pretraining data and must not drift on
a small dataset (Keras guide, "BatchNormalization layers").

Input: the split examples and the tf.Transform graph of the preprocess step; the graph runs in
the tf.data input pipeline here and inside the exported serving signature.

Output folder (the KFP ``Model`` artifact):
  * ``model.keras``: the Keras model (input: transformed pixels), for further fine-tuning.
  * ``serving/``: a SavedModel whose ``serving_default`` signature takes raw encoded image bytes
    (see ``export_serving``).
  * ``training.json``: settings, labels, per-epoch history (with ``phase`` and ``lr``), timings.
  * ``training.md``: the curves as a table, for the KFP UI.
  * ``tensorboard/``: TensorBoard logs.
  * ``checkpoints/`` (or ``checkpoint_dir``): per-epoch backups; a restarted step resumes from
    the last completed epoch (see ``run_finetune``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import glob
import json
import math
import os
import shutil
import tempfile
import time
import zipfile
from typing import Any, Iterator

from components import base_models, storage
from components.settings import (
    BASE_MODEL, Setting, above, at_least, comma_list, from_parameters, in_range, one_of, validate,
)
from components.artifacts import (
    CHECKPOINT_DIR, CLASS_NAMES, IMAGE_KEY, KERAS_FILE, LABEL_KEY, OUTPUT_CLASS_ID, OUTPUT_CONFIDENCE, OUTPUT_LABEL,
    OUTPUT_PROBABILITIES, SERVING_DIR, SERVING_INPUT, SERVING_SIGNATURE, TENSORBOARD_DIR, TRAINING_FILE,
    TRAINING_REPORT_FILE, split_files, vocabulary,
)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "exponential", "cosine", "plateau")
POOLINGS = ("avg", "max")
AUGMENTATIONS = ("flip", "rotation", "zoom", "contrast")
CLASS_WEIGHTS = ("none", "balanced")
MIXED_PRECISION = ("auto", "on", "off")
HEAD_LAYERS_PREFIX = "head_"
# Transformed float pixels are cached in memory below this size; above it each epoch decodes
# again (a disk cache of float pixels would be ~70x the encoded bytes).
_MEMORY_CACHE_LIMIT_BYTES = 1 << 30
_SHUFFLE_BUFFER = 10_000


def _nonempty_weights(name: str, value: str) -> None:
    if not value:
        raise ValueError(f"{name} must be 'imagenet', 'none', or a path / gs:// URI of a weights file")


def _positive_units(name: str, value: tuple[int, ...]) -> None:
    if any(u < 1 for u in value):
        raise ValueError(f"{name} must be positive integers, got {list(value)}")


def _known_augmentations(name: str, value: tuple[str, ...]) -> None:
    unknown = [a for a in value if a not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"{name} {unknown} not among {', '.join(AUGMENTATIONS)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneSettings:
    """Settings of the finetune step, validated on construction.

    Attributes:
        base_model: Key of ``components.base_models.BASE_MODELS``.
        base_weights: ``imagenet`` (Keras downloads them: connected clusters only); ``none``
            (random initialisation, for baselines); a local path or ``gs://`` URI of a
            ``.weights.h5`` file of the same architecture or of a ``.keras`` model that contains
            it (air-gapped clusters, or a previous run's ``model.keras``).
        width_multiplier: MobileNet ``alpha``; 1.0 for other families.
        pooling: ``avg`` or ``max`` global pooling of the base's feature map.
        dense_units: Hidden dense layers of the head (ReLU, each followed by dropout); () for a
            linear head.
        dropout: Dropout rate in the head, in [0, 1).
        l1, l2: L1/L2 penalties on the head's kernels (>= 0; Keras adds ``l1*sum|w|`` and
            ``l2*sum w^2`` to the loss).
        label_smoothing: In [0, 1); targets become ``(1 - s) * onehot + s / num_classes``
            (Szegedy et al. 2016).
        class_weight: ``none`` or ``balanced``: weight ``n / (k * n_c)`` per class, from the train
            split's counts (scikit-learn's "balanced" heuristic).
        epochs: Head-phase epochs (>= 0).
        learning_rate: Head-phase peak learning rate (> 0; Adam's default is 1e-3).
        fine_tune_epochs: Fine-tune-phase epochs (>= 0; 0 skips the phase).
        fine_tune_learning_rate: Fine-tune-phase peak learning rate (> 0; usually 10-100x lower).
        unfreeze: Which base layers the fine-tune phase trains: ``all``, ``top:N`` (the last N
            layers) or ``from:NAME`` (the named layer and all after it). BatchNormalization
            layers always stay frozen.
        optimizer: One of ``OPTIMIZERS``.
        momentum: SGD momentum in [0, 1).
        nesterov: SGD Nesterov momentum.
        weight_decay: AdamW decoupled weight decay (>= 0; Keras' default 0.004).
        lr_schedule: ``constant``; ``exponential`` (x ``decay_rate`` per epoch); ``cosine``
            (cosine decay to 0 over the phase, after ``warmup_epochs`` of linear warm-up,
            Loshchilov & Hutter 2017 / Goyal et al. 2017); ``plateau`` (x0.2 when the eval loss
            has not improved for 2 epochs).
        warmup_epochs: Linear warm-up epochs for ``cosine`` (>= 0).
        decay_rate: Per-epoch factor for ``exponential``, in (0, 1].
        clipnorm: Clip each gradient to this L2 norm (0 = off).
        batch_size: Images per step on each replica (the global batch is this times the number
            of GPUs), >= 1.
        early_stopping_patience: Stop a phase when eval accuracy has not improved for this many
            epochs and restore the best weights (0 = off).
        augmentation: Random layers applied to training images only: any of ``AUGMENTATIONS``
            (horizontal flip, rotation +-10%, zoom +-10%, contrast +-20%).
        fast_path: Train the head on the base's outputs computed once, when the recipe allows it
            (head phase, no augmentation).
        xla: Compile training steps with XLA (``jit_compile``).
        mixed_precision: ``auto`` (``mixed_float16`` on GPUs only), ``on`` or ``off``.
        checkpoint_dir: Where per-epoch backups go; empty: ``<model dir>/checkpoints``. Point it
            at durable storage so a preempted node resumes.
        seed: Seed for initialisation, shuffling, dropout and augmentation.
        accelerator_type: The accelerator resource the pipeline requests for this step (e.g.
            ``nvidia.com/gpu``); logged by the step.
        accelerator_count: How many accelerators the pipeline requests for this step (>= 0; 0:
            CPU). With 1 or more the step fails at once when TensorFlow sees no GPU.
    """

    base_model: str = BASE_MODEL.field()
    base_weights: str = Setting(
        str, "imagenet", "'imagenet' (download), 'none', or a path / gs:// URI of a .weights.h5 or .keras file",
        check=_nonempty_weights,
    ).field()
    width_multiplier: float = Setting(
        float, 1.0, "MobileNet alpha (width multiplier); 1.0 for other families", check=above(0)
    ).field()
    pooling: str = Setting(str, "avg", "global pooling of the base's features: avg or max", check=one_of(POOLINGS)).field()
    dense_units: tuple[int, ...] = Setting(
        str, "", "hidden dense layers of the head, comma-separated units (e.g. '256,128'); empty: linear head",
        check=_positive_units, parse=comma_list(int, "integers", "256,128"),
    ).field()
    dropout: float = Setting(float, 0.2, "dropout rate in the head, in [0, 1)", check=in_range(0, 1, high_open=True)).field()
    l1: float = Setting(float, 0.0, "L1 penalty on the head's kernels", check=at_least(0)).field()
    l2: float = Setting(float, 0.0, "L2 penalty on the head's kernels", check=at_least(0)).field()
    label_smoothing: float = Setting(
        float, 0.0, "label smoothing, in [0, 1)", check=in_range(0, 1, high_open=True)
    ).field()
    class_weight: str = Setting(
        str, "none", "none, or balanced (weights from the train split's class counts)", check=one_of(CLASS_WEIGHTS)
    ).field()
    epochs: int = Setting(int, 10, "head-phase epochs (base frozen)", check=at_least(0)).field()
    learning_rate: float = Setting(float, 0.001, "head-phase learning rate", check=above(0)).field()
    fine_tune_epochs: int = Setting(
        int, 0, "fine-tune-phase epochs (top of the base unfrozen); 0 skips the phase", check=at_least(0)
    ).field()
    fine_tune_learning_rate: float = Setting(
        float, 1e-05, "fine-tune-phase learning rate (usually 10-100x lower)", check=above(0)
    ).field()
    unfreeze: str = Setting(
        str, "all", "base layers the fine-tune phase trains: all, top:N or from:LAYER (BatchNormalization stays frozen)",
        check=lambda name, value: parse_unfreeze(value),
    ).field()
    optimizer: str = Setting(str, "adam", "adam, adamw, sgd or rmsprop", check=one_of(OPTIMIZERS)).field()
    momentum: float = Setting(float, 0.9, "SGD momentum", check=in_range(0, 1, high_open=True)).field()
    nesterov: bool = Setting(bool, False, "SGD Nesterov momentum").field()
    weight_decay: float = Setting(float, 0.004, "AdamW weight decay", check=at_least(0)).field()
    lr_schedule: str = Setting(
        str, "constant", "constant, exponential, cosine (with warmup_epochs) or plateau", check=one_of(LR_SCHEDULES)
    ).field()
    warmup_epochs: int = Setting(int, 0, "linear warm-up epochs of the cosine schedule", check=at_least(0)).field()
    decay_rate: float = Setting(
        float, 0.9, "per-epoch factor of the exponential schedule", check=in_range(0, 1, low_open=True)
    ).field()
    clipnorm: float = Setting(float, 0.0, "clip each gradient to this L2 norm; 0 = off", check=at_least(0)).field()
    batch_size: int = Setting(int, 32, "images per training step and GPU", check=at_least(1)).field()
    early_stopping_patience: int = Setting(
        int, 0, "stop a phase after this many epochs without eval-accuracy gain, keeping the best weights; 0 = off",
        check=at_least(0),
    ).field()
    augmentation: tuple[str, ...] = Setting(
        str, "", "random training-only augmentation: comma-separated flip, rotation, zoom, contrast",
        check=_known_augmentations, parse=comma_list(str, "names", "flip,rotation"),
    ).field()
    fast_path: bool = Setting(bool, True, "train the head on base outputs computed once, when no augmentation runs").field()
    xla: bool = Setting(bool, False, "compile training steps with XLA").field()
    mixed_precision: str = Setting(
        str, "auto", "auto (mixed_float16 on GPUs), on or off", check=one_of(MIXED_PRECISION)
    ).field()
    checkpoint_dir: str = Setting(
        str, "", "durable folder for per-epoch backups (resume after preemption); empty: inside the model artifact"
    ).field()
    seed: int = Setting(int, 0, "random seed of initialisation, shuffling, dropout and augmentation").field()
    accelerator_type: str = Setting(
        str, "nvidia.com/gpu", "accelerator resource of the finetune step (e.g. nvidia.com/gpu)"
    ).field()
    accelerator_count: int = Setting(
        int, 0, "accelerators for the finetune step; 0 means CPU", check=at_least(0, "0: CPU")
    ).field()

    def __post_init__(self) -> None:
        validate(self)
        spec = base_models.get_spec(self.base_model)
        if self.width_multiplier != 1.0 and not spec.has_width_multiplier:
            raise ValueError(f"width_multiplier {self.width_multiplier} is only supported by MobileNet base models, not {self.base_model!r}")
        if self.epochs + self.fine_tune_epochs < 1:
            raise ValueError("epochs + fine_tune_epochs must be at least 1")


def settings_from_parameters(**params: Any) -> FinetuneSettings:
    """``FinetuneSettings`` from pipeline parameters (keys that are not its fields are ignored);
    lists arrive as comma-separated strings: ``dense_units="256,128"``,
    ``augmentation="flip,rotation"`` (empty: none).

    Raises:
        ValueError: a non-integer in ``dense_units``, or any invalid setting (named).
    """
    return from_parameters(FinetuneSettings, params)


def parse_unfreeze(spec: str) -> tuple[str, int | str | None]:
    """Parses ``unfreeze``: ``all`` -> ("all", None), ``top:N`` -> ("top", N), ``from:NAME``.

    Raises:
        ValueError: any other form (the message shows the three accepted forms).
    """
    if spec == "all":
        return "all", None
    kind, _, arg = spec.partition(":")
    if kind == "top" and arg.isdigit() and int(arg) > 0:
        return "top", int(arg)
    if kind == "from" and arg:
        return "from", arg
    raise ValueError(f"unfreeze {spec!r} must be 'all', 'top:N' (N >= 1) or 'from:LAYER_NAME'")


def select_unfrozen(layer_names: list[str], spec: str) -> list[str]:
    """The base layers (by name, in order) that ``unfreeze`` trains; a pure function.

    Args:
        layer_names: The base model's layers in order, input layer excluded.
        spec: See ``parse_unfreeze``.

    Raises:
        ValueError: ``top:N`` with N above the number of layers, or an unknown layer name (the
            message suggests the closest names).
    """
    kind, arg = parse_unfreeze(spec)
    if kind == "all":
        return list(layer_names)
    if kind == "top":
        if arg > len(layer_names):
            raise ValueError(f"unfreeze top:{arg} asks for more layers than the base model has ({len(layer_names)})")
        return list(layer_names[-arg:])
    if arg not in layer_names:
        close = difflib.get_close_matches(arg, layer_names, n=3)
        raise ValueError(f"unfreeze from:{arg}: the base model has no layer {arg!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    return list(layer_names[layer_names.index(arg):])


def is_pretrained(settings: "FinetuneSettings") -> bool:
    """Whether the base starts from trained weights (``base_weights`` other than ``none``)."""
    return settings.base_weights.lower() != "none"


def set_trainable(base: Any, spec: str | None, keep_batchnorm_frozen: bool = True) -> list[str]:
    """Freezes the whole base (``spec`` None) or unfreezes the layers ``select_unfrozen`` picks,
    BatchNormalization layers excepted unless ``keep_batchnorm_frozen`` is False (a base without
    pretrained weights has no statistics worth keeping). Returns the names of the trainable layers."""
    import keras

    layers = [layer for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]
    if spec is None:
        base.trainable = False
        return []
    chosen = set(select_unfrozen([layer.name for layer in layers], spec))
    base.trainable = True  # the container's flag gates its layers': set it first
    trainable = []
    for layer in layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = layer.name in chosen and not (is_bn and keep_batchnorm_frozen)
        if layer.trainable:
            trainable.append(layer.name)
    return trainable


# ---------------------------------------------------------------------------------------------
# Data


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


def make_dataset(files: list[str], tft_output: Any, batch_size: int, shuffle_seed: int | None = None, cache: bool = False):
    """``tf.data.Dataset`` of ``(image, label)`` batches with the transform graph applied.

    Yields: ``image`` float32 ``[batch, size, size, 3]`` (scaled for the base model),
    ``label`` int64 ``[batch]`` (vocabulary index). ``shuffle_seed`` None keeps file order.
    """
    import tensorflow as tf

    ds = _transformed(files, tft_output, shuffle_seed if not cache else None, cache)
    if shuffle_seed is not None and cache:
        ds = ds.shuffle(_SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _transformed(files: list[str], tft_output: Any, shuffle_seed: int | None, cache: bool):
    """Unbatched ``(image, label)`` examples, decoded in batches of 64 by the transform graph."""
    import tensorflow as tf

    layer = tft_output.transform_features_layer()
    spec = tft_output.raw_feature_spec()
    ds = tf.data.TFRecordDataset(files)
    if shuffle_seed is not None:
        ds = ds.shuffle(_SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(64).map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda raw: layer(raw), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda t: (t[IMAGE_KEY], t[LABEL_KEY])).unbatch()
    return ds.cache() if cache else ds


def epoch_ordered(examples: Any, batch_size: int, seed: int, first_epoch: int, epochs: int, shuffle: bool):
    """Batches for epochs ``first_epoch .. epochs - 1``, each epoch shuffled by ``seed + epoch``.

    Why: the order of epoch e depends only on e, so a run resumed at epoch e after a crash sees
    exactly the batches an uninterrupted run would have seen. Batches never straddle epochs.
    """
    import tensorflow as tf

    ds = None
    for epoch in range(first_epoch, epochs):
        one = examples.shuffle(_SHUFFLE_BUFFER, seed=seed * 1000 + epoch, reshuffle_each_iteration=False) if shuffle else examples
        one = one.batch(batch_size)
        ds = one if ds is None else ds.concatenate(one)
    if ds is None:
        raise ValueError(f"no epoch left to train: first_epoch {first_epoch} >= epochs {epochs}")
    return ds.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# Model


def _keras_weight_layout(model: Any) -> list[tuple[str, Any]]:
    """``(name in a .weights.h5 file, layer)`` for layers with weights, in file order.

    Keras 3 keys a weights file by each layer's class name in snake case, numbered in the order
    the model lists its layers (``conv2d``, ``conv2d_1``, ...; keras/src/saving/saving_lib.py).
    """
    from keras.src.utils.naming import to_snake_case

    counts: dict[str, int] = {}
    out = []
    for layer in model.layers:
        base = to_snake_case(type(layer).__name__)
        n = counts.get(base, 0)
        counts[base] = n + 1
        if layer.weights:
            out.append((base if n == 0 else f"{base}_{n}", layer))
    return out


def check_weights_file(model: Any, path: str, source: str) -> None:
    """Compares a ``.weights.h5`` file with ``model`` before loading it.

    Raises:
        ValueError: names the first layer whose weights are missing or shaped differently, with
            both shapes (Keras' own error lists whole arrays and no layer name).
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"base_weights file {source!r} is not a Keras .weights.h5 file (HDF5): {e}") from None
    with f:
        if "layers" not in f:
            raise ValueError(f"weights file {source!r} is not a Keras 3 .weights.h5 file (no 'layers' group)")
        stored = f["layers"]
        for key, layer in _keras_weight_layout(model):
            if key not in stored or "vars" not in stored[key]:
                raise ValueError(f"weights file {source!r} has no weights for layer {layer.name!r} (expected entry {key!r})")
            saved = stored[key]["vars"]
            if len(saved) != len(layer.weights):
                raise ValueError(
                    f"weights file {source!r}: layer {layer.name!r} has {len(saved)} weight arrays, the model expects {len(layer.weights)}"
                )
            for i, w in enumerate(layer.weights):
                if tuple(saved[str(i)].shape) != tuple(w.shape):
                    raise ValueError(
                        f"weights file {source!r} does not fit layer {layer.name!r} ({w.path}): the file has shape "
                        f"{tuple(saved[str(i)].shape)}, the model expects {tuple(w.shape)}"
                    )


def load_base_model(settings: FinetuneSettings, image_size: int, scratch_dir: str) -> Any:
    """Builds the base model and loads its weights from ``settings.base_weights``.

    Raises:
        FileNotFoundError: the weights file does not exist.
        ValueError: the file is not a weights file or model (names it), the weights do not fit
            the architecture (names the layer and both shapes), or a ``.keras`` model holds no
            layer with the base model's name.
    """
    source = settings.base_weights
    if source.lower() in ("imagenet", "none"):
        return base_models.build_base_model(
            settings.base_model, image_size, "imagenet" if source.lower() == "imagenet" else None, settings.width_multiplier
        )
    path = storage.fetch_to_local(source, scratch_dir)
    base = base_models.build_base_model(settings.base_model, image_size, None, settings.width_multiplier)
    if path.endswith(".keras"):
        _load_from_keras_model(base, path, source)
        return base
    check_weights_file(base, path, source)
    base.load_weights(path)
    return base


def _load_from_keras_model(base: Any, path: str, source: str) -> None:
    """Copies the base's weights out of a saved ``.keras`` model: either the base itself or a
    classifier that contains it as a layer (e.g. a previous run's ``model.keras``)."""
    import keras

    try:
        saved = keras.models.load_model(path, compile=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"base_weights file {source!r} is not a saved Keras model (.keras): {e}") from None
    candidate = saved if saved.name == base.name else next((l for l in saved.layers if l.name == base.name), None)
    if candidate is None:
        names = [l.name for l in saved.layers][:10]
        raise ValueError(f"model file {source!r} holds no base model {base.name!r} (its layers: {names})")
    for mine, theirs in zip(base.weights, candidate.weights):
        if tuple(mine.shape) != tuple(theirs.shape):
            raise ValueError(f"model file {source!r} does not fit {mine.path}: shape {tuple(theirs.shape)} vs expected {tuple(mine.shape)}")
    if len(base.weights) != len(candidate.weights):
        raise ValueError(f"model file {source!r}: base {base.name!r} has {len(candidate.weights)} weights, expected {len(base.weights)}")
    base.set_weights(candidate.get_weights())


def _augmentation(names: tuple[str, ...], scaling: str, seed: int) -> Any:
    import keras

    # RandomContrast clips to its value range: give it the range of the scaled pixels.
    value_range = {"tf": (-1.0, 1.0), "raw": (0.0, 255.0), "caffe": (-123.68, 151.061)}[scaling]
    layers = {
        "flip": lambda: keras.layers.RandomFlip("horizontal", seed=seed),
        "rotation": lambda: keras.layers.RandomRotation(0.1, fill_mode="reflect", seed=seed),
        "zoom": lambda: keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed),
        "contrast": lambda: keras.layers.RandomContrast(0.2, value_range=value_range, seed=seed),
    }
    return keras.Sequential([layers[n]() for n in names], name="augmentation")


def build_classifier(base: Any, num_classes: int, settings: FinetuneSettings | float = 0.2) -> Any:
    """The base model (frozen) under a new head.

    Layers: input -> [augmentation, training only] -> base(training=False) -> ``head_pool``
    -> [``head_dense_i`` (ReLU) -> ``head_dropout_i``]* -> ``head_dropout`` ->
    ``head_classifier`` (softmax, float32 also under mixed precision).

    Args:
        base: A ``keras.applications`` model without top.
        num_classes: Output classes, >= 2.
        settings: ``FinetuneSettings`` (or a dropout rate, for a plain linear head).

    Returns:
        ``keras.Model``: float32 ``[batch, H, W, 3]`` -> probabilities ``[batch, num_classes]``.
    """
    import keras

    if not isinstance(settings, FinetuneSettings):
        settings = FinetuneSettings(dropout=float(settings), base_weights="none")
    regularizer = keras.regularizers.L1L2(l1=settings.l1, l2=settings.l2) if (settings.l1 or settings.l2) else None
    set_trainable(base, None)
    inputs = keras.Input(shape=base.input_shape[1:], name=IMAGE_KEY)
    x = inputs
    if settings.augmentation:
        x = _augmentation(settings.augmentation, base_models.get_spec(settings.base_model).scaling, settings.seed)(x)
    # training=False keeps BatchNormalization in inference mode even when the base is unfrozen
    # (Keras transfer-learning guide): its statistics belong to the pretraining data. A base
    # without pretrained weights has no such statistics (mean 0, variance 1 would shrink its
    # activations to ~1e-12 through MobileNetV2's 52 BN layers): there BN trains as usual.
    x = base(x, training=False) if is_pretrained(settings) else base(x)
    pool = keras.layers.GlobalAveragePooling2D if settings.pooling == "avg" else keras.layers.GlobalMaxPooling2D
    x = pool(name="head_pool")(x)
    for i, units in enumerate(settings.dense_units):
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer, name=f"head_dense_{i}")(x)
        x = keras.layers.Dropout(settings.dropout, name=f"head_dropout_{i}")(x)
    x = keras.layers.Dropout(settings.dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=regularizer, dtype="float32", name="head_classifier"
    )(x)
    return keras.Model(inputs, outputs, name=f"{base.name}_classifier")


def head_model(model: Any) -> Any:
    """A model from pooled base features to probabilities that *shares* the head layers of
    ``model`` (training it trains ``model``'s head): the fast path's model."""
    import keras

    pool = model.get_layer("head_pool")
    inputs = keras.Input(shape=pool.output.shape[1:], name="features")
    x = inputs
    for layer in model.layers[model.layers.index(pool) + 1:]:
        x = layer(x)
    return keras.Model(inputs, x, name="head")


def make_optimizer(settings: FinetuneSettings, learning_rate: Any) -> Any:
    """A Keras optimizer from ``settings`` with ``learning_rate`` (a float or a schedule)."""
    import keras

    clip = {"clipnorm": settings.clipnorm} if settings.clipnorm else {}
    if settings.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate, **clip)
    if settings.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=settings.weight_decay, **clip)
    if settings.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=settings.momentum, nesterov=settings.nesterov, **clip)
    return keras.optimizers.RMSprop(learning_rate, **clip)


def make_schedule(settings: FinetuneSettings, peak: float, epochs: int, steps_per_epoch: int) -> Any:
    """The learning rate of one phase: a float (``constant``, ``plateau``) or a Keras schedule."""
    import keras

    if settings.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(peak, decay_steps=steps_per_epoch, decay_rate=settings.decay_rate)
    if settings.lr_schedule == "cosine":
        total = max(1, epochs * steps_per_epoch)
        warmup = min(settings.warmup_epochs * steps_per_epoch, total - 1)
        if warmup:
            return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup, warmup_target=peak, warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total)
    return peak


# ---------------------------------------------------------------------------------------------
# Devices


def configure_devices(settings: FinetuneSettings) -> tuple[Any, dict[str, Any]]:
    """The distribution strategy and precision for the visible devices.

    With GPUs: ``MirroredStrategy`` over all of them (one GPU: the default strategy) and, unless
    ``mixed_precision`` is ``off``, the ``mixed_float16`` policy (float32 variables and outputs;
    Micikevicius et al. 2018). Without a GPU nothing changes (``mixed_precision=on`` without a GPU
    raises: float16 on CPUs is slower, not faster).

    Returns:
        ``(strategy, info)`` with ``info`` = ``{"gpus", "replicas", "mixed_precision", "xla"}``.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if settings.mixed_precision == "on" and not gpus:
        raise ValueError("mixed_precision 'on' needs a GPU; none is visible (use 'auto' or 'off')")
    mixed = bool(gpus) and settings.mixed_precision != "off"
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, {"gpus": len(gpus), "replicas": strategy.num_replicas_in_sync, "mixed_precision": mixed, "xla": settings.xla}


# ---------------------------------------------------------------------------------------------
# Callbacks


def _progress_callback(num_examples: int, phase: str):
    import keras

    class EpochProgress(keras.callbacks.Callback):
        """Prints one line per epoch: phase, loss, accuracy, eval metrics, learning rate, images/s."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.perf_counter() - self._start
            print(
                f"{phase} epoch {epoch + 1}/{self.params['epochs']}: loss {logs.get('loss', float('nan')):.4f} "
                f"accuracy {logs.get('accuracy', float('nan')):.4f} "
                f"eval_loss {logs.get('val_loss', float('nan')):.4f} eval_accuracy {logs.get('val_accuracy', float('nan')):.4f} "
                f"lr {_current_lr(self.model):.3g} {num_examples / seconds:.0f} images/s",
                flush=True,
            )

    return EpochProgress()


def _current_lr(model: Any) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def _history_callback(path: str, phase: str):
    """Appends each finished epoch to a JSON-lines file, which survives a restart (Keras'
    History only knows the epochs of the current ``fit`` call)."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            row = {"phase": phase, "epoch": epoch + 1, "lr": _current_lr(self.model), **{k: float(v) for k, v in (logs or {}).items()}}
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")

    return EpochLog()


def _read_history(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _fit_phase(
    model: Any,
    train: Any,
    validation: Any,
    phase: str,
    epochs: int,
    steps_per_epoch: int,
    num_train: int,
    checkpoint_dir: str,
    settings: FinetuneSettings,
    class_weight: dict[int, float] | None,
    tensorboard_dir: str,
) -> None:
    """One ``fit`` call with backups, early stopping, progress lines and the epoch log.

    ``train`` is a callable ``first_epoch -> dataset`` yielding the batches of the epochs from
    ``first_epoch`` on (see ``epoch_ordered``), so a resumed phase sees the batches an
    uninterrupted run would.
    """
    import keras

    history_file = os.path.join(checkpoint_dir, "history.jsonl")
    backup_dir = os.path.join(checkpoint_dir, phase)
    # BackupAndRestore restores the weights and the epoch (not the optimizer's moments) from
    # its own record; the data must start at that same epoch.
    first = 0
    if os.path.exists(os.path.join(backup_dir, "training_metadata.json")):
        with open(os.path.join(backup_dir, "training_metadata.json")) as f:
            first = int(json.load(f)["epoch"])
        print(f"{phase}: resuming after epoch {first} of {epochs} from {backup_dir}", flush=True)
    backup = keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=True)
    # Order matters: the backup is written before the epoch is logged and announced.
    callbacks = [backup, _history_callback(history_file, phase), _progress_callback(num_train, phase),
                 keras.callbacks.TensorBoard(os.path.join(tensorboard_dir, phase), profile_batch=0)]
    if settings.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=settings.early_stopping_patience, restore_best_weights=True
        ))
    if settings.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=2, min_lr=1e-7))
    model.fit(
        train(first),
        validation_data=validation,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        class_weight=class_weight,
        verbose=0,
        callbacks=callbacks,
    )


# ---------------------------------------------------------------------------------------------
# Export


def inference_model(model: Any) -> Any:
    """``model`` without its augmentation layers (they only act in training, and their random
    seed state cannot be exported in a SavedModel); the other layers and weights are shared."""
    import keras

    if "augmentation" not in [layer.name for layer in model.layers]:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name=IMAGE_KEY)
    x = inputs
    for layer in model.layers[1:]:
        if layer.name == "augmentation":
            continue
        # The base is called in inference mode, as in build_classifier.
        x = layer(x, training=False) if isinstance(layer, keras.Model) else layer(x)
    return keras.Model(inputs, x, name=model.name)


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

    model = inference_model(model)

    class ServingModule(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.tft_layer = tft_output.transform_features_layer()
            self.class_names = tf.Variable(labels, dtype=tf.string, trainable=False, name=CLASS_NAMES)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
        def serve(self, image_bytes):
            # The argument's name is the signature's input key (SERVING_INPUT).
            features = self.tft_layer({IMAGE_KEY: image_bytes})
            probabilities = tf.cast(self.model(features[IMAGE_KEY], training=False), tf.float32)
            class_id = tf.argmax(probabilities, axis=-1)
            return {
                OUTPUT_PROBABILITIES: probabilities,
                OUTPUT_CLASS_ID: class_id,
                OUTPUT_LABEL: tf.gather(self.class_names, class_id),
                OUTPUT_CONFIDENCE: tf.reduce_max(probabilities, axis=-1),
            }

    module = ServingModule()
    tf.saved_model.save(module, export_dir, signatures={SERVING_SIGNATURE: module.serve})


def training_markdown(summary: dict[str, Any]) -> str:
    """The training curves as a Markdown table (one row per epoch), for the KFP UI."""
    lines = [
        "# Training",
        "",
        f"Base model `{summary['settings']['base_model']}` ({summary['settings']['base_weights']}), "
        f"{len(summary['labels'])} classes, {summary['train_examples']} train / {summary['eval_examples']} eval images; "
        f"head phase: {'fast path (features computed once)' if summary['fast_path'] else 'model.fit on images'}; "
        f"{summary['devices']['replicas']} replica(s), mixed precision {summary['devices']['mixed_precision']}.",
        "",
        "| phase | epoch | loss | accuracy | eval loss | eval accuracy | learning rate |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["epochs"]:
        lines.append(
            f"| {r['phase']} | {r['epoch']} | {r.get('loss', float('nan')):.4f} | {r.get('accuracy', float('nan')):.4f} | "
            f"{r.get('val_loss', float('nan')):.4f} | {r.get('val_accuracy', float('nan')):.4f} | {r['lr']:.3g} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The step


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


def _extract_features(forward: Any, examples: Any, count: int, path: str, batch_size: int) -> tuple[Any, Any]:
    """Pooled base outputs (``forward``, see ``feature_function``) and labels of ``examples``, in one pass.

    The features go to a ``.npy`` file written as they are computed (memory-mapped: a dataset
    larger than memory streams through), the labels to ``<path>.labels.npy``. Complete files
    are reused (a resumed step does not compute them again).

    Returns:
        ``(features float32 [count, channels] (memory map), labels int64 [count])``.
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


@contextlib.contextmanager
def _output_folders(*paths: str) -> Iterator[None]:
    """Creates ``paths``; if the block fails, removes those it created that still hold no file
    (a backup or cached features from a started run are kept for the restart)."""
    created = [p for p in paths if not os.path.exists(p)]
    for p in paths:
        os.makedirs(p, exist_ok=True)
    try:
        yield
    except BaseException:
        for p in reversed(created):
            if os.path.isdir(p) and not any(files for _, _, files in os.walk(p)):
                shutil.rmtree(p, ignore_errors=True)
        raise


def run_finetune(examples_dir: str, transform_dir: str, model_dir: str, settings: FinetuneSettings) -> dict[str, Any]:
    """Trains the head (and optionally the top of the base) and exports the model.

    Resuming: per-epoch backups (``keras.callbacks.BackupAndRestore``), a per-phase
    weights file once a phase completes, the epoch log and the fast path's features all live in
    the checkpoint folder; when the step is killed (a preempted node) and started again with the
    same arguments, it skips finished phases and continues after the last completed epoch, with
    the very batches an uninterrupted run would have used.

    Args:
        examples_dir: The preprocess step's examples folder.
        transform_dir: The preprocess step's transform graph folder.
        model_dir: Output folder (see the module docstring for its content).
        settings: ``FinetuneSettings``.

    Returns:
        What ``training.json`` holds: ``settings``, ``labels``, ``image_size``, ``history``
        ({metric: per-epoch list over both phases}), ``epochs`` (per-epoch rows with ``phase``
        and ``lr``), ``train_examples``, ``eval_examples``, ``class_weight``, ``fast_path``,
        ``unfrozen_layers``, ``devices``, ``seconds``, ``phase_seconds``.

    Raises:
        FileNotFoundError: a split or the weights file is missing.
        ValueError: invalid settings, image size below the base model's minimum, weights that do
            not fit, fewer than two classes, an ``unfreeze`` naming no layer.
    """
    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    start = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    strategy, devices = configure_devices(settings)
    tft_output = tft.TFTransformOutput(transform_dir)
    labels = vocabulary(tft_output)
    if len(labels) < 2:
        raise ValueError(f"the label vocabulary in {transform_dir!r} has {len(labels)} class(es); need at least 2")
    image_size = int(tft_output.transformed_feature_spec()[IMAGE_KEY].shape[0])
    train_files, eval_files = split_files(examples_dir, "train"), split_files(examples_dir, "eval")
    num_train, num_eval = count_examples(train_files), count_examples(eval_files)
    if num_train == 0:
        raise ValueError(f"the train split in {examples_dir!r} is empty")
    global_batch = settings.batch_size * devices["replicas"]
    steps = math.ceil(num_train / global_batch)
    class_weight = balanced_class_weights(label_counts(train_files, tft_output, len(labels))) if settings.class_weight == "balanced" else None

    checkpoint_dir = settings.checkpoint_dir or os.path.join(model_dir, CHECKPOINT_DIR)
    tensorboard_dir = os.path.join(model_dir, TENSORBOARD_DIR)
    cache = (num_train + num_eval) * image_size * image_size * 3 * 4 < _MEMORY_CACHE_LIMIT_BYTES
    # No shuffling here: epoch_ordered shuffles per epoch, deterministically (exact resumes), and
    # the fast path reads features and labels in this same order.
    train_examples = _transformed(train_files, tft_output, None, cache)
    eval_examples = _transformed(eval_files, tft_output, None, cache)
    eval_batches = eval_examples.batch(global_batch) if num_eval else None
    one_hot = lambda x, y: (x, tf.one_hot(y, len(labels)))  # noqa: E731 (label smoothing needs one-hot targets)

    with strategy.scope():
        with tempfile.TemporaryDirectory(prefix="weights-") as scratch:
            base = load_base_model(settings, image_size, scratch)
        if not is_pretrained(settings):
            # Trained from scratch on a small dataset, BatchNormalization's default momentum
            # (0.999 in MobileNets) leaves its moving statistics unconverged (TRAPS.md).
            base_models.set_batchnorm_momentum(base, 0.9)
        model = build_classifier(base, len(labels), settings)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)

    # Created only now that the settings, data and weights have been accepted: a run refused
    # for bad input leaves no empty output or checkpoint folder behind.
    with _output_folders(model_dir, checkpoint_dir):
        fast = settings.fast_path and not settings.augmentation and settings.epochs > 0
        phase_seconds: dict[str, float] = {}
        unfrozen: list[str] = []
        head_done = os.path.join(checkpoint_dir, "head.weights.h5")
        if settings.epochs > 0 and os.path.exists(head_done):
            print(f"head phase: already complete, loading {head_done}", flush=True)
            model.load_weights(head_done)
        elif settings.epochs > 0:
            t0 = time.perf_counter()
            lr = make_schedule(settings, settings.learning_rate, settings.epochs, steps)
            if fast:
                # The frozen base in inference mode is a fixed function: compute it once.
                forward = feature_function(model)
                train_x, train_y = _extract_features(forward, train_examples, num_train, os.path.join(checkpoint_dir, "train_features.npy"), 256)
                eval_feats = None
                if num_eval:
                    eval_x, eval_y = _extract_features(forward, eval_examples, num_eval, os.path.join(checkpoint_dir, "eval_features.npy"), 256)
                    eval_feats = tf.data.Dataset.from_tensor_slices((np.asarray(eval_x), eval_y)).batch(global_batch).map(one_hot)
                feats = tf.data.Dataset.from_tensor_slices((np.asarray(train_x), train_y))
                with strategy.scope():
                    head = head_model(model)
                    head.compile(optimizer=make_optimizer(settings, lr), loss=loss, metrics=["accuracy"], jit_compile=settings.xla)
                _fit_phase(
                    head, lambda first: epoch_ordered(feats, global_batch, settings.seed, first, settings.epochs, True).map(one_hot),
                    eval_feats, "head", settings.epochs, steps, num_train, checkpoint_dir, settings, class_weight, tensorboard_dir,
                )
            else:
                with strategy.scope():
                    model.compile(optimizer=make_optimizer(settings, lr), loss=loss, metrics=["accuracy"], jit_compile=settings.xla)
                _fit_phase(
                    model, lambda first: epoch_ordered(train_examples, global_batch, settings.seed, first, settings.epochs, True).map(one_hot),
                    eval_batches.map(one_hot) if eval_batches is not None else None,
                    "head", settings.epochs, steps, num_train, checkpoint_dir, settings, class_weight, tensorboard_dir,
                )
            model.save_weights(head_done + ".partial.weights.h5")
            os.replace(head_done + ".partial.weights.h5", head_done)
            phase_seconds["head"] = round(time.perf_counter() - t0, 2)

        if settings.fine_tune_epochs > 0:
            t0 = time.perf_counter()
            with strategy.scope():
                unfrozen = set_trainable(base, settings.unfreeze, keep_batchnorm_frozen=is_pretrained(settings))
                # A changed `trainable` only takes effect when the model is compiled again.
                lr = make_schedule(settings, settings.fine_tune_learning_rate, settings.fine_tune_epochs, steps)
                model.compile(optimizer=make_optimizer(settings, lr), loss=loss, metrics=["accuracy"], jit_compile=settings.xla)
            bn = "BatchNormalization frozen" if is_pretrained(settings) else "BatchNormalization trained (no pretrained statistics)"
            print(f"fine-tune phase: {len(unfrozen)} base layers unfrozen ({settings.unfreeze}), {bn}", flush=True)
            _fit_phase(
                model, lambda first: epoch_ordered(train_examples, global_batch, settings.seed + 1, first, settings.fine_tune_epochs, True).map(one_hot),
                eval_batches.map(one_hot) if eval_batches is not None else None,
                "fine_tune", settings.fine_tune_epochs, steps, num_train, checkpoint_dir, settings, class_weight, tensorboard_dir,
            )
            phase_seconds["fine_tune"] = round(time.perf_counter() - t0, 2)

        model.save(os.path.join(model_dir, KERAS_FILE))
        export_serving(model, tft_output, labels, os.path.join(model_dir, SERVING_DIR))
        rows = _read_history(os.path.join(checkpoint_dir, "history.jsonl"))
        history: dict[str, list[float]] = {}
        for r in rows:
            for k, v in r.items():
                if k not in ("phase", "epoch"):
                    history.setdefault(k, []).append(v)
        summary = {
            "settings": dataclasses.asdict(settings),
            "labels": labels,
            "image_size": image_size,
            "history": history,
            "epochs": rows,
            "train_examples": num_train,
            "eval_examples": num_eval,
            "class_weight": class_weight,
            "fast_path": fast,
            "unfrozen_layers": len(unfrozen),
            "devices": devices,
            "phase_seconds": phase_seconds,
            "seconds": round(time.perf_counter() - start, 2),
        }
        with open(os.path.join(model_dir, TRAINING_FILE), "w") as f:
            json.dump(summary, f, indent=2)
        with open(os.path.join(model_dir, TRAINING_REPORT_FILE), "w") as f:
            f.write(training_markdown(summary))
        # The step is complete: backups and cached features are not part of the model artifact.
        if not settings.checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return summary


def run_finetune_step(
    examples_dir: str, transform_graph_dir: str, model_dir: str, settings: FinetuneSettings, report_path: str | None = None
) -> dict[str, Any]:
    """The finetune step: ``run_finetune``, plus the training report copied to ``report_path``."""
    summary = run_finetune(examples_dir, transform_graph_dir, model_dir, settings)
    if report_path:
        shutil.copyfile(os.path.join(model_dir, TRAINING_REPORT_FILE), report_path)
    return summary
