"""The finetune step's model: the base model and its weights, the head, freezing, optimizers.

The base is a ``keras.applications`` model without top (``components.base_models``), with
weights from ImageNet, a ``.weights.h5`` file (checked layer by layer before loading) or a saved
``.keras`` model that contains it. ``build_classifier`` puts it, frozen and in inference mode,
under a new head; ``set_trainable`` unfreezes the layers the fine-tune phase trains.
"""

from __future__ import annotations

import tempfile
import zipfile
from typing import Any, NamedTuple

from components import base_models, storage
from components.artifacts import IMAGE_KEY
from components.finetune.settings import FinetuneSettings, is_pretrained, select_unfrozen

# BatchNormalization momentum of a base trained from scratch (see build_model).
SCRATCH_BATCHNORM_MOMENTUM = 0.9
# The widths tried when a weights file does not fit (fitting_settings): those Keras documents
# for each family's alpha (keras.applications MobileNetV2, MobileNetV3Small/Large).
WIDTH_CANDIDATES = {
    "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    "mobilenet_v3_small": (0.75, 1.0),
    "mobilenet_v3_large": (0.75, 1.0),
}


class Classifier(NamedTuple):
    """The model of one run: ``base`` is a layer of ``model``; ``loss`` is what both phases
    compile with (categorical cross-entropy with the settings' label smoothing)."""

    base: Any
    model: Any
    loss: Any


def build_model(settings: FinetuneSettings, num_classes: int, image_size: int, strategy: Any) -> Classifier:
    """The base model with its weights under a new head, made in ``strategy``'s scope.

    A base without pretrained weights gets BatchNormalization momentum 0.9 instead of its own
    (0.999 in MobileNetV2 and V3): measured here, MobileNetV2 trained from scratch on about 750
    digit images for 30 epochs (about 700 steps) reached 0.99 training accuracy but chance (0.20)
    on eval data with 0.999, as the moving statistics had not converged, and 0.96 with 0.9.

    Args:
        settings: The step's settings.
        num_classes: Output classes, >= 2.
        image_size: Input height and width in pixels (at least the base model's minimum).
        strategy: A ``tf.distribute`` strategy (``training.configure_devices``).

    Raises:
        FileNotFoundError, ValueError: see ``load_base_model``.
    """
    import keras

    with strategy.scope():
        with tempfile.TemporaryDirectory(prefix="weights-") as scratch:
            base = load_base_model(settings, image_size, scratch)
        if not is_pretrained(settings):
            base_models.set_batchnorm_momentum(base, SCRATCH_BATCHNORM_MOMENTUM)
        model = build_classifier(base, num_classes, settings)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)
    return Classifier(base, model, loss)


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
        ValueError: names the first layer whose weights are missing, differ in number or are
            shaped differently, with both shapes (lists of shapes when the number differs;
            Keras' own error lists whole arrays and no layer name).
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
            expected = [tuple(w.shape) for w in layer.weights]
            if key not in stored or "vars" not in stored[key]:
                raise ValueError(
                    f"weights file {source!r} has no weights for layer {layer.name!r} (entry {key!r}); the model expects shapes {expected}"
                )
            saved = stored[key]["vars"]
            if len(saved) != len(layer.weights):
                found = [tuple(saved[str(i)].shape) for i in range(len(saved)) if str(i) in saved]
                raise ValueError(
                    f"weights file {source!r} does not fit layer {layer.name!r}: the file has shapes {found}, the model expects {expected}"
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
    try:
        check_weights_file(base, path, source)
    except ValueError as e:
        fits = fitting_settings(path, source, (settings.base_model, settings.width_multiplier))
        if fits is None:
            raise
        raise ValueError(f"{e}; the file fits base_model {fits[0]!r} with width_multiplier {fits[1]}: "
                         f"set those (--base-model {fits[0]} --width-multiplier {fits[1]})") from None
    base.load_weights(path)
    return base


def fitting_settings(path: str, source: str, tried: tuple[str, float]) -> tuple[str, float] | None:
    """The ``(base_model, width_multiplier)`` whose layers a ``.weights.h5`` file fits exactly.

    The file's arrays do not name their architecture, but their shapes tell a MobileNet's width
    (the first convolution of MobileNetV2 has ``make_divisible(32 * alpha, 8)`` output
    channels, and every later layer scales alike). Each candidate of ``WIDTH_CANDIDATES`` (the
    family of ``tried`` first) is built at 32 px without weights (the shapes do not depend on
    the input size) and compared with the file by ``check_weights_file``.

    Args:
        path: A local ``.weights.h5`` file.
        source: Its name for messages.
        tried: The setting that did not fit (skipped).

    Returns:
        The first fitting candidate, or None (the file is not a MobileNet backbone at a listed
        width, or not a weights file).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "layers" not in f:
                return None
    except OSError:
        return None
    families = sorted(WIDTH_CANDIDATES, key=lambda family: family != tried[0])
    for family in families:
        for width in WIDTH_CANDIDATES[family]:
            if (family, width) == tried:
                continue
            candidate = base_models.build_base_model(family, base_models.get_spec(family).min_size, None, width)
            try:
                check_weights_file(candidate, path, source)
            except ValueError:
                continue
            return family, width
    return None


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


def base_layer_names(base: Any) -> list[str]:
    """The names of the base's layers in order, its input layer left out: what ``unfreeze``
    selects from (``settings.select_unfrozen``)."""
    import keras

    return [layer.name for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]


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
