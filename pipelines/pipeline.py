"""The fine-tuning pipeline: preprocess -> finetune -> evaluate -> (if blessed) push.

``make_pipeline(image)`` only wires tasks: every environment-specific value (data, registry,
accelerator) is a pipeline parameter, shown in the KFP UI's run form; the component image is
chosen when compiling. ``PARAMETERS`` documents each parameter for the CLI.

(No ``from __future__ import annotations`` here: KFP reads the real annotation objects.)
"""

import os
import typing
from typing import NamedTuple

from kfp import compiler, dsl

from components.image import COMPONENT_IMAGE
from components.kfp_components import build_components

PIPELINE_NAME = "kfp-finetune"

# name -> (type, default, help). A default of None means required. Kept in the order the KFP UI
# and `--help` show them.
PARAMETERS: dict = {
    # data and registry
    "data_uri": (str, None, "images: class folders, a CSV manifest (path,label) or TFRecord files; local path or gs://"),
    "registry_uri": (str, None, "model registry root (local folder or gs://bucket/prefix)"),
    "model_name": (str, "image-classifier", "registry model name"),
    "target_env": (str, "dev", "environment alias the pushed version is promoted to (and whose model is the champion)"),
    # preprocessing
    "image_size": (int, 224, "input height and width in pixels"),
    "eval_fraction": (float, 0.15, "share of each class in the eval split"),
    "test_fraction": (float, 0.15, "share of each class in the test split"),
    "split_salt": (str, "", "string mixed into the content hash that assigns splits"),
    "max_bad_fraction": (float, 0.01, "largest share of unusable input files that is skipped; more fails the run"),
    "min_images_per_class": (int, 5, "fewest usable images a class may have"),
    "beam_pipeline_args": (str, "", "Apache Beam options for preprocessing, e.g. '--runner=DataflowRunner --project=P'"),
    # base model and head
    "base_model": (str, "mobilenet_v2", "keras.applications base model (see components/base_models.py)"),
    "base_weights": (str, "imagenet", "'imagenet' (download), 'none', or a path / gs:// URI of a .weights.h5 or .keras file"),
    "width_multiplier": (float, 1.0, "MobileNet alpha (width multiplier); 1.0 for other families"),
    "pooling": (str, "avg", "global pooling of the base's features: avg or max"),
    "dense_units": (str, "", "hidden dense layers of the head, comma-separated units (e.g. '256,128'); empty: linear head"),
    "dropout": (float, 0.2, "dropout rate in the head, in [0, 1)"),
    "l1": (float, 0.0, "L1 penalty on the head's kernels"),
    "l2": (float, 0.0, "L2 penalty on the head's kernels"),
    "label_smoothing": (float, 0.0, "label smoothing, in [0, 1)"),
    "class_weight": (str, "none", "none, or balanced (weights from the train split's class counts)"),
    # the two phases
    "epochs": (int, 10, "head-phase epochs (base frozen)"),
    "learning_rate": (float, 0.001, "head-phase learning rate"),
    "fine_tune_epochs": (int, 0, "fine-tune-phase epochs (top of the base unfrozen); 0 skips the phase"),
    "fine_tune_learning_rate": (float, 1e-05, "fine-tune-phase learning rate (usually 10-100x lower)"),
    "unfreeze": (str, "all", "base layers the fine-tune phase trains: all, top:N or from:LAYER (BatchNormalization stays frozen)"),
    # optimization
    "optimizer": (str, "adam", "adam, adamw, sgd or rmsprop"),
    "momentum": (float, 0.9, "SGD momentum"),
    "nesterov": (bool, False, "SGD Nesterov momentum"),
    "weight_decay": (float, 0.004, "AdamW weight decay"),
    "lr_schedule": (str, "constant", "constant, exponential, cosine (with warmup_epochs) or plateau"),
    "warmup_epochs": (int, 0, "linear warm-up epochs of the cosine schedule"),
    "decay_rate": (float, 0.9, "per-epoch factor of the exponential schedule"),
    "clipnorm": (float, 0.0, "clip each gradient to this L2 norm; 0 = off"),
    "batch_size": (int, 32, "images per training step and GPU"),
    "early_stopping_patience": (int, 0, "stop a phase after this many epochs without eval-accuracy gain, keeping the best weights; 0 = off"),
    "augmentation": (str, "", "random training-only augmentation: comma-separated flip, rotation, zoom, contrast"),
    "fast_path": (bool, True, "train the head on base outputs computed once, when no augmentation runs"),
    "xla": (bool, False, "compile training steps with XLA"),
    "mixed_precision": (str, "auto", "auto (mixed_float16 on GPUs), on or off"),
    "checkpoint_dir": (str, "", "durable folder for per-epoch backups (resume after preemption); empty: inside the model artifact"),
    "seed": (int, 0, "random seed of initialisation, shuffling, dropout and augmentation"),
    # evaluation and gate
    "min_accuracy": (float, 0.5, "test accuracy floor for blessing, in [0, 1]"),
    "champion_tolerance": (float, 0.0, "how much lower than the champion's accuracy the challenger may score"),
    "allow_label_change": (bool, False, "let a model trained on another label set than the champion's replace it"),
    # resources
    "accelerator_type": (str, "nvidia.com/gpu", "accelerator resource of the finetune step (e.g. nvidia.com/gpu)"),
    "accelerator_count": (int, 0, "accelerators for the finetune step; 0 means CPU"),
}


class PipelineOutputs(NamedTuple):
    blessed: bool
    reason: str
    accuracy: float
    macro_f1: float
    pushed: str


def make_pipeline(image: str = COMPONENT_IMAGE) -> typing.Callable:
    """Builds the pipeline function with every component running in container ``image``."""
    c = build_components(image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Fine-tune a pretrained Keras image model: preprocess (tf.Transform), "
        "fine-tune, evaluate against the champion, push to the registry if blessed.",
    )
    def finetune_pipeline(
        data_uri: str,
        registry_uri: str,
        model_name: str = "image-classifier",
        target_env: str = "dev",
        image_size: int = 224,
        eval_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_salt: str = "",
        max_bad_fraction: float = 0.01,
        min_images_per_class: int = 5,
        beam_pipeline_args: str = "",
        base_model: str = "mobilenet_v2",
        base_weights: str = "imagenet",
        width_multiplier: float = 1.0,
        pooling: str = "avg",
        dense_units: str = "",
        dropout: float = 0.2,
        l1: float = 0.0,
        l2: float = 0.0,
        label_smoothing: float = 0.0,
        class_weight: str = "none",
        epochs: int = 10,
        learning_rate: float = 0.001,
        fine_tune_epochs: int = 0,
        fine_tune_learning_rate: float = 1e-05,
        unfreeze: str = "all",
        optimizer: str = "adam",
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.004,
        lr_schedule: str = "constant",
        warmup_epochs: int = 0,
        decay_rate: float = 0.9,
        clipnorm: float = 0.0,
        batch_size: int = 32,
        early_stopping_patience: int = 0,
        augmentation: str = "",
        fast_path: bool = True,
        xla: bool = False,
        mixed_precision: str = "auto",
        checkpoint_dir: str = "",
        seed: int = 0,
        min_accuracy: float = 0.5,
        champion_tolerance: float = 0.0,
        allow_label_change: bool = False,
        accelerator_type: str = "nvidia.com/gpu",
        accelerator_count: int = 0,
    ) -> PipelineOutputs:
        pre = c.preprocess(
            data_uri=data_uri, base_model=base_model, image_size=image_size,
            eval_fraction=eval_fraction, test_fraction=test_fraction, split_salt=split_salt,
            max_bad_fraction=max_bad_fraction, min_images_per_class=min_images_per_class,
            beam_pipeline_args=beam_pipeline_args, registry_uri=registry_uri, model_name=model_name,
            target_env=target_env,
        ).set_display_name("preprocess")
        # data_uri names a place, not content: a scheduled run finds new images under the same
        # URI, so a cache hit keyed on the URI would silently retrain on yesterday's data.
        pre.set_caching_options(False)
        train = c.finetune(
            examples=pre.outputs["examples"], transform_graph=pre.outputs["transform_graph"],
            base_model=base_model, base_weights=base_weights, width_multiplier=width_multiplier,
            pooling=pooling, dense_units=dense_units, dropout=dropout, l1=l1, l2=l2,
            label_smoothing=label_smoothing, class_weight=class_weight, epochs=epochs,
            learning_rate=learning_rate, fine_tune_epochs=fine_tune_epochs,
            fine_tune_learning_rate=fine_tune_learning_rate, unfreeze=unfreeze, optimizer=optimizer,
            momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs, decay_rate=decay_rate, clipnorm=clipnorm, batch_size=batch_size,
            early_stopping_patience=early_stopping_patience, augmentation=augmentation,
            fast_path=fast_path, xla=xla, mixed_precision=mixed_precision,
            checkpoint_dir=checkpoint_dir, seed=seed,
        ).set_display_name("finetune")
        train.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
        ev = c.evaluate(
            examples=pre.outputs["examples"], model=train.outputs["model"], min_accuracy=min_accuracy,
            registry_uri=registry_uri, model_name=model_name, target_env=target_env,
            champion_tolerance=champion_tolerance, allow_label_change=allow_label_change,
        ).set_display_name("evaluate")
        # The champion can change between runs with identical inputs: never reuse a cached score.
        ev.set_caching_options(False)
        with dsl.If(ev.outputs["blessed"] == True, name="blessed"):  # noqa: E712 (KFP condition)
            pushed = c.push(
                model=train.outputs["model"], evaluation=ev.outputs["evaluation"],
                statistics=pre.outputs["statistics"], registry_uri=registry_uri,
                model_name=model_name, target_env=target_env, data_uri=data_uri,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ).set_display_name("push")
            # A push writes to the registry: it must run every time, never come from the cache.
            pushed.set_caching_options(False)
        with dsl.Else(name="not-blessed"):
            skipped = c.skip_push(reason=ev.outputs["reason"]).set_display_name("not pushed")
            skipped.set_caching_options(False)
        return PipelineOutputs(
            blessed=ev.outputs["blessed"], reason=ev.outputs["reason"],
            accuracy=ev.outputs["accuracy"], macro_f1=ev.outputs["macro_f1"],
            pushed=dsl.OneOf(pushed.output, skipped.output),
        )

    return finetune_pipeline


finetune_pipeline = make_pipeline()


def compile_pipeline(package_path: str, image: typing.Optional[str] = None) -> str:
    """Writes the compiled pipeline (KFP IR YAML) to ``package_path`` and returns the path.

    Args:
        package_path: Output file (``.yaml``); parent folders are created.
        image: Component image reference; default ``components.image.COMPONENT_IMAGE``.
    """
    os.makedirs(os.path.dirname(os.path.abspath(package_path)), exist_ok=True)
    pipeline = make_pipeline(image) if image else finetune_pipeline
    compiler.Compiler().compile(pipeline, package_path=package_path)
    return package_path
