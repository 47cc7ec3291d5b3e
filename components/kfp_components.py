"""The KFP components: thin adapters from artifacts to the plain step functions.

Each function below is a Lightweight Python Component body: KFP embeds its source in the
compiled pipeline and runs it inside the component image (``components.image``), where this
project is installed, so the body only imports from it, calls one function and writes outputs.
``build_components(image)`` applies ``dsl.component`` with the chosen image.

(No ``from __future__ import annotations`` here: KFP reads the real annotation objects.)
"""

import functools
import types
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import COMPONENT_IMAGE


# KFP adds task inputs named ``accelerator_type`` and ``accelerator_count`` to a task whose
# accelerator is set from pipeline parameters (``set_accelerator_type``/``set_accelerator_limit``);
# a component input of the same name would receive that input's placeholder text, not the value
# (seen with kfp 2.17.3: kfp.local fails with "invalid literal for int()"). The finetune
# component therefore takes these two settings under other names.
RENAMED_INPUTS = {"accelerator_type": "requested_accelerator_type", "accelerator_count": "requested_accelerator_count"}


def preprocess(
    data_uri: str,
    registry_uri: str,
    model_name: str,
    target_env: str,
    image_size: int,
    eval_fraction: float,
    test_fraction: float,
    split_salt: str,
    max_bad_fraction: float,
    min_images_per_class: int,
    beam_pipeline_args: str,
    base_model: str,
    examples: Output[Dataset],
    transform_graph: Output[Artifact],
    statistics: Output[Artifact],
    statistics_report: Output[Markdown],
):
    """Raw images -> split examples, tf.Transform graph, statistics (vs the champion's labels).

    The parameters are the fields of ``components.preprocess.PreprocessSettings`` (their help
    and checks are there); the artifacts' layout is in ``components.artifacts``.
    """
    from components.preprocess import PreprocessSettings, run_preprocess_step
    from components.settings import from_parameters
    from components.step_errors import reported

    with reported("preprocess"):
        settings = from_parameters(PreprocessSettings, locals())
        stats = run_preprocess_step(examples.path, transform_graph.path, statistics.path, statistics_report.path, settings)
        examples.metadata.update(num_images=stats["num_images"], classes=stats["classes"], fingerprint=stats["fingerprint"])


def finetune(
    examples: Input[Dataset],
    transform_graph: Input[Artifact],
    base_model: str,
    base_weights: str,
    width_multiplier: float,
    pooling: str,
    dense_units: str,
    dropout: float,
    l1: float,
    l2: float,
    label_smoothing: float,
    class_weight: str,
    epochs: int,
    learning_rate: float,
    fine_tune_epochs: int,
    fine_tune_learning_rate: float,
    unfreeze: str,
    optimizer: str,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    lr_schedule: str,
    warmup_epochs: int,
    decay_rate: float,
    clipnorm: float,
    batch_size: int,
    early_stopping_patience: int,
    augmentation: str,
    fast_path: bool,
    xla: bool,
    mixed_precision: str,
    checkpoint_dir: str,
    seed: int,
    requested_accelerator_type: str,
    requested_accelerator_count: int,
    model: Output[Model],
    training_metrics: Output[Metrics],
    training_report: Output[Markdown],
):
    """Fine-tunes the base model under a new head (one or two phases); exports Keras and serving models.

    The parameters are the fields of ``FinetuneSettings`` (``components.finetune``), the two
    accelerator settings under the names of ``RENAMED_INPUTS``.
    """
    from components.finetune import FinetuneSettings, run_finetune_step
    from components.settings import from_parameters
    from components.step_errors import reported

    with reported("finetune"):
        settings = from_parameters(FinetuneSettings, {
            **locals(), "accelerator_type": requested_accelerator_type, "accelerator_count": requested_accelerator_count,
        })
        summary = run_finetune_step(examples.path, transform_graph.path, model.path, settings, report_path=training_report.path)
        for name, values in summary["history"].items():
            training_metrics.log_metric(f"final_{name}", values[-1])
        model.metadata.update(labels=summary["labels"], image_size=summary["image_size"], base_model=base_model)


def evaluate(
    examples: Input[Dataset],
    model: Input[Model],
    registry_uri: str,
    model_name: str,
    target_env: str,
    min_accuracy: float,
    champion_tolerance: float,
    allow_label_change: bool,
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    report: Output[Markdown],
    evaluation: Output[Artifact],
) -> NamedTuple("EvaluateOutputs", [("blessed", bool), ("reason", str), ("accuracy", float), ("macro_f1", float)]):
    """Scores the serving model on the test split against the floor and the champion.

    Logs every scalar of ``components.evaluate.compute_metrics`` (accuracy, macro/weighted F1,
    top-k accuracy, expected calibration error, log loss, example count) and, when a champion
    was compared, its accuracy and the paired test; the report adds the diagnosis of the model's
    ``training.json`` curves; ``evaluation`` holds all of it as JSON (push copies it). The
    parameters are the fields of ``components.evaluate.EvaluateSettings``.
    """
    from collections import namedtuple

    from components.evaluate import EvaluateSettings, run_evaluate_step, scalar_metrics
    from components.settings import from_parameters
    from components.step_errors import reported

    with reported("evaluate"):
        result = run_evaluate_step(
            examples.path, model.path, evaluation.path, report.path, from_parameters(EvaluateSettings, locals())
        )
        m = result["metrics"]
        for name, value in scalar_metrics(m).items():
            metrics.log_metric(name, value)
        champion = result["champion"]
        if champion and champion["status"] == "compared":
            metrics.log_metric("champion_accuracy", champion["accuracy"])
            metrics.log_metric("mcnemar_p_value", champion["paired_test"]["p_value"])
        confusion_matrix.log_confusion_matrix(result["class_names"], m["confusion_matrix"])
    outputs = namedtuple("EvaluateOutputs", ["blessed", "reason", "accuracy", "macro_f1"])
    return outputs(result["blessed"], result["reason"], m["accuracy"], m["macro_f1"])


def push(
    model: Input[Model],
    evaluation: Input[Artifact],
    statistics: Input[Artifact],
    registry_uri: str,
    model_name: str,
    target_env: str,
    data_uri: str,
    pipeline_run_id: str,
) -> str:
    """Publishes the blessed model as a new registry version; returns it as JSON.

    The parameters are the fields of ``components.push.PushSettings`` plus the run's id. When
    the champion changed since the evaluation, nothing is published and the JSON has
    ``"version": null`` and ``not_pushed`` (``run_push_step``).
    """
    import json

    from components.push import PushSettings, run_push_step
    from components.settings import from_parameters
    from components.step_errors import reported

    with reported("push"):
        settings = from_parameters(PushSettings, locals())
        pushed = run_push_step(model.path, evaluation.path, statistics.path, settings, pipeline_run_id)
    return json.dumps(pushed)


def skip_push(reason: str) -> str:
    """The branch taken when the model is not blessed: records why nothing was pushed."""
    print(f"not pushed: {reason}")
    return ""


def build_components(image: str = COMPONENT_IMAGE) -> types.SimpleNamespace:
    """The five KFP components, running in container image ``image``.

    ``install_kfp_package=False``: the image already has the pinned kfp, and an air-gapped
    cluster could not install it at run time.
    """
    component = functools.partial(dsl.component, base_image=image, install_kfp_package=False)
    return types.SimpleNamespace(
        preprocess=component(preprocess),
        finetune=component(finetune),
        evaluate=component(evaluate),
        push=component(push),
        skip_push=component(skip_push),
    )
