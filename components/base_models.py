"""Base models (backbones) from ``keras.applications`` and the input each one expects.

Each entry records the Keras constructor, the pixel scaling the architecture was pretrained with
and its minimum input size. The scaling is applied inside the tf.Transform graph (so the serving
signature and training see the same pixels); it reproduces
``keras.applications.<family>.preprocess_input`` (the reference used by the tests):

* ``tf``:    ``x / 127.5 - 1``                      -> float32 in [-1, 1]  (MobileNetV2, ResNetV2)
* ``caffe``: RGB -> BGR, minus the ImageNet channel means (103.939, 116.779, 123.68), no scaling
             (ResNet50, VGG16)
* ``raw``:   pixels kept in [0, 255]; the model holds its own ``Rescaling``/``Normalization``
             layers (MobileNetV3, EfficientNet, EfficientNetV2, ConvNeXt with
             ``include_preprocessing=True``, Keras' default for them)

Minimum input sizes are those ``keras.applications`` enforces (32 px for every family here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

SCALING_MODES = ("tf", "caffe", "raw")

# ImageNet channel means in BGR order, from keras.applications.imagenet_utils (mode="caffe").
_CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)


@dataclasses.dataclass(frozen=True)
class BaseModelSpec:
    """How to build one base model and feed it.

    Attributes:
        name: The name users pass as ``base_model`` (snake_case, e.g. ``mobilenet_v2``).
        constructor: Name of the ``keras.applications`` function, e.g. ``MobileNetV2``.
        scaling: One of ``SCALING_MODES`` (see the module docstring).
        min_size: Smallest input height/width in pixels Keras accepts for this family.
        has_width_multiplier: Whether the constructor takes ``alpha`` (MobileNets).
    """

    name: str
    constructor: str
    scaling: str
    min_size: int = 32
    has_width_multiplier: bool = False


_SPECS = [
    BaseModelSpec("mobilenet_v2", "MobileNetV2", "tf", has_width_multiplier=True),
    BaseModelSpec("mobilenet_v3_small", "MobileNetV3Small", "raw", has_width_multiplier=True),
    BaseModelSpec("mobilenet_v3_large", "MobileNetV3Large", "raw", has_width_multiplier=True),
    BaseModelSpec("resnet50", "ResNet50", "caffe"),
    BaseModelSpec("resnet50_v2", "ResNet50V2", "tf"),
    BaseModelSpec("vgg16", "VGG16", "caffe"),
    BaseModelSpec("efficientnet_b0", "EfficientNetB0", "raw"),
    BaseModelSpec("efficientnet_b1", "EfficientNetB1", "raw"),
    BaseModelSpec("efficientnet_b2", "EfficientNetB2", "raw"),
    BaseModelSpec("efficientnet_b3", "EfficientNetB3", "raw"),
    BaseModelSpec("efficientnet_v2_b0", "EfficientNetV2B0", "raw"),
    BaseModelSpec("efficientnet_v2_s", "EfficientNetV2S", "raw"),
    BaseModelSpec("convnext_tiny", "ConvNeXtTiny", "raw"),
]
BASE_MODELS: dict[str, BaseModelSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> BaseModelSpec:
    """Returns the spec of base model ``name``.

    Raises:
        ValueError: ``name`` is not a known base model; the message lists the known names.
    """
    try:
        return BASE_MODELS[name]
    except KeyError:
        raise ValueError(
            f"base_model {name!r} is not supported; choose one of: {', '.join(sorted(BASE_MODELS))}"
        ) from None


def check_image_size(name: str, image_size: int) -> None:
    """Raises ValueError when ``image_size`` (pixels, square) is below the base model's minimum."""
    spec = get_spec(name)
    if image_size < spec.min_size:
        raise ValueError(
            f"image_size {image_size} is below the minimum input size {spec.min_size} px "
            f"of base model {name!r}"
        )


def scale_pixels(images: Any, scaling: str) -> Any:
    """Scales RGB pixels in [0, 255] the way the base model was pretrained.

    Args:
        images: float32 tensor ``[batch, height, width, 3]`` (RGB, values in [0, 255]).
        scaling: One of ``SCALING_MODES``.

    Returns:
        float32 tensor of the same shape (ranges in the module docstring).

    Raises:
        ValueError: unknown ``scaling``.
    """
    import tensorflow as tf

    if scaling == "tf":
        return images / 127.5 - 1.0
    if scaling == "caffe":
        return images[..., ::-1] - tf.constant(_CAFFE_BGR_MEANS, dtype=images.dtype)
    if scaling == "raw":
        return tf.identity(images)
    raise ValueError(f"scaling {scaling!r} is not one of {SCALING_MODES}")


def build_base_model(
    name: str,
    image_size: int,
    weights: str | None,
    width_multiplier: float = 1.0,
) -> Any:
    """Builds a headless ``keras.applications`` base model.

    Args:
        name: A key of ``BASE_MODELS``.
        image_size: Input height and width in pixels (square input, 3 channels).
        weights: ``"imagenet"`` (downloaded by Keras; needs internet), or ``None`` for random
            initialisation (weights files are loaded afterwards by the caller).
        width_multiplier: MobileNet ``alpha`` (e.g. 0.35, 0.5, 0.75, 1.0); must be 1.0 for
            families without one.

    Returns:
        A ``keras.Model`` mapping ``[batch, image_size, image_size, 3]`` float32 to a feature map
        (``include_top=False``, no pooling).

    Raises:
        ValueError: unknown name, image size below the minimum, or a width multiplier given to
            a family that has none.
    """
    import keras

    spec = get_spec(name)
    check_image_size(name, image_size)
    kwargs: dict[str, Any] = {
        "input_shape": (image_size, image_size, 3),
        "include_top": False,
        "weights": weights,
    }
    if spec.has_width_multiplier:
        kwargs["alpha"] = width_multiplier
    elif width_multiplier != 1.0:
        raise ValueError(
            f"width_multiplier {width_multiplier} is only supported by MobileNet base models, "
            f"not {name!r}"
        )
    constructor: Callable[..., Any] = getattr(keras.applications, spec.constructor)
    return constructor(**kwargs)


def set_batchnorm_momentum(model: Any, momentum: float) -> int:
    """Sets the momentum of every BatchNormalization layer of ``model``; returns how many.

    Why: MobileNets ship momentum 0.999, tuned for ImageNet-scale runs. Trained from scratch on a
    few hundred images (a few hundred steps) the moving statistics do not converge and eval
    accuracy stays at chance while training accuracy reaches 0.99 (measured on this project's
    digits: MobileNetV2, about 750 images, 30 epochs, eval accuracy 0.20); with 0.9 eval accuracy
    was 0.96.
    """
    import keras

    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
    return count
