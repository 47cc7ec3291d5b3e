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
    """The preprocess step's real outputs on ``small_digits_dir`` at 32 px for MobileNetV2."""
    from components.preprocess import PreprocessSettings, run_preprocess

    root = tmp_path_factory.mktemp("preprocessed")
    examples, transform = str(root / "examples"), str(root / "transform")
    stats = run_preprocess(small_digits_dir, examples, transform, PreprocessSettings(image_size=32, base_model="mobilenet_v2"))
    return {"examples": examples, "transform": transform, "stats": stats}


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
