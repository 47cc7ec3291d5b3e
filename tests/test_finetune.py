import json
import os
import subprocess
import sys

import numpy as np
import pytest

from components import artifacts
from components.finetune import FinetuneSettings, run_finetune_step
from components.finetune.model import build_classifier, load_base_model
from components.artifacts import IMAGE_KEY


def test_settings_are_validated():
    with pytest.raises(ValueError, match="optimizer 'adagrad' is not one of adam, adamw, sgd, rmsprop"):
        FinetuneSettings(optimizer="adagrad")
    with pytest.raises(ValueError, match="learning_rate must be > 0, got 0"):
        FinetuneSettings(learning_rate=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        FinetuneSettings(dropout=1.0)


def test_classifier_shapes_dtypes_and_frozen_base():
    from components.base_models import build_base_model

    base = build_base_model("mobilenet_v2", 32, None, 0.35)
    model = build_classifier(base, 5, FinetuneSettings(base_weights="none", dropout=0.2))
    probs = model(np.zeros((3, 32, 32, 3), "float32"), training=False)
    probs = np.asarray(probs)
    assert probs.shape == (3, 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert base.trainable is False
    # Only the head's dense layer trains: kernel and bias.
    assert [w.path for w in model.trainable_weights] == ["head_classifier/kernel", "head_classifier/bias"]


def test_weights_file_that_does_not_fit_names_file_and_model(tmp_path):
    from components.base_models import build_base_model

    other = build_base_model("mobilenet_v2", 32, None, 0.5)
    path = str(tmp_path / "alpha-0.5.weights.h5")
    other.save_weights(path)
    settings = FinetuneSettings(base_model="mobilenet_v2", base_weights=path, width_multiplier=0.35)
    with pytest.raises(ValueError, match=r"weights file '.*alpha-0.5.weights.h5' does not fit layer 'block_1_project' \(block_1_project/kernel\): the file has shape \(1, 1, 48, 16\), the model expects \(1, 1, 48, 8\)"):
        load_base_model(settings, 32, str(tmp_path))


def test_refused_weights_leave_no_output_or_checkpoint_folder(preprocessed, tmp_path):
    # Regression: a run refused for its weights left an empty model folder with an empty
    # checkpoint folder inside.
    from components.base_models import build_base_model

    path = str(tmp_path / "alpha-0.5.weights.h5")
    build_base_model("mobilenet_v2", 32, None, 0.5).save_weights(path)
    model_dir = tmp_path / "model"
    settings = FinetuneSettings(base_model="mobilenet_v2", base_weights=path, width_multiplier=0.35, epochs=1)
    with pytest.raises(ValueError, match="does not fit layer 'block_1_project'"):
        run_finetune_step(preprocessed["examples"], preprocessed["transform"], str(model_dir), settings)
    assert not model_dir.exists()


@pytest.mark.parametrize("name, message", [
    ("garbage.weights.h5", r"base_weights file '.*garbage.weights.h5' is not a Keras .weights.h5 file \(HDF5\)"),
    ("garbage.keras", r"base_weights file '.*garbage.keras' is not a saved Keras model \(.keras\)"),
])
def test_a_file_that_is_no_weights_file_is_named(tmp_path, name, message):
    # Regression (new-user review): "OSError: Unable to synchronously open file (file signature
    # not found)", naming neither the file nor the parameter.
    path = tmp_path / name
    path.write_bytes(b"not weights at all")
    settings = FinetuneSettings(base_model="mobilenet_v2", base_weights=str(path), width_multiplier=0.35)
    with pytest.raises(ValueError, match=message):
        load_base_model(settings, 32, str(tmp_path))


def test_missing_weights_file_is_named(tmp_path):
    settings = FinetuneSettings(base_weights=str(tmp_path / "nope.weights.h5"))
    with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
        load_base_model(settings, 32, str(tmp_path))


@pytest.fixture(scope="module")
def trained(trained_model):
    return trained_model


def test_finetune_trains_the_head_and_loss_falls(trained):
    model_dir, summary = trained
    loss = summary["history"]["loss"]
    assert len(loss) == 4
    assert loss[-1] < loss[0] * 0.9
    assert [r["phase"] for r in summary["epochs"]] == ["head"] * 4 and summary["fast_path"] is True
    assert summary["labels"] and sorted(summary["labels"]) == ["5", "6", "7", "8", "9"]
    with open(os.path.join(model_dir, artifacts.TRAINING_FILE)) as f:
        assert json.load(f)["history"]["loss"] == loss
    assert os.path.isfile(os.path.join(model_dir, artifacts.KERAS_FILE))
    assert os.listdir(os.path.join(model_dir, "tensorboard", "head"))
    with open(os.path.join(model_dir, artifacts.TRAINING_REPORT_FILE)) as f:
        report = f.read()
    assert report.count("| head |") == 4 and "fast path" in report


def test_frozen_base_weights_are_unchanged_by_training(trained, backbone_weights):
    """BatchNormalization statistics included: the base runs in inference mode."""
    import keras

    from components.base_models import build_base_model

    model_dir, _ = trained
    model = keras.models.load_model(os.path.join(model_dir, artifacts.KERAS_FILE))
    reference = build_base_model("mobilenet_v2", 32, None, 0.35)
    reference.load_weights(backbone_weights[0])
    trained_base = model.get_layer(reference.name)
    for before, after in zip(reference.weights, trained_base.weights):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after), err_msg=before.path)


def test_exported_serving_signature_matches_keras_model_in_a_fresh_process(trained, preprocessed, small_digits_dir, tmp_path):
    import keras
    import tensorflow_transform as tft

    model_dir, summary = trained
    files = sorted(os.path.join(small_digits_dir, c, f) for c in ("5", "8") for f in os.listdir(os.path.join(small_digits_dir, c)))[:6]
    encoded = [open(f, "rb").read() for f in files]
    # In memory: the Keras model on pixels from the transform graph.
    tft_output = tft.TFTransformOutput(preprocessed["transform"])
    import tensorflow as tf

    pixels = tft_output.transform_raw_features({IMAGE_KEY: tf.constant(encoded)}, drop_unused_features=True)[IMAGE_KEY]
    expected = np.asarray(keras.models.load_model(os.path.join(model_dir, artifacts.KERAS_FILE))(pixels, training=False))
    # Fresh process: only TensorFlow and the SavedModel, raw bytes in.
    script = (
        "import json, sys, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "files = json.loads(sys.argv[2])\n"
        "out = m.signatures['serving_default'](image_bytes=tf.constant([open(f, 'rb').read() for f in files]))\n"
        "print(json.dumps({'p': out['probabilities'].numpy().tolist(), 'label': [l.decode() for l in out['label'].numpy()]}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, os.path.join(model_dir, artifacts.SERVING_DIR), json.dumps(files)],
        capture_output=True, text=True, check=True,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(got["p"]), expected, atol=1e-5)
    assert got["label"] == [summary["labels"][i] for i in expected.argmax(axis=1)]


def test_a_requested_gpu_that_is_not_seen_fails_the_step_within_seconds(preprocessed, tmp_path):
    """This machine has no GPU: a finetune run given one accelerator must stop before any
    training, name the likely cause, and leave no output folder behind."""
    import time

    from components.accelerators import AcceleratorNotFoundError
    from components.finetune import FinetuneSettings, run_finetune_step

    settings = FinetuneSettings(base_model="mobilenet_v2", base_weights="none", width_multiplier=0.35, epochs=1,
                                accelerator_count=1)
    model_dir = tmp_path / "model"
    start = time.perf_counter()
    with pytest.raises(AcceleratorNotFoundError, match=r"asked for 1 GPU\(s\) \(nvidia.com/gpu\) but TensorFlow sees 0") as caught:
        run_finetune_step(preprocessed["examples"], preprocessed["transform"], str(model_dir), settings)
    assert time.perf_counter() - start < 20  # TensorFlow's import included; training would take minutes
    assert "the image cannot drive a GPU" in str(caught.value) and "accelerator_count=0" in str(caught.value)
    assert not model_dir.exists()
