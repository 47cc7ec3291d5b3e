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


def preprocess(
    data_uri: str,
    base_model: str,
    image_size: int,
    eval_fraction: float,
    test_fraction: float,
    split_salt: str,
    max_bad_fraction: float,
    min_images_per_class: int,
    beam_pipeline_args: str,
    registry_uri: str,
    model_name: str,
    target_env: str,
    examples: Output[Dataset],
    transform_graph: Output[Artifact],
    statistics: Output[Artifact],
    statistics_report: Output[Markdown],
):
    """Raw images -> split examples, tf.Transform graph, statistics (vs the champion's labels)."""
    import os
    import shlex

    from components import preprocess as step
    from components.artifacts import STATISTICS_FILE
    from components.step_errors import reported

    with reported("preprocess"):
        settings = step.PreprocessSettings(
            image_size=image_size, base_model=base_model, eval_fraction=eval_fraction,
            test_fraction=test_fraction, split_salt=split_salt, max_bad_fraction=max_bad_fraction,
            min_images_per_class=min_images_per_class, beam_pipeline_args=tuple(shlex.split(beam_pipeline_args)),
        )
        champion = step.find_champion(registry_uri, model_name, target_env)
        stats = step.run_preprocess(data_uri, examples.path, transform_graph.path, settings, champion)
        os.makedirs(statistics.path, exist_ok=True)
        step.write_statistics(stats, os.path.join(statistics.path, STATISTICS_FILE), statistics_report.path)
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
    model: Output[Model],
    training_metrics: Output[Metrics],
    training_report: Output[Markdown],
):
    """Fine-tunes the base model under a new head (one or two phases); exports Keras and serving models."""
    import os
    import shutil

    from components import finetune as step
    from components.artifacts import TRAINING_REPORT_FILE
    from components.step_errors import reported

    with reported("finetune"):
        settings = step.settings_from_parameters(
            base_model=base_model, base_weights=base_weights, width_multiplier=width_multiplier, pooling=pooling,
            dense_units=dense_units, dropout=dropout, l1=l1, l2=l2, label_smoothing=label_smoothing,
            class_weight=class_weight, epochs=epochs, learning_rate=learning_rate, fine_tune_epochs=fine_tune_epochs,
            fine_tune_learning_rate=fine_tune_learning_rate, unfreeze=unfreeze, optimizer=optimizer, momentum=momentum,
            nesterov=nesterov, weight_decay=weight_decay, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
            decay_rate=decay_rate, clipnorm=clipnorm, batch_size=batch_size,
            early_stopping_patience=early_stopping_patience, augmentation=augmentation, fast_path=fast_path,
            xla=xla, mixed_precision=mixed_precision, checkpoint_dir=checkpoint_dir, seed=seed,
        )
        summary = step.run_finetune(examples.path, transform_graph.path, model.path, settings)
        for name, values in summary["history"].items():
            training_metrics.log_metric(f"final_{name}", values[-1])
        shutil.copyfile(os.path.join(model.path, TRAINING_REPORT_FILE), training_report.path)
        model.metadata.update(labels=summary["labels"], image_size=summary["image_size"], base_model=base_model)


def evaluate(
    examples: Input[Dataset],
    model: Input[Model],
    min_accuracy: float,
    registry_uri: str,
    model_name: str,
    target_env: str,
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
    ``training.json`` curves; ``evaluation`` holds all of it as JSON (push copies it).
    """
    import os
    import tempfile
    from collections import namedtuple

    from components import evaluate as step
    from components.artifacts import SERVING_DIR, split_files
    from components.step_errors import reported

    with reported("evaluate"), tempfile.TemporaryDirectory() as scratch:
        result = step.run_evaluate(
            split_files(examples.path, "test"), os.path.join(model.path, SERVING_DIR), min_accuracy,
            registry_uri, model_name, target_env, champion_tolerance, scratch,
            training=step.read_training(model.path), allow_label_change=allow_label_change,
        )
        m = result["metrics"]
        for name, value in step.scalar_metrics(m).items():
            metrics.log_metric(name, value)
        champion = result["champion"]
        if champion and champion["status"] == "compared":
            metrics.log_metric("champion_accuracy", champion["accuracy"])
            metrics.log_metric("mcnemar_p_value", champion["paired_test"]["p_value"])
        confusion_matrix.log_confusion_matrix(result["class_names"], m["confusion_matrix"])
        with open(report.path, "w") as f:
            f.write(step.report_markdown(result))
        step.write_json(result, evaluation.path)
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
    """Publishes the blessed model as a new registry version; returns it as JSON."""
    import json
    import os

    from components import push as step
    from components.artifacts import STATISTICS_FILE
    from components.step_errors import reported

    with reported("push"):
        with open(evaluation.path) as f:
            result = json.load(f)
        with open(os.path.join(statistics.path, STATISTICS_FILE)) as f:
            stats = json.load(f)
        pushed = step.run_push(model.path, result, stats, registry_uri, model_name, target_env, data_uri, pipeline_run_id)
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
