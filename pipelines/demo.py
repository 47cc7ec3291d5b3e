"""``kfp-finetune demo``: the whole job on data and a backbone this project makes itself.

ImageNet weights cannot be downloaded on an air-gapped machine, so the demo builds a real
pretrained backbone first: a ``keras.applications`` MobileNetV2 (width 0.35, 48 px) trained on a
*source task*, scikit-learn's bundled handwritten digits 0-4. The pipeline then fine-tunes it on
the disjoint *target task*, digits 5-9, with the best recipe (Keras' transfer-learning guide):
a new head on the frozen base, then the whole base unfrozen (BatchNormalization still frozen) at a
lower learning rate, exactly as a user would fine-tune an ImageNet model on their own images.

Why 48 px: the 8x8 digits are upscaled either way; at 32 px MobileNetV2's last feature map is
1x1 and the two-phase recipe scored 0.82-0.91 on the test split depending on the backbone run,
at 48 px (2x2) 0.95 (measured on this project's machines).
"""

from __future__ import annotations

import json
import os
from typing import Any

SOURCE_DIGITS = (0, 1, 2, 3, 4)
TARGET_DIGITS = (5, 6, 7, 8, 9)
DEMO_BASE_MODEL = "mobilenet_v2"
DEMO_WIDTH = 0.35
DEMO_IMAGE_SIZE = 48
BACKBONE_FILE = f"mobilenet_v2_0.35_{DEMO_IMAGE_SIZE}px_digits0-4.weights.h5"

# Pipeline parameters of the demo run (what `kfp-finetune run-local` would be given).
DEMO_PARAMS: dict[str, Any] = {
    "model_name": "digits",
    "target_env": "dev",
    "base_model": DEMO_BASE_MODEL,
    "width_multiplier": DEMO_WIDTH,
    "image_size": DEMO_IMAGE_SIZE,
    # The two-phase recipe: 10 epochs of the head on the frozen base, then 15 epochs of the whole
    # base (BatchNormalization frozen) at a 3x lower learning rate.
    "epochs": 10,
    "learning_rate": 0.001,
    "fine_tune_epochs": 15,
    "fine_tune_learning_rate": 0.0003,
    "unfreeze": "all",
    "batch_size": 32,
    "min_accuracy": 0.8,
}


def write_digit_images(out_dir: str, digits: tuple[int, ...], limit_per_class: int | None = None) -> int:
    """Writes scikit-learn's handwritten digits as PNG files in class folders.

    The images are the 8x8, 17-level grayscale digits of ``sklearn.datasets.load_digits``
    (1,797 images, UCI ML hand-written digits), scaled to 0-255 and saved unchanged in size as
    ``<out_dir>/<digit>/<index>.png``. Existing files are overwritten with the same bytes.

    Args:
        out_dir: Output folder.
        digits: Which classes to write.
        limit_per_class: Write at most this many images per class (None: all, about 180).

    Returns:
        The number of files written.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    written: dict[int, int] = {}
    for index, (pixels, target) in enumerate(zip(data.images, data.target)):
        target = int(target)
        if target not in digits or (limit_per_class is not None and written.get(target, 0) >= limit_per_class):
            continue
        folder = os.path.join(out_dir, str(target))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(np.round(pixels * 255.0 / 16.0).astype(np.uint8), mode="L").save(
            os.path.join(folder, f"{index:04d}.png")
        )
        written[target] = written.get(target, 0) + 1
    return sum(written.values())


def pretrain_backbone(
    source_dir: str,
    weights_path: str,
    epochs: int = 30,
    image_size: int = DEMO_IMAGE_SIZE,
    width_multiplier: float = DEMO_WIDTH,
    seed: int = 0,
) -> dict[str, float]:
    """Pretrains a MobileNetV2 base model on the source task and saves its weights.

    The images go through the same decoding, resizing and pixel scaling as the pipeline's
    transform graph (``components.preprocess.decode_images`` and the base model's scaling), so
    the backbone's features fit what fine-tuning feeds it. BatchNormalization momentum is lowered
    to 0.9 first (see ``base_models.set_batchnorm_momentum``). The settings it was made with go
    into the sidecar ``<name>.weights.json`` (``components.backbones``), which ``run-local
    --base-weights`` reads.

    Args:
        source_dir: Class folders of the source task (PNG files).
        weights_path: Output ``.weights.h5`` file of the base model (no head).
        epochs: Training epochs (30 reach about 0.95 eval accuracy on digits 0-4).

    Returns:
        ``{"accuracy", "eval_accuracy"}`` of the source task (eval: a held-out fifth).
    """
    from components.step_logging import quiet_tensorflow

    quiet_tensorflow("demo")  # before the import below: TensorFlow's start-up lines filtered as in the steps
    import keras
    import numpy as np
    import tensorflow as tf

    from components import backbones, base_models
    from components.preprocess import decode_images

    keras.utils.set_random_seed(seed)
    files, labels = [], []
    for label, name in enumerate(sorted(os.listdir(source_dir))):
        for f in sorted(os.listdir(os.path.join(source_dir, name))):
            files.append(os.path.join(source_dir, name, f))
            labels.append(label)
    encoded = tf.constant([open(f, "rb").read() for f in files])
    spec = base_models.get_spec(DEMO_BASE_MODEL)
    x = base_models.scale_pixels(decode_images(encoded, image_size), spec.scaling).numpy()
    y = np.array(labels)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_train = int(len(y) * 0.8)

    base = base_models.build_base_model(DEMO_BASE_MODEL, image_size, None, width_multiplier)
    base_models.set_batchnorm_momentum(base, 0.9)
    inputs = keras.Input((image_size, image_size, 3))
    outputs = keras.layers.Dense(len(set(labels)), activation="softmax")(keras.layers.GlobalAveragePooling2D()(base(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x[:n_train], y[:n_train], validation_data=(x[n_train:], y[n_train:]), epochs=epochs, batch_size=32, verbose=0
    )
    os.makedirs(os.path.dirname(os.path.abspath(weights_path)), exist_ok=True)
    tmp = weights_path + ".partial.weights.h5"
    base.save_weights(tmp)
    os.replace(tmp, weights_path)
    scores = {"accuracy": float(history.history["accuracy"][-1]), "eval_accuracy": float(history.history["val_accuracy"][-1])}
    backbones.write_card(weights_path, backbones.BackboneCard(
        DEMO_BASE_MODEL, width_multiplier, image_size, tuple(sorted(os.listdir(source_dir))),
        f"pretrained from scratch on {source_dir} ({len(y)} images, {epochs} epochs; eval accuracy "
        f"{scores['eval_accuracy']:.3f} on a held-out fifth)",
    ))
    return scores


def prepare(workdir: str, pretrain_epochs: int = 30) -> dict[str, Any]:
    """Writes the demo data and builds the backbone (reused when its file already exists).

    Returns:
        ``{"data_uri", "source_uri", "base_weights", "backbone", "backbone_settings"}``
        (``backbone`` holds the source-task accuracies, or None when the weights file was
        reused; ``backbone_settings`` what its sidecar records: ``components.backbones``'
        settings plus ``sidecar``, the file's path).
    """
    from components import backbones

    layout = demo_params(workdir)
    data_uri, weights = layout["data_uri"], layout["base_weights"]
    source_uri = os.path.join(workdir, "data", "digits-0-4")
    write_digit_images(data_uri, TARGET_DIGITS)
    write_digit_images(source_uri, SOURCE_DIGITS)
    backbone = None
    if not os.path.exists(weights):
        print(f"pretraining the backbone ({DEMO_BASE_MODEL} width {DEMO_WIDTH}, {DEMO_IMAGE_SIZE} px) on digits 0-4 ...", flush=True)
        backbone = pretrain_backbone(source_uri, weights, epochs=pretrain_epochs, image_size=DEMO_IMAGE_SIZE)
        print(f"backbone: source-task eval accuracy {backbone['eval_accuracy']:.3f}", flush=True)
    card = backbones.read_card(weights)
    if card is None:
        # A backbone made before backbones carried their settings: they are the demo's own.
        card = backbones.BackboneCard(DEMO_BASE_MODEL, DEMO_WIDTH, DEMO_IMAGE_SIZE, tuple(str(d) for d in SOURCE_DIGITS),
                                      f"the demo's backbone, pretrained on {source_uri}")
        backbones.write_card(weights, card)
    settings = {**card.settings(), "sidecar": backbones.card_path(weights)}
    return {"data_uri": data_uri, "source_uri": source_uri, "base_weights": weights, "backbone": backbone,
            "backbone_settings": settings}


def demo_params(workdir: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline parameters of the demo run in ``workdir`` (an absolute path), with
    ``overrides`` (e.g. ``{"epochs": 2}``) applied last."""
    return {
        **DEMO_PARAMS,
        "data_uri": os.path.join(workdir, "data", "digits-5-9"),
        "base_weights": os.path.join(workdir, "backbone", BACKBONE_FILE),
        "registry_uri": os.path.join(workdir, "registry"),
        **(overrides or {}),
    }


def run_demo(workdir: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Checks the options, prepares data and backbone, runs the pipeline locally, returns the summary.

    The options (the settings with ``overrides``, a writable ``workdir``) are checked before the
    data is written and the backbone pretrained (about 2 minutes); once both exist, the run's
    whole up-front check (``pipelines.preflight.check_run``) runs before the pipeline.

    Returns:
        ``run-local``'s summary plus ``data_uri``, ``base_weights``, ``backbone`` (its
        settings and sidecar, ``prepare``'s ``backbone_settings``), ``registry_uri``.

    Raises:
        ValueError, OSError: an invalid override or an unwritable ``workdir`` (before any work).
        pipelines.local.PipelineRunError: a step failed.
    """
    from pipelines import preflight
    from pipelines.local import run_local, step_settings

    workdir = os.path.abspath(workdir)
    params = demo_params(workdir, overrides)
    step_settings(params)
    preflight.check_writable_folder("--workdir", workdir)
    prepared = prepare(workdir)
    pipeline_root = os.path.join(workdir, "pipeline_root")
    preflight.check_run(params, pipeline_root)
    registry_uri = params["registry_uri"]
    result = run_local(params, pipeline_root)
    summary = result.summary()
    summary.update(data_uri=params["data_uri"], base_weights=params["base_weights"], backbone=prepared["backbone_settings"],
                   registry_uri=registry_uri)
    return summary


def describe_pushed(summary: dict[str, Any]) -> str:
    """The registry entry of the pushed version, as ``models describe`` prints it."""
    from components import registry

    pushed = summary.get("pushed")
    if not pushed:
        return "nothing pushed"
    reg = registry.open_registry(summary["registry_uri"])
    meta = reg.get_metadata(pushed["model"], pushed["version"])
    aliases = {a: v for a, v in reg.list_aliases(pushed["model"]).items() if v == pushed["version"]}
    return json.dumps({"model": pushed["model"], "version": pushed["version"], "uri": pushed["uri"], "aliases": aliases,
                       "metrics": meta["metrics"], "created_at": meta["created_at"]}, indent=2)
