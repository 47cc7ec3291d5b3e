"""Evaluate: score the exported model on the test split and decide its blessing.

The challenger is scored through its *serving signature* on the raw encoded test images, so the
numbers describe exactly what ``push`` publishes and ``predict`` serves. When the target
environment already has a model (the champion) trained on the same label set, it is scored on
the same test split and the challenger must not be worse than it by more than a tolerance.

Formulas: accuracy, macro F1 (unweighted mean of per-class F1), log loss (mean negative log of
the probability of the true class) and the confusion matrix are scikit-learn's
(``sklearn.metrics``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable

from components.preprocess import IMAGE_KEY, LABEL_KEY

_BATCH = 256


@dataclasses.dataclass(frozen=True)
class Blessing:
    """The outcome of the champion/challenger gate: ``blessed`` and a one-line ``reason``."""

    blessed: bool
    reason: str


def decide_blessing(
    metric: str,
    challenger: float,
    floor: float,
    champion: float | None = None,
    tolerance: float = 0.0,
) -> Blessing:
    """Decides whether the challenger may be pushed.

    Args:
        metric: Name of the compared metric (higher is better), for the reason text.
        challenger: The challenger's value of ``metric`` on the test split, in [0, 1].
        floor: Absolute minimum the challenger must reach (inclusive).
        champion: The champion's value on the same test split, or None when there is no
            comparable champion (then the floor alone decides).
        tolerance: How much worse than the champion the challenger may be (>= 0).

    Returns:
        ``Blessing``; the reason states the compared numbers.
    """
    if challenger < floor:
        return Blessing(False, f"{metric} {challenger:.4f} is below the floor {floor:.4f}")
    if champion is None:
        return Blessing(True, f"{metric} {challenger:.4f} clears the floor {floor:.4f}; no champion to compare")
    if challenger < champion - tolerance:
        return Blessing(
            False,
            f"{metric} {challenger:.4f} is worse than the champion's {champion:.4f} by more than the tolerance {tolerance:.4f}",
        )
    return Blessing(
        True,
        f"{metric} {challenger:.4f} clears the floor {floor:.4f} and is within {tolerance:.4f} of the champion's {champion:.4f}",
    )


def read_split(files: list[str]) -> tuple[list[bytes], list[str]]:
    """Encoded images and class names of a split's TFRecord files (file order)."""
    import tensorflow as tf

    from components.preprocess import raw_feature_spec

    images, labels = [], []
    for batch in tf.data.TFRecordDataset(files).batch(_BATCH).map(lambda x: tf.io.parse_example(x, raw_feature_spec())):
        images.extend(batch[IMAGE_KEY].numpy().tolist())
        labels.extend(v.decode() for v in batch[LABEL_KEY].numpy())
    return images, labels


def load_serving(model_dir: str) -> tuple[Callable[[list[bytes]], Any], list[str]]:
    """Loads a serving SavedModel; returns ``(predict_probabilities, class_names)``.

    ``predict_probabilities(images)`` maps a list of encoded images to a float32 numpy array
    ``[n, num_classes]``.
    """
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures["serving_default"]
    class_names = [v.decode() for v in loaded.class_names.numpy()]

    def predict(images: list[bytes]) -> Any:
        parts = [
            serve(image_bytes=tf.constant(images[i:i + _BATCH]))["probabilities"].numpy()
            for i in range(0, len(images), _BATCH)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(class_names)), np.float32)

    return predict, class_names


def compute_metrics(true_labels: list[str], probabilities: Any, class_names: list[str]) -> dict[str, Any]:
    """Classification metrics of probabilities ``[n, num_classes]`` (columns = ``class_names``).

    Returns:
        ``accuracy``, ``macro_f1`` (both in [0, 1]), ``log_loss`` (nats, >= 0), ``per_class``
        ({class: {precision, recall, f1, support}}), ``confusion_matrix`` (rows = true class,
        columns = predicted, in ``class_names`` order), ``num_examples``.

    Raises:
        ValueError: no example, or a true label that is not in ``class_names`` (named).
    """
    import numpy as np
    from sklearn import metrics

    if not true_labels:
        raise ValueError("the test split is empty: nothing to evaluate")
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(true_labels) - set(index))
    if unknown:
        raise ValueError(f"test labels {unknown} are not among the model's classes {class_names}")
    y_true = np.array([index[c] for c in true_labels])
    y_pred = probabilities.argmax(axis=1)
    ids = list(range(len(class_names)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "macro_f1": float(metrics.f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "log_loss": float(metrics.log_loss(y_true, np.clip(probabilities, 1e-7, 1.0), labels=ids)),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(class_names)
        },
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "num_examples": len(true_labels),
    }


def report_markdown(result: dict[str, Any]) -> str:
    """A Markdown report of ``run_evaluate``'s result for the KFP UI."""
    m = result["metrics"]
    lines = [
        "# Evaluation",
        "",
        f"**{'Blessed' if result['blessed'] else 'Not blessed'}**: {result['reason']}",
        "",
        f"Test examples: {m['num_examples']}; accuracy {m['accuracy']:.4f}; macro F1 {m['macro_f1']:.4f}; log loss {m['log_loss']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        for c, v in m["per_class"].items()
    ]
    if result.get("champion"):
        ch = result["champion"]
        lines += ["", f"Champion: version {ch['version']} ({ch['status']})" + (f", accuracy {ch['accuracy']:.4f}" if "accuracy" in ch else "")]
    return "\n".join(lines) + "\n"


def score_champion(
    registry_uri: str, model_name: str, alias: str, class_names: list[str], images: list[bytes], labels: list[str], scratch_dir: str
) -> dict[str, Any] | None:
    """Scores the model the alias points at on the same test images.

    Returns:
        None when there is no registry model or alias yet; else ``{"version", "status"}`` with
        ``status`` ``compared`` (and ``accuracy``, ``macro_f1``) or ``different_labels`` (the
        champion was trained on another label set, so the two are not the same task and are not
        compared).
    """
    from components import registry as registry_lib

    reg = registry_lib.open_registry(registry_uri)
    if model_name not in reg.list_models():
        return None
    version = reg.get_alias(model_name, alias)
    if version is None:
        return None
    local = reg.download_version(model_name, version, os.path.join(scratch_dir, f"champion-{version}"))
    predict, champion_classes = load_serving(local)
    if sorted(champion_classes) != sorted(class_names):
        return {"version": version, "status": "different_labels", "classes": champion_classes}
    m = compute_metrics(labels, predict(images), champion_classes)
    return {"version": version, "status": "compared", "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def run_evaluate(
    test_files: list[str],
    model_dir: str,
    min_accuracy: float,
    registry_uri: str = "",
    model_name: str = "",
    target_env: str = "",
    tolerance: float = 0.0,
    scratch_dir: str = "/tmp",
) -> dict[str, Any]:
    """Scores the challenger's serving model on the test split and decides its blessing.

    Args:
        test_files: TFRecord files of the test split.
        model_dir: Folder of the serving SavedModel (``finetune``'s ``serving/``).
        min_accuracy: Accuracy floor in [0, 1].
        registry_uri, model_name, target_env: Where the champion is; empty to skip it.
        tolerance: Allowed accuracy drop against the champion, >= 0.
        scratch_dir: Local folder for downloading the champion.

    Returns:
        ``{"metrics": compute_metrics(...), "class_names", "blessed", "reason", "champion"}``.

    Raises:
        ValueError: ``min_accuracy`` outside [0, 1], negative tolerance, empty test split.
    """
    if not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"min_accuracy must be in [0, 1], got {min_accuracy}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    images, labels = read_split(test_files)
    predict, class_names = load_serving(model_dir)
    metrics = compute_metrics(labels, predict(images), class_names)
    champion = None
    if registry_uri and model_name and target_env:
        champion = score_champion(registry_uri, model_name, target_env, class_names, images, labels, scratch_dir)
    champion_accuracy = champion["accuracy"] if champion and champion["status"] == "compared" else None
    blessing = decide_blessing("accuracy", metrics["accuracy"], min_accuracy, champion_accuracy, tolerance)
    reason = blessing.reason
    if champion and champion["status"] == "different_labels":
        reason += f" (champion version {champion['version']} has other classes, so it was not compared)"
    return {"metrics": metrics, "class_names": class_names, "blessed": blessing.blessed, "reason": reason, "champion": champion}


def write_json(obj: Any, path: str) -> None:
    """Writes ``obj`` as JSON atomically (temp file, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
