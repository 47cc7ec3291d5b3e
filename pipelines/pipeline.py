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
    "data_uri": (str, None, "folder (local path or gs://) with one sub-folder of images per class"),
    "registry_uri": (str, None, "model registry root (local folder or gs://bucket/prefix)"),
    "model_name": (str, "image-classifier", "registry model name"),
    "target_env": (str, "dev", "environment alias the pushed version is promoted to (and whose model is the champion)"),
    "base_model": (str, "mobilenet_v2", "keras.applications base model (see components/base_models.py)"),
    "base_weights": (str, "imagenet", "'imagenet' (download), 'none', or a path / gs:// URI of a .weights.h5 file"),
    "width_multiplier": (float, 1.0, "MobileNet alpha (width multiplier); 1.0 for other families"),
    "image_size": (int, 224, "input height and width in pixels"),
    "epochs": (int, 10, "training epochs of the new head"),
    "batch_size": (int, 32, "images per training step"),
    "learning_rate": (float, 0.001, "optimizer learning rate"),
    "optimizer": (str, "adam", "adam, adamw, sgd or rmsprop"),
    "dropout": (float, 0.2, "dropout rate in the head, in [0, 1)"),
    "seed": (int, 0, "random seed of initialisation, shuffling and dropout"),
    "eval_fraction": (float, 0.15, "share of each class in the eval split"),
    "test_fraction": (float, 0.15, "share of each class in the test split"),
    "split_salt": (str, "", "string mixed into the content hash that assigns splits"),
    "beam_pipeline_args": (str, "", "Apache Beam options for preprocessing, e.g. '--runner=DataflowRunner --project=P'"),
    "min_accuracy": (float, 0.5, "test accuracy floor for blessing, in [0, 1]"),
    "champion_tolerance": (float, 0.0, "how much lower than the champion's accuracy the challenger may score"),
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
        base_model: str = "mobilenet_v2",
        base_weights: str = "imagenet",
        width_multiplier: float = 1.0,
        image_size: int = 224,
        epochs: int = 10,
        batch_size: int = 32,
        learning_rate: float = 0.001,
        optimizer: str = "adam",
        dropout: float = 0.2,
        seed: int = 0,
        eval_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_salt: str = "",
        beam_pipeline_args: str = "",
        min_accuracy: float = 0.5,
        champion_tolerance: float = 0.0,
        accelerator_type: str = "nvidia.com/gpu",
        accelerator_count: int = 0,
    ) -> PipelineOutputs:
        pre = c.preprocess(
            data_uri=data_uri, base_model=base_model, image_size=image_size,
            eval_fraction=eval_fraction, test_fraction=test_fraction, split_salt=split_salt,
            beam_pipeline_args=beam_pipeline_args,
        ).set_display_name("preprocess")
        train = c.finetune(
            examples=pre.outputs["examples"], transform_graph=pre.outputs["transform_graph"],
            base_model=base_model, base_weights=base_weights, width_multiplier=width_multiplier,
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            optimizer=optimizer, dropout=dropout, seed=seed,
        ).set_display_name("finetune")
        train.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
        ev = c.evaluate(
            examples=pre.outputs["examples"], model=train.outputs["model"], min_accuracy=min_accuracy,
            registry_uri=registry_uri, model_name=model_name, target_env=target_env,
            champion_tolerance=champion_tolerance,
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
