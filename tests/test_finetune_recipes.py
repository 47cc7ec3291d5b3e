"""The fine-tuning recipes: families, freezing, head, optimizers, schedules, fast path, resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from components import artifacts
from components.finetune import FinetuneSettings, run_finetune_step, settings_from_parameters
from components.finetune.data import balanced_class_weights
from components.finetune.export import save_serving_model
from components.finetune.model import build_classifier, head_model, load_base_model, make_optimizer, make_schedule, set_trainable
from components.finetune.settings import select_unfrozen
from components.finetune.training import configure_devices
from components.base_models import BASE_MODELS, build_base_model


@pytest.mark.parametrize(
    "name, channels",
    [("mobilenet_v3_small", 576), ("resnet50", 2048), ("resnet50_v2", 2048), ("vgg16", 512),
     ("efficientnet_b0", 1280), ("efficientnet_v2_b0", 1280), ("convnext_tiny", 768)],
)
def test_each_family_builds_at_its_minimum_size(name, channels):
    base = build_base_model(name, BASE_MODELS[name].min_size, None)
    assert base.output_shape[-1] == channels
    with pytest.raises(ValueError, match=f"below the minimum input size 32 px of base model '{name}'"):
        build_base_model(name, 31, None)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("all", ["a", "b", "c", "d"]),
        ("top:1", ["d"]),
        ("top:3", ["b", "c", "d"]),
        ("from:c", ["c", "d"]),
        ("from:a", ["a", "b", "c", "d"]),
    ],
)
def test_select_unfrozen_table(spec, expected):
    assert select_unfrozen(["a", "b", "c", "d"], spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("top:9", r"unfreeze top:9 asks for more layers than the base model has \(4\)"),
        ("from:block_13", r"the base model has no layer 'block_13'; did you mean block_13_x\?"),
        ("middle", r"unfreeze 'middle' must be 'all', 'top:N' \(N >= 1\) or 'from:LAYER_NAME'"),
        ("top:0", r"must be 'all', 'top:N'"),
    ],
)
def test_select_unfrozen_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        select_unfrozen(["a", "b", "block_13_x", "d"], spec)


def test_unfreezing_keeps_batchnorm_frozen():
    base = build_base_model("mobilenet_v2", 32, None, 0.35)
    trainable = set_trainable(base, "from:block_16_expand")
    assert trainable == ["block_16_expand", "block_16_expand_relu", "block_16_depthwise", "block_16_depthwise_relu",
                         "block_16_project", "Conv_1", "out_relu"]
    bn = [l for l in base.layers if l.__class__.__name__ == "BatchNormalization"]
    assert bn and not any(l.trainable for l in bn)
    assert {w.path.split("/")[0] for w in base.trainable_weights} == {"block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"}


def test_settings_from_pipeline_parameters():
    s = settings_from_parameters(base_weights="none", dense_units="256, 64", augmentation="flip,zoom")
    assert s.dense_units == (256, 64) and s.augmentation == ("flip", "zoom")
    assert settings_from_parameters(base_weights="none", dense_units="", augmentation="").dense_units == ()
    with pytest.raises(ValueError, match="dense_units '12x' must be comma-separated integers"):
        settings_from_parameters(base_weights="none", dense_units="12x")
    with pytest.raises(ValueError, match=r"augmentation \['blur'\] not among flip, rotation, zoom, contrast"):
        settings_from_parameters(base_weights="none", augmentation="blur")
    with pytest.raises(ValueError, match="epochs \\+ fine_tune_epochs must be at least 1"):
        FinetuneSettings(epochs=0, fine_tune_epochs=0)


def test_head_layers_regularization_and_mixed_precision_safe_output():
    import keras

    settings = FinetuneSettings(base_weights="none", pooling="max", dense_units=(16,), l2=0.01, dropout=0.3)
    model = build_classifier(build_base_model("mobilenet_v2", 32, None, 0.35), 3, settings)
    names = [l.name for l in model.layers]
    assert names[-5:] == ["head_pool", "head_dense_0", "head_dropout_0", "head_dropout", "head_classifier"]
    assert isinstance(model.get_layer("head_pool"), keras.layers.GlobalMaxPooling2D)
    assert model.get_layer("head_dense_0").kernel_regularizer.l2 == pytest.approx(0.01)
    assert model.get_layer("head_classifier").dtype_policy.name == "float32"
    # The fast path's head model shares the very same layers.
    head = head_model(model)
    assert head.get_layer("head_classifier") is model.get_layer("head_classifier")
    assert head.output_shape == (None, 3)


def test_augmentation_runs_only_in_training():
    settings = FinetuneSettings(base_weights="none", augmentation=("flip", "rotation", "zoom", "contrast"), seed=1)
    model = build_classifier(build_base_model("mobilenet_v2", 32, None, 0.35), 3, settings)
    augment = model.get_layer("augmentation")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(augment(x, training=False)), x)
    assert not np.allclose(np.asarray(augment(x, training=True)), x)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), np.asarray(model(x, training=False)))


def test_model_with_augmentation_exports_a_serving_signature(preprocessed, small_digits_dir, tmp_path):
    import tensorflow as tf
    import tensorflow_transform as tft

    settings = FinetuneSettings(base_weights="none", width_multiplier=0.35, augmentation=("rotation", "zoom", "contrast"))
    model = build_classifier(build_base_model("mobilenet_v2", 32, None, 0.35), 5, settings)
    save_serving_model(model, tft.TFTransformOutput(preprocessed["transform"]), ["5", "6", "7", "8", "9"], str(tmp_path / "serving"))
    png = open(os.path.join(small_digits_dir, "5", sorted(os.listdir(os.path.join(small_digits_dir, "5")))[0]), "rb").read()
    out = tf.saved_model.load(str(tmp_path / "serving")).signatures["serving_default"](image_bytes=tf.constant([png, png]))
    assert out["probabilities"].shape == (2, 5)
    # Inference is deterministic: the augmentation is not in the exported graph.
    np.testing.assert_array_equal(out["probabilities"][0].numpy(), out["probabilities"][1].numpy())


def test_optimizers_and_schedules():
    import keras

    sgd = make_optimizer(FinetuneSettings(base_weights="none", optimizer="sgd", momentum=0.8, nesterov=True, clipnorm=1.5), 0.1)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.8 and sgd.nesterov and sgd.clipnorm == 1.5
    adamw = make_optimizer(FinetuneSettings(base_weights="none", optimizer="adamw", weight_decay=0.01), 0.1)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 0.01
    assert isinstance(make_optimizer(FinetuneSettings(base_weights="none", optimizer="rmsprop"), 0.1), keras.optimizers.RMSprop)
    # cosine with 2 warm-up epochs of 10 steps, 10 epochs in all: 0 -> peak at step 20 -> 0 at step 100.
    cosine = make_schedule(FinetuneSettings(base_weights="none", lr_schedule="cosine", warmup_epochs=2), 0.01, 10, 10)
    assert float(cosine(0)) == pytest.approx(0.0)
    assert float(cosine(10)) == pytest.approx(0.005)
    assert float(cosine(20)) == pytest.approx(0.01)
    assert float(cosine(60)) == pytest.approx(0.005, rel=1e-3)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-7)
    exponential = make_schedule(FinetuneSettings(base_weights="none", lr_schedule="exponential", decay_rate=0.5), 0.01, 10, 10)
    assert float(exponential(30)) == pytest.approx(0.01 * 0.5**3)
    assert make_schedule(FinetuneSettings(base_weights="none"), 0.01, 10, 10) == 0.01


def test_balanced_class_weights():
    assert balanced_class_weights([30, 10, 0]) == {0: 40 / 90, 1: 40 / 30, 2: 0.0}


def test_no_gpu_means_no_gpu_features():
    strategy, info = configure_devices(FinetuneSettings(base_weights="none"))
    assert info == {"gpus": 0, "replicas": 1, "mixed_precision": False, "xla": False}
    assert strategy.num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="mixed_precision 'on' needs a GPU"):
        configure_devices(FinetuneSettings(base_weights="none", mixed_precision="on"))


def test_base_from_a_saved_keras_model(trained_model, tmp_path):
    """Continual fine-tuning: the base weights of a previous run's model.keras."""
    import keras

    model_dir, _ = trained_model
    base = load_base_model(
        FinetuneSettings(base_weights=os.path.join(model_dir, artifacts.KERAS_FILE), width_multiplier=0.35), 32, str(tmp_path)
    )
    previous = keras.models.load_model(os.path.join(model_dir, artifacts.KERAS_FILE)).get_layer(base.name)
    for a, b in zip(base.weights, previous.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _settings(backbone, **kw):
    return FinetuneSettings(base_model="mobilenet_v2", base_weights=backbone, width_multiplier=0.35, dropout=0.0, **kw)


def test_fast_path_matches_model_fit(preprocessed, backbone_weights, tmp_path):
    """Same head, data and epochs: training on base outputs computed once gives the weights
    model.fit on images gives (within float tolerance)."""
    import keras

    runs = {}
    for fast in (True, False):
        out = str(tmp_path / f"fast-{fast}")
        summary = run_finetune_step(preprocessed["examples"], preprocessed["transform"], out,
                                    _settings(backbone_weights[0], epochs=3, fast_path=fast))
        assert summary["fast_path"] is fast
        runs[fast] = (summary, keras.models.load_model(os.path.join(out, artifacts.KERAS_FILE)).get_layer("head_classifier").get_weights())
    for a, b in zip(runs[True][1], runs[False][1]):
        np.testing.assert_allclose(a, b, atol=2e-4)
    assert runs[True][0]["history"]["val_accuracy"] == pytest.approx(runs[False][0]["history"]["val_accuracy"], abs=0.02)


def test_two_phase_unfreezes_top_layers_but_not_batchnorm(preprocessed, backbone_weights, tmp_path):
    import keras

    out = str(tmp_path / "two-phase")
    settings = _settings(backbone_weights[0], epochs=2, fine_tune_epochs=2, fine_tune_learning_rate=1e-3, unfreeze="top:20")
    summary = run_finetune_step(preprocessed["examples"], preprocessed["transform"], out, settings)
    assert [r["phase"] for r in summary["epochs"]] == ["head", "head", "fine_tune", "fine_tune"]
    assert summary["epochs"][2]["lr"] == pytest.approx(1e-3)
    assert summary["unfrozen_layers"] > 0
    reference = build_base_model("mobilenet_v2", 32, None, 0.35)
    reference.load_weights(backbone_weights[0])
    tuned = keras.models.load_model(os.path.join(out, artifacts.KERAS_FILE)).get_layer(reference.name)
    changed = {}
    for before, after in zip(reference.weights, tuned.weights):
        changed[before.path] = not np.array_equal(np.asarray(before), np.asarray(after))
    assert not any(v for k, v in changed.items() if k.startswith(("bn_", "block_16_expand_BN", "Conv_1_bn")) or "_BN/" in k)
    assert changed["Conv_1/kernel"] and changed["block_16_project/kernel"]
    assert not changed["Conv1/kernel"] and not changed["block_1_expand/kernel"]


_RESUME_SCRIPT = """
import json, sys
from components.finetune import FinetuneSettings, run_finetune_step
settings = FinetuneSettings(**json.loads(sys.argv[4]))
run_finetune_step(sys.argv[1], sys.argv[2], sys.argv[3], settings)
"""


def test_killed_training_resumes_from_the_last_completed_epoch(preprocessed, backbone_weights, tmp_path):
    """The step is killed (SIGKILL, as a preempted node) during the fine-tune phase; run again,
    it resumes after the last completed epoch and ends where an uninterrupted run ends
    (tolerance: eval accuracy within 0.05, final weights within 0.05 relative L2; the
    optimizer's moments are not restored by Keras' BackupAndRestore)."""
    import keras

    kw = dict(base_model="mobilenet_v2", base_weights=backbone_weights[0], width_multiplier=0.35, dropout=0.0,
              epochs=2, fine_tune_epochs=5, fine_tune_learning_rate=3e-4, unfreeze="top:20", fast_path=False)
    args = [preprocessed["examples"], preprocessed["transform"]]
    killed_dir = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-c", _RESUME_SCRIPT, *args, killed_dir, json.dumps(kw)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []
    deadline = time.monotonic() + 400
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("finetune: fine_tune epoch 2/5"):
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "training never reached fine-tune epoch 2"
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(killed_dir, artifacts.KERAS_FILE))

    resumed = subprocess.run([sys.executable, "-c", _RESUME_SCRIPT, *args, killed_dir, json.dumps(kw)],
                             capture_output=True, text=True, check=True)
    lines = resumed.stdout.splitlines()
    assert any(l.startswith("finetune: head phase already complete") for l in lines)
    assert "finetune: fine_tune phase: resuming after epoch 2 of 5" in "\n".join(lines)
    assert [l.split(":")[1].strip() for l in lines if l.startswith("finetune: fine_tune epoch")] == [
        f"fine_tune epoch {i}/5" for i in (3, 4, 5)]
    with open(os.path.join(killed_dir, artifacts.TRAINING_FILE)) as f:
        after_kill = json.load(f)
    assert [(r["phase"], r["epoch"]) for r in after_kill["epochs"]] == [("head", 1), ("head", 2)] + [("fine_tune", i) for i in range(1, 6)]

    straight = str(tmp_path / "straight")
    summary = run_finetune_step(*args, straight, FinetuneSettings(**kw))
    assert after_kill["history"]["val_accuracy"][-1] == pytest.approx(summary["history"]["val_accuracy"][-1], abs=0.05)
    a = keras.models.load_model(os.path.join(killed_dir, artifacts.KERAS_FILE)).get_layer("head_classifier").get_weights()[0]
    b = keras.models.load_model(os.path.join(straight, artifacts.KERAS_FILE)).get_layer("head_classifier").get_weights()[0]
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.05


def test_gpu_benchmark_refuses_to_run_without_a_gpu():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "bench.gpu", "--steps", "1"], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 2
    assert "no GPU visible: this benchmark needs one" in proc.stderr


def test_a_base_without_pretrained_weights_can_learn(preprocessed, tmp_path):
    """Regression: with base_weights 'none' BatchNormalization ran in inference mode on
    untrained statistics, the base's outputs collapsed to ~1e-12 and the loss never moved."""
    settings = FinetuneSettings(base_model="mobilenet_v2", base_weights="none", width_multiplier=0.35,
                                   epochs=0, fine_tune_epochs=4, fine_tune_learning_rate=3e-3)
    report = tmp_path / "training_report.md"
    summary = run_finetune_step(preprocessed["examples"], preprocessed["transform"], str(tmp_path / "random"), settings,
                                report_path=str(report))
    loss = summary["history"]["loss"]
    assert loss[-1] < loss[0] * 0.9  # before the fix: constant at ln 5
    assert summary["history"]["accuracy"][-1] > 0.3  # chance is 0.2
    # The report is also written where the caller asks (the KFP Markdown artifact).
    assert report.read_text() == (tmp_path / "random" / artifacts.TRAINING_REPORT_FILE).read_text()
    assert report.read_text().count("| fine_tune |") == 4 and "model.fit on images" in report.read_text()
    assert summary["phase_seconds"].keys() == {"fine_tune"} and summary["unfrozen_layers"] > 0
