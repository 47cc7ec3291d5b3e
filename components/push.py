"""Push: publish a blessed model as a new immutable registry version and move the alias to it.

The version folder is the serving SavedModel at its root (TF Serving's layout: the registry's
``<model>/`` folder is a TF Serving base path) plus ``model.keras`` (for further fine-tuning),
``training.json``, ``evaluation.json`` and ``metadata.json`` (written last by the registry).
The files go straight from the model artifact to the registry: no staging copy to leave behind.

The champion/challenger gate cannot be raced: the evaluation records the version the alias
pointed at when the challenger was scored (``champion_version``), and the push moves the alias
only if it still points there (``Registry.push(compared_with=...)``, the registry's own
compare-and-swap). When another run moved it meanwhile, nothing is published and the step
reports "not pushed: the champion changed from vN to vM since evaluation".
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from components.artifacts import EVALUATION_FILE, KERAS_FILE, SERVING_DIR, STATISTICS_FILE, TRAINING_FILE
from components.settings import DATA_URI, MODEL_NAME, REGISTRY_URI, TARGET_ENV, validate


@dataclasses.dataclass(frozen=True, kw_only=True)
class PushSettings:
    """Settings of the push step, validated on construction.

    Attributes:
        registry_uri: The registry root (local folder or ``gs://bucket/prefix``).
        model_name: The registry model the new version goes to.
        target_env: The alias moved to the new version; empty: no alias is moved.
        data_uri: Where the training data came from; recorded in ``metadata.json``.
    """

    registry_uri: str = REGISTRY_URI.field()
    model_name: str = MODEL_NAME.field()
    target_env: str = TARGET_ENV.field()
    data_uri: str = DATA_URI.field()

    def __post_init__(self) -> None:
        validate(self)


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


def compared_version(evaluation: dict[str, Any]) -> int | None:
    """The champion version an evaluation compared the challenger with (None: there was none).

    Args:
        evaluation: The evaluate step's result: ``champion_version`` (int or None), or, in
            evaluations written before that key, the ``champion`` block (None or with ``version``).

    Raises:
        ValueError: The evaluation records neither, so the gate cannot know what it was compared with.
    """
    if "champion_version" in evaluation:
        return evaluation["champion_version"]
    if "champion" in evaluation:
        champion = evaluation["champion"]
        return None if champion is None else champion["version"]
    raise ValueError(
        "evaluation records no champion_version (nor a champion block): cannot tell which champion the model "
        f"was compared with (keys: {sorted(evaluation)})"
    )


def run_push(
    model_dir: str,
    evaluation: dict[str, Any],
    statistics: dict[str, Any],
    settings: PushSettings,
    pipeline_run_id: str,
) -> dict[str, Any]:
    """Pushes the model in ``model_dir`` (finetune's output) and points ``settings.target_env`` at it.

    With a ``target_env``, the push is gated: the alias must still point at the evaluation's
    champion (see the module docstring).

    Args:
        model_dir: The finetune step's ``model`` artifact folder.
        evaluation: The evaluate step's result (``evaluation.json``); must be blessed.
        statistics: The preprocess step's ``statistics.json``.
        settings: Where to push (``PushSettings``).
        pipeline_run_id: The KFP run id, recorded as the version's ``pipeline_run_id`` and the
            audit entry's actor; empty for none.

    Returns:
        ``{"model", "version", "uri", "alias"}``.

    Raises:
        ValueError: the evaluation did not bless the model, or does not record its champion
            (nothing is written).
        FileNotFoundError: ``model_dir`` lacks the serving SavedModel.
        components.registry.ChampionChangedError: the alias moved since the evaluation; nothing
            was published.
        components.registry.RegistryError: the registry refused the push or the alias move.
    """
    from components import registry

    if not evaluation.get("blessed"):
        raise ValueError(f"refusing to push a model that was not blessed: {evaluation.get('reason')}")
    compared_with = compared_version(evaluation) if settings.target_env else registry.UNGATED
    serving = os.path.join(model_dir, SERVING_DIR)
    if not os.path.isfile(os.path.join(serving, "saved_model.pb")):
        raise FileNotFoundError(f"no serving SavedModel in {serving!r}")
    with open(os.path.join(model_dir, TRAINING_FILE)) as f:
        training = json.load(f)
    metadata = build_metadata(training, evaluation, statistics, settings.data_uri, pipeline_run_id, settings.target_env)
    extra_files: dict[str, str | bytes] = {name: os.path.join(model_dir, name) for name in (KERAS_FILE, TRAINING_FILE)}
    extra_files[EVALUATION_FILE] = json.dumps(evaluation, indent=2).encode("utf-8")
    pushed = registry.open_registry(settings.registry_uri).push(
        settings.model_name, serving, metadata, alias=settings.target_env or None, actor=pipeline_run_id or None,
        compared_with=compared_with, extra_files=extra_files,
    )
    return {"model": pushed.model, "version": pushed.version, "uri": pushed.uri, "alias": settings.target_env}


def run_push_step(
    model_dir: str, evaluation_path: str, statistics_dir: str, settings: PushSettings, pipeline_run_id: str = ""
) -> dict[str, Any]:
    """The push step: publishes the ``model`` artifact with its evaluation and statistics.

    Args:
        model_dir: The finetune step's ``model`` artifact folder.
        evaluation_path: The evaluate step's ``evaluation`` artifact (a JSON file).
        statistics_dir: The preprocess step's ``statistics`` artifact folder.
        settings, pipeline_run_id: See ``run_push``.

    Returns:
        ``run_push``'s ``{"model", "version", "uri", "alias"}``; when the gate refused (the
        champion changed since the evaluation), ``{"model", "version": None, "uri": None,
        "alias", "not_pushed": "the champion changed from v2 to v3 since evaluation"}``.

    Raises:
        FileNotFoundError, ValueError, components.registry.RegistryError: see ``run_push``.
    """
    from components import registry

    with open(evaluation_path) as f:
        evaluation = json.load(f)
    with open(os.path.join(statistics_dir, STATISTICS_FILE)) as f:
        statistics = json.load(f)
    try:
        return run_push(model_dir, evaluation, statistics, settings, pipeline_run_id)
    except registry.ChampionChangedError as refused:
        # A run that lost the race ran correctly: it reports why, like a model that was not blessed.
        print(str(refused))
        return {"model": settings.model_name, "version": None, "uri": None, "alias": settings.target_env,
                "not_pushed": refused.reason}
