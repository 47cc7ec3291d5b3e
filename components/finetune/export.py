"""The finetune step's outputs: the Keras model, the serving SavedModel, the training record.

``save_serving_model`` writes the SavedModel evaluate, predict and TF Serving read (the
signature's names come from ``components.artifacts``); ``training_summary`` is what
``training.json`` holds and ``training_markdown`` its table for the KFP UI.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from components.artifacts import (
    CLASS_NAMES, IMAGE_KEY, KERAS_FILE, OUTPUT_CLASS_ID, OUTPUT_CONFIDENCE, OUTPUT_LABEL, OUTPUT_PROBABILITIES,
    SERVING_DIR, SERVING_INPUT, SERVING_SIGNATURE, TRAINING_FILE, TRAINING_HTML_FILE, TRAINING_REPORT_FILE,
)
from components.finetune.data import TrainingData
from components.finetune.settings import FinetuneSettings, fast_path_applies


def save_models(model: Any, data: TrainingData, model_dir: str) -> None:
    """Writes ``model.keras`` (input: transformed pixels, for further fine-tuning) and the
    serving SavedModel ``serving/`` (input: encoded image bytes) into ``model_dir``."""
    model.save(os.path.join(model_dir, KERAS_FILE))
    save_serving_model(model, data.tft_output, data.labels, os.path.join(model_dir, SERVING_DIR))


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


def save_serving_model(model: Any, tft_output: Any, labels: list[str], export_dir: str) -> None:
    """Writes a SavedModel whose serving signature takes raw encoded image bytes.

    Signature ``serving_default``: input ``image_bytes`` tf.string ``[batch]`` (PNG, JPEG, GIF or
    BMP file contents); outputs ``probabilities`` float32 ``[batch, num_classes]`` (vocabulary
    order), ``class_id`` int64 ``[batch]``, ``label`` tf.string ``[batch]`` and ``confidence``
    float32 ``[batch]`` (the top probability). The loaded object also has ``class_names``
    (tf.string ``[num_classes]``). The tf.Transform layer (with its vocabulary asset) is tracked
    by the module, so decoding, resizing and scaling run exactly as in training.

    Why a ``tf.Module``: ``TFTransformOutput.transform_features_layer()`` is a tf_keras model,
    and placing it inside a Keras 3 functional model fails ("A KerasTensor cannot be used as
    input to a TensorFlow function"; TFT 1.21 with Keras 3.15); a module tracking both saves
    them together.

    Args:
        model: The classifier (float32 ``[batch, size, size, 3]`` -> probabilities).
        tft_output: The ``tft.TFTransformOutput`` the model was trained through.
        labels: Class names in label-index order.
        export_dir: The SavedModel folder to write.
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


def training_summary(
    settings: FinetuneSettings,
    data: TrainingData,
    rows: list[dict[str, Any]],
    unfrozen: list[str],
    devices: dict[str, Any],
    phase_seconds: dict[str, float],
    seconds: float,
) -> dict[str, Any]:
    """What ``training.json`` holds (and the step returns).

    Args:
        settings: The step's settings.
        data: From ``data.prepare_data``.
        rows: The epoch log (``backup.read_history``).
        unfrozen: The base layers the fine-tune phase trained.
        devices: From ``training.configure_devices``.
        phase_seconds: Seconds of each phase that ran in this call (``head``, ``fine_tune``).
        seconds: Seconds of the whole step so far.

    Returns:
        ``settings``, ``labels``, ``image_size``, ``history`` ({metric: per-epoch list over
        both phases}), ``epochs`` (the rows), ``train_examples``, ``eval_examples``,
        ``class_weight``, ``fast_path``, ``unfrozen_layers`` (a count), ``devices``,
        ``phase_seconds``, ``seconds``.
    """
    history: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.items():
            if k not in ("phase", "epoch"):
                history.setdefault(k, []).append(v)
    return {
        "settings": dataclasses.asdict(settings),
        "labels": data.labels,
        "image_size": data.image_size,
        "history": history,
        "epochs": rows,
        "train_examples": data.num_train,
        "eval_examples": data.num_eval,
        "class_weight": data.class_weight,
        "fast_path": fast_path_applies(settings),
        "unfrozen_layers": len(unfrozen),
        "devices": devices,
        "phase_seconds": phase_seconds,
        "seconds": round(seconds, 2),
    }


def write_training_record(
    summary: dict[str, Any], model_dir: str, report_path: str | None = None, html_path: str | None = None
) -> None:
    """Writes ``training.json``, ``training.md`` and ``training.html`` (the learning curves as a
    chart, ``components.report_html.training_report``) into ``model_dir``; the Markdown also to
    ``report_path`` and the HTML page also to ``html_path`` when given (a KFP ``Markdown`` and
    ``HTML`` artifact's path)."""
    from components.report_html import training_report, write_page

    with open(os.path.join(model_dir, TRAINING_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    report = training_markdown(summary)
    for path in (os.path.join(model_dir, TRAINING_REPORT_FILE), report_path):
        if path is not None:
            with open(path, "w") as f:
                f.write(report)
    page = training_report(summary)
    for path in (os.path.join(model_dir, TRAINING_HTML_FILE), html_path):
        if path is not None:
            write_page(page, path)


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
