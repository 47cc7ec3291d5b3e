"""Shared fixtures: real digits images and a real pretrained backbone, made once per session."""

import os

import pytest

# Quiet TensorFlow's C++ start-up chatter in test logs (read by TF at import, set before it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Test-sized backbone: fewer pretraining epochs than the demo's 30 (measured: about 0.9 eval
# accuracy on digits 0-4 after 10 epochs, enough for transfer to beat a random base).
BACKBONE_EPOCHS = 10


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """Digits 5-9 from scikit-learn as PNG files in class folders (about 180 per class)."""
    from pipelines.demo import TARGET_DIGITS, write_digit_images

    root = str(tmp_path_factory.mktemp("digits") / "digits-5-9")
    write_digit_images(root, TARGET_DIGITS)
    return root


@pytest.fixture(scope="session")
def small_digits_dir(tmp_path_factory):
    """Digits 5-9, 40 images per class: for unit tests of the steps."""
    from pipelines.demo import TARGET_DIGITS, write_digit_images

    root = str(tmp_path_factory.mktemp("small-digits") / "digits")
    write_digit_images(root, TARGET_DIGITS, limit_per_class=40)
    return root


@pytest.fixture(scope="session")
def backbone_weights(tmp_path_factory):
    """A MobileNetV2 (width 0.35, 32 px) base pretrained on digits 0-4: (weights path, accuracies)."""
    from pipelines.demo import SOURCE_DIGITS, pretrain_backbone, write_digit_images

    root = tmp_path_factory.mktemp("backbone")
    source = str(root / "digits-0-4")
    write_digit_images(source, SOURCE_DIGITS)
    weights = str(root / "backbone.weights.h5")
    scores = pretrain_backbone(source, weights, epochs=BACKBONE_EPOCHS)
    return weights, scores


@pytest.fixture(scope="session")
def preprocessed(tmp_path_factory, small_digits_dir):
    """The preprocess component's real outputs on ``small_digits_dir`` at 32 px for MobileNetV2,
    made by the component body itself (``.python_func``, as KFP runs it): the folders of its
    ``examples``, ``transform_graph`` and ``statistics`` artifacts, and the statistics."""
    import json

    from kfp.dsl import Artifact, Dataset, Markdown

    from components.artifacts import STATISTICS_FILE
    from components.kfp_components import build_components

    root = tmp_path_factory.mktemp("preprocessed")
    examples, transform, statistics = Dataset(uri=str(root / "examples")), Artifact(uri=str(root / "transform")), Artifact(uri=str(root / "statistics"))
    build_components().preprocess.python_func(
        data_uri=small_digits_dir, registry_uri="", model_name="digits", target_env="dev", image_size=32,
        eval_fraction=0.15, test_fraction=0.15, split_salt="", max_bad_fraction=0.01, min_images_per_class=5,
        beam_pipeline_args="", base_model="mobilenet_v2", examples=examples, transform_graph=transform,
        statistics=statistics, statistics_report=Markdown(uri=str(root / "statistics.md")),
    )
    with open(root / "statistics" / STATISTICS_FILE) as f:
        stats = json.load(f)
    return {"examples": examples.path, "transform": transform.path, "statistics": statistics.path, "stats": stats,
            "examples_metadata": dict(examples.metadata), "report": str(root / "statistics.md")}


@pytest.fixture(scope="session")
def trained_model(preprocessed, backbone_weights, tmp_path_factory):
    """The finetune step's real output on ``preprocessed``: (model folder, training summary)."""
    from components.finetune import FinetuneSettings, run_finetune_step

    model_dir = str(tmp_path_factory.mktemp("model"))
    settings = FinetuneSettings(
        base_model="mobilenet_v2", base_weights=backbone_weights[0], width_multiplier=0.35, epochs=4, learning_rate=3e-3
    )
    summary = run_finetune_step(preprocessed["examples"], preprocessed["transform"], model_dir, settings)
    return model_dir, summary
