"""Push: publish a blessed model as a new immutable registry version and move the alias to it.

The version folder is the serving SavedModel at its root (TF Serving's layout: the registry's
``<model>/`` folder is a TF Serving base path) plus ``model.keras`` (for further fine-tuning),
``training.json``, ``evaluation.json`` and ``metadata.json`` (written last by the registry).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from components.artifacts import EVALUATION_FILE, KERAS_FILE, SERVING_DIR, TRAINING_FILE


def build_metadata(
    training: dict[str, Any],
    evaluation: dict[str, Any],
    statistics: dict[str, Any],
    data_uri: str,
    pipeline_run_id: str,
    target_env: str,
) -> dict[str, Any]:
    """The ``metadata.json`` content of a new version (the registry adds model, version, time).

    Returns:
        ``metrics`` (accuracy, macro_f1, log_loss, num_examples), ``blessing`` (reason),
        ``dataset`` (data_uri, fingerprint, class counts), ``base_model``, ``base_weights``,
        ``hyperparameters`` (the finetune settings), ``labels``, ``image_size``,
        ``pipeline_run_id``, ``target_env``.
    """
    m = evaluation["metrics"]
    settings = dict(training["settings"])
    return {
        "metrics": {k: m[k] for k in ("accuracy", "macro_f1", "log_loss", "num_examples")},
        "blessing": {"blessed": evaluation["blessed"], "reason": evaluation["reason"]},
        "dataset": {
            "data_uri": data_uri,
            "fingerprint": statistics["fingerprint"],
            "class_counts": statistics["class_counts"],
        },
        "base_model": settings["base_model"],
        "base_weights": settings["base_weights"],
        "hyperparameters": settings,
        "labels": training["labels"],
        "image_size": training["image_size"],
        "pipeline_run_id": pipeline_run_id,
        "target_env": target_env,
    }


def run_push(
    model_dir: str,
    evaluation: dict[str, Any],
    statistics: dict[str, Any],
    registry_uri: str,
    model_name: str,
    target_env: str,
    data_uri: str,
    pipeline_run_id: str,
) -> dict[str, Any]:
    """Pushes the model in ``model_dir`` (finetune's output) and points ``target_env`` at it.

    Returns:
        ``{"model", "version", "uri", "alias"}``.

    Raises:
        ValueError: the evaluation did not bless the model (nothing is written).
        FileNotFoundError: ``model_dir`` lacks the serving SavedModel.
        components.registry.RegistryError: the registry refused the push or the alias move.
    """
    from components import registry as registry_lib

    if not evaluation.get("blessed"):
        raise ValueError(f"refusing to push a model that was not blessed: {evaluation.get('reason')}")
    serving = os.path.join(model_dir, SERVING_DIR)
    if not os.path.isfile(os.path.join(serving, "saved_model.pb")):
        raise FileNotFoundError(f"no serving SavedModel in {serving!r}")
    with open(os.path.join(model_dir, TRAINING_FILE)) as f:
        training = json.load(f)
    metadata = build_metadata(training, evaluation, statistics, data_uri, pipeline_run_id, target_env)
    reg = registry_lib.open_registry(registry_uri)
    with tempfile.TemporaryDirectory(prefix="push-") as staging:
        version_dir = os.path.join(staging, "version")
        shutil.copytree(serving, version_dir)
        for name in (KERAS_FILE, TRAINING_FILE):
            shutil.copy2(os.path.join(model_dir, name), os.path.join(version_dir, name))
        with open(os.path.join(version_dir, EVALUATION_FILE), "w") as f:
            json.dump(evaluation, f, indent=2)
        pushed = reg.push(model_name, version_dir, metadata, alias=target_env or None, actor=pipeline_run_id or None)
    return {"model": pushed.model, "version": pushed.version, "uri": pushed.uri, "alias": target_env}
