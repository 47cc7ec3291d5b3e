"""The finetune step's settings and the pure decisions made from them.

``FinetuneSettings`` declares every setting once (``components.settings.Setting``: type,
default, help, check); the pipeline parameters, CLI flags and README table derive from it.
``parse_unfreeze`` / ``select_unfrozen`` decide which base layers the fine-tune phase trains,
``is_pretrained`` / ``fast_path_applies`` decide how the recipe runs. Nothing here imports
TensorFlow or Keras.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from components import base_models
from components.settings import (
    BASE_MODEL, Setting, above, at_least, comma_list, from_parameters, in_range, one_of, validate,
)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "exponential", "cosine", "plateau")
POOLINGS = ("avg", "max")
AUGMENTATIONS = ("flip", "rotation", "zoom", "contrast")
CLASS_WEIGHTS = ("none", "balanced")
MIXED_PRECISION = ("auto", "on", "off")


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


def is_pretrained(settings: FinetuneSettings) -> bool:
    """Whether the base starts from trained weights (``base_weights`` other than ``none``)."""
    return settings.base_weights.lower() != "none"


def fast_path_applies(settings: FinetuneSettings) -> bool:
    """Whether the head phase trains on the base's outputs computed once (the fast path).

    It applies when ``fast_path`` is on, a head phase runs (``epochs > 0``) and nothing random
    runs before the base (no ``augmentation``): the frozen base in inference mode is then a
    fixed function of each image.
    """
    return settings.fast_path and not settings.augmentation and settings.epochs > 0

