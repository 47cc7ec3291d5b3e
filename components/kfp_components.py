"""The KFP components: thin adapters from artifacts to the plain step functions.

Each function below is a Lightweight Python Component body: KFP embeds its source in the
compiled pipeline and runs it inside the component image (``components.image``), where this
project is installed, so the body only imports from it, calls one function and writes outputs.
``build_components(image)`` applies ``dsl.component`` with the chosen image.

Every body that uses TensorFlow calls ``components.step_logging.quiet_tensorflow`` first (the
one place where a step's TensorFlow logging is set, before TensorFlow loads) and ends with one
``<step>: ...`` line saying what it did and how long it took.

(No ``from __future__ import annotations`` here: KFP reads the real annotation objects.)
"""

import functools
import types
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

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
    and checks are there); the artifacts' layout is in ``components.artifacts``. With a remote
    Beam runner (``components.beam_options``) the outputs go to the artifacts' ``.uri``, else to
    their ``.path``; the Markdown report is always local.
    """
    import time

    from components.beam_options import is_remote
    from components.preprocess import PreprocessSettings, run_preprocess_step
    from components.settings import from_parameters
    from components.step_errors import reported
    from components.step_logging import quiet_tensorflow, step_line

    with reported("preprocess"):
        started = time.perf_counter()
        # The Beam pipeline runs in a worker process (components.preprocess.run_preprocess),
        # which loads TensorFlow under the same settings.
        quiet_tensorflow("preprocess", load=False)
        settings = from_parameters(PreprocessSettings, locals())
        # A remote Beam runner's workers share no disk with this pod: they write the artifacts'
        # object-storage URIs; in-process workers write the local paths KFP uploads afterwards.
        out = (lambda a: a.uri) if is_remote(settings.beam_pipeline_args) else (lambda a: a.path)
        stats = run_preprocess_step(out(examples), out(transform_graph), out(statistics), statistics_report.path, settings)
        examples.metadata.update(num_images=stats["num_images"], classes=stats["classes"], fingerprint=stats["fingerprint"])
        splits = ", ".join(f"{split} {sum(counts.values())}" for split, counts in stats["class_counts"].items())
        step_line("preprocess", f"{stats['num_images']} usable images of {len(stats['classes'])} classes ({splits}); "
                                f"{len(stats['skipped'])} skipped", started)


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
    training_html: Output[HTML],
):
    """Fine-tunes the base model under a new head (one or two phases); exports Keras and serving models.

    The parameters are the fields of ``FinetuneSettings`` (``components.finetune``), the two
    accelerator settings under the names of ``RENAMED_INPUTS``. ``training_html`` is the
    learning curves' chart as a self-contained page (the KFP UI shows it on the run's page).
    """
    import time

    from components.finetune import FinetuneSettings, run_finetune_step
    from components.settings import from_parameters
    from components.step_errors import reported
    from components.step_logging import quiet_tensorflow, step_line

    with reported("finetune"):
        started = time.perf_counter()
        quiet_tensorflow("finetune", requested_accelerator_count)
        settings = from_parameters(FinetuneSettings, {
            **locals(), "accelerator_type": requested_accelerator_type, "accelerator_count": requested_accelerator_count,
        })
        summary = run_finetune_step(examples.path, transform_graph.path, model.path, settings, report_path=training_report.path,
                                    html_path=training_html.path)
        for name, values in summary["history"].items():
            training_metrics.log_metric(f"final_{name}", values[-1])
        model.metadata.update(labels=summary["labels"], image_size=summary["image_size"], base_model=base_model)
        final = ", ".join(f"{name.replace('val_', 'eval_')} {values[-1]:.4f}" for name, values in summary["history"].items()
                          if name != "lr")
        step_line("finetune", f"{len(summary['epochs'])} epochs; final {final}", started)


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
    report_html: Output[HTML],
) -> NamedTuple("EvaluateOutputs", [("blessed", bool), ("reason", str), ("accuracy", float), ("macro_f1", float)]):
    """Scores the serving model on the test split against the floor and the champion.

    Logs every scalar of ``components.evaluate.compute_metrics`` (accuracy, macro/weighted F1,
    top-k accuracy, expected calibration error, log loss, example count) and, when a champion
    was compared, its accuracy and the paired test; the report adds the diagnosis of the model's
    ``training.json`` curves; ``evaluation`` holds all of it as JSON (push copies it);
    ``report_html`` is the report with its charts (learning curves, confusion matrix,
    reliability diagram, per-class scores, champion comparison) as a self-contained page that
    the KFP UI shows on the run's page. The parameters are the fields of
    ``components.evaluate.EvaluateSettings``.
    """
    from collections import namedtuple

    import time

    from components.evaluate import EvaluateSettings, run_evaluate_step, scalar_metrics
    from components.settings import from_parameters
    from components.step_errors import reported
    from components.step_logging import quiet_tensorflow, step_line

    with reported("evaluate"):
        started = time.perf_counter()
        quiet_tensorflow("evaluate")
        result = run_evaluate_step(
            examples.path, model.path, evaluation.path, report.path, from_parameters(EvaluateSettings, locals()),
            html_path=report_html.path,
        )
        m = result["metrics"]
        for name, value in scalar_metrics(m).items():
            metrics.log_metric(name, value)
        champion = result["champion"]
        if champion and champion["status"] == "compared":
            metrics.log_metric("champion_accuracy", champion["accuracy"])
            metrics.log_metric("mcnemar_p_value", champion["paired_test"]["p_value"])
        confusion_matrix.log_confusion_matrix(result["class_names"], m["confusion_matrix"])
        step_line("evaluate", f"accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} on {m['num_examples']} test "
                              f"images; {'blessed' if result['blessed'] else 'not blessed'}: {result['reason']}", started)
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
    import time

    from components.push import PushSettings, run_push_step
    from components.settings import from_parameters
    from components.step_errors import reported
    from components.step_logging import step_line

    with reported("push"):
        started = time.perf_counter()
        settings = from_parameters(PushSettings, locals())
        pushed = run_push_step(model.path, evaluation.path, statistics.path, settings, pipeline_run_id)
        step_line("push", f"model {pushed['model']!r} version {pushed['version']} at {pushed['uri']}, alias {pushed['alias']!r}",
                  started)
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
