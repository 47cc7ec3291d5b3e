import os

import numpy as np
import pytest

from components.evaluate import EvaluateSettings, compute_metrics, decide_blessing


@pytest.mark.parametrize(
    "challenger, floor, champion, tolerance, blessed, reason_part",
    [
        (0.80, 0.50, None, 0.0, True, "no champion to compare"),
        (0.40, 0.50, None, 0.0, False, "below the floor 0.5000"),
        (0.50, 0.50, None, 0.0, True, "clears the floor"),  # the floor is inclusive
        (0.80, 0.50, 0.79, 0.0, True, "within 0.0000 of the champion's 0.7900"),
        (0.78, 0.50, 0.80, 0.0, False, "worse than the champion's 0.8000"),
        (0.78, 0.50, 0.80, 0.05, True, "within 0.0500"),
        (0.40, 0.50, 0.30, 0.0, False, "below the floor"),  # beating a bad champion is not enough
    ],
)
def test_decide_blessing_table(challenger, floor, champion, tolerance, blessed, reason_part):
    result = decide_blessing("accuracy", challenger, floor, champion, tolerance)
    assert result.blessed is blessed
    assert reason_part in result.reason


def test_compute_metrics_against_hand_computed_values():
    classes = ["cat", "dog", "owl"]
    truth = ["cat", "cat", "dog", "dog", "owl", "owl"]
    probs = np.array(
        [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]],
        dtype="float32",
    )
    m = compute_metrics(truth, probs, classes)
    assert m["accuracy"] == pytest.approx(5 / 6)
    # cat: P=1, R=0.5, F1=2/3; dog: P=2/3, R=1, F1=0.8; owl: P=1, R=1, F1=1.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    expected_loss = -np.mean(np.log([0.9, 0.2, 0.8, 0.6, 0.8, 0.4]))
    assert m["log_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert m["per_class"]["dog"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}


def test_compute_metrics_names_unknown_labels():
    with pytest.raises(ValueError, match=r"test labels \['emu'\] are not among the model's classes"):
        compute_metrics(["emu"], np.array([[1.0, 0.0]]), ["cat", "dog"])


@pytest.fixture(scope="module")
def worse_model(trained_model, preprocessed, tmp_path_factory):
    """A second real serving model: the trained model with seeded noise in its head's kernel,
    so that it disagrees with the trained model on some test images (no extra training)."""
    import keras
    import tensorflow_transform as tft

    from components.artifacts import KERAS_FILE
    from components.finetune.export import save_serving_model

    model_dir, summary = trained_model
    model = keras.models.load_model(os.path.join(model_dir, KERAS_FILE))
    head = model.get_layer("head_classifier")
    kernel, bias = head.get_weights()
    rng = np.random.default_rng(0)
    head.set_weights([kernel + rng.normal(0.0, 2.0 * kernel.std(), kernel.shape).astype(kernel.dtype), bias])
    serving = str(tmp_path_factory.mktemp("worse") / "serving")
    save_serving_model(model, tft.TFTransformOutput(preprocessed["transform"]), summary["labels"], serving)
    return serving


def test_challenger_is_scored_against_the_champion_on_the_same_test_split(trained_model, preprocessed, tmp_path):
    """A registry champion is re-scored on this run's test split; an equal score passes, a
    champion better by more than the tolerance blocks the push."""
    from components import registry
    from components.evaluate import run_evaluate
    from components.artifacts import SERVING_DIR, split_files

    model_dir, summary = trained_model
    serving = os.path.join(model_dir, SERVING_DIR)
    test_files = split_files(preprocessed["examples"], "test")
    alone = run_evaluate(test_files, serving, EvaluateSettings(min_accuracy=0.0))
    assert alone["champion"] is None and "no champion" in alone["reason"]
    assert alone["champion_version"] is None  # what the push's gate expects the alias to still be

    reg_uri = str(tmp_path / "registry")
    registry.open_registry(reg_uri).push("digits", serving, {"metrics": {}}, alias="prod")
    same = run_evaluate(test_files, serving, EvaluateSettings(min_accuracy=0.0, registry_uri=reg_uri, model_name="digits", target_env="prod"), str(tmp_path))
    assert same["champion"]["status"] == "compared" and same["champion"]["version"] == 1
    assert same["champion_version"] == 1
    assert same["champion"]["accuracy"] == pytest.approx(alone["metrics"]["accuracy"])
    assert same["blessed"] is True
    # The same model on the same images: no discordant pair, no difference, p = 1.
    t = same["champion"]["paired_test"]
    assert (t["b"], t["c"], t["method"], t["p_value"], t["difference"], t["ci_low"], t["ci_high"]) == (0, 0, "exact", 1.0, 0.0, 0.0, 0.0)
    assert t["n"] == alone["metrics"]["num_examples"]
    assert "(+0.0000, 95% CI [+0.0000, +0.0000], McNemar p=1)" in same["reason"]
    assert "predictions" not in same["champion"]  # per-example names stay out of evaluation.json

    # No alias for this environment yet: the floor alone decides.
    other_env = run_evaluate(test_files, serving, EvaluateSettings(min_accuracy=0.0, registry_uri=reg_uri, model_name="digits", target_env="staging"), str(tmp_path))
    assert other_env["champion"] is None and other_env["champion_version"] is None
    # Equal to the champion is not enough when the floor demands more.
    floor = min(1.0, alone["metrics"]["accuracy"] + 0.01)
    strict = run_evaluate(test_files, serving, EvaluateSettings(min_accuracy=floor, registry_uri=reg_uri, model_name="digits", target_env="prod"), str(tmp_path))
    assert strict["blessed"] is False and "below the floor" in strict["reason"]


def test_paired_test_between_two_real_models_is_antisymmetric(trained_model, worse_model, preprocessed, tmp_path):
    """Challenger and champion swapped: b and c swap, the difference changes sign, the p-value
    stays, and the model that is less accurate by more than the tolerance is the one blocked."""
    from components import registry
    from components.evaluate import EvaluateSettings, mcnemar_test, read_split, run_evaluate, score_champion
    from components.artifacts import SERVING_DIR, split_files

    serving = os.path.join(trained_model[0], SERVING_DIR)
    test_files = split_files(preprocessed["examples"], "test")
    reg_uri = str(tmp_path / "registry")
    reg = registry.open_registry(reg_uri)
    reg.push("digits", serving, {"metrics": {}}, alias="trained")
    reg.push("digits", worse_model, {"metrics": {}}, alias="worse")

    forward = run_evaluate(test_files, serving, EvaluateSettings(min_accuracy=0.0, registry_uri=reg_uri, model_name="digits", target_env="worse"), str(tmp_path / "f"))
    backward = run_evaluate(test_files, worse_model, EvaluateSettings(min_accuracy=0.0, registry_uri=reg_uri, model_name="digits", target_env="trained"), str(tmp_path / "b"))
    f, b = forward["champion"]["paired_test"], backward["champion"]["paired_test"]
    n = forward["metrics"]["num_examples"]
    assert f["b"] + f["c"] > 0, "the noisy head must disagree with the trained one on some test image"
    assert (f["b"], f["c"]) == (b["c"], b["b"]) and f["p_value"] == pytest.approx(b["p_value"])
    assert f["difference"] == pytest.approx(-b["difference"])
    assert f["difference"] == pytest.approx(forward["metrics"]["accuracy"] - forward["champion"]["accuracy"])
    assert f["difference"] == pytest.approx((f["b"] - f["c"]) / n)
    assert f["ci_low"] <= f["difference"] <= f["ci_high"]
    assert (f["method"], f["statistic"], f["p_value"]) == (*mcnemar_test(f["b"], f["c"])[:2], pytest.approx(mcnemar_test(f["b"], f["c"])[2]))
    assert f"McNemar p={f['p_value']:.2g}" in forward["reason"]
    # The champion's per-example predictions are the worse model's own argmax class names.
    images, labels = read_split(test_files)
    champ = score_champion(reg_uri, "digits", "worse", forward["class_names"], images, labels, str(tmp_path / "s"))
    assert len(champ["predictions"]) == n and set(champ["predictions"]) <= set(forward["class_names"])
    assert np.mean(np.array(champ["predictions"]) == np.array(labels)) == pytest.approx(champ["accuracy"])
    if f["difference"] != 0:
        assert [forward["blessed"], backward["blessed"]] == [f["difference"] > 0, f["difference"] < 0]


def test_run_evaluate_reports_new_metrics_and_diagnoses_the_real_training_curves(trained_model, preprocessed):
    from components.evaluate import EvaluateSettings, diagnose_fit, run_evaluate
    from components.artifacts import SERVING_DIR, split_files

    model_dir, summary = trained_model
    result = run_evaluate(split_files(preprocessed["examples"], "test"), os.path.join(model_dir, SERVING_DIR), EvaluateSettings(min_accuracy=0.0), training=summary)
    m = result["metrics"]
    assert len(result["class_names"]) == 5  # digits 5-9: top-2 is defined, top-5 (all classes) is not
    assert m["accuracy"] <= m["top_2_accuracy"] <= 1.0 and "top_5_accuracy" not in m
    assert 0.0 <= m["weighted_f1"] <= 1.0 and 0.0 <= m["expected_calibration_error"] <= 1.0
    assert sum(b["count"] for b in m["calibration_bins"]) == m["num_examples"]
    matrix = np.array(m["confusion_matrix"])
    index = {c: i for i, c in enumerate(result["class_names"])}
    for true, predicted, count in m["top_confusions"]:
        assert true != predicted and matrix[index[true], index[predicted]] == count
    off_diagonal = sorted((matrix - np.diag(np.diag(matrix))).ravel(), reverse=True)
    assert [c for _, _, c in m["top_confusions"]] == [c for c in off_diagonal[:5] if c > 0]
    assert result["diagnosis"] == diagnose_fit(summary["history"], num_classes=5)
    assert result["diagnosis"]["verdict"] in {"overfit", "underfit", "ok"}


def test_evaluate_component_logs_metrics_and_writes_everything(trained_model, preprocessed, tmp_path):
    """The KFP component body on real artifacts: scalar metrics, confusion matrix, the report
    with the diagnosis of ``training.json``, and ``evaluation.json`` holding all of it."""
    import json

    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

    from components import kfp_components, registry
    from components.artifacts import SERVING_DIR

    model_dir, summary = trained_model
    reg_uri = str(tmp_path / "registry")
    registry.open_registry(reg_uri).push("digits", os.path.join(model_dir, SERVING_DIR), {"metrics": {}}, alias="dev")
    metrics, matrix = Metrics(uri=str(tmp_path / "metrics")), ClassificationMetrics(uri=str(tmp_path / "cm"))
    report, evaluation = Markdown(uri=str(tmp_path / "report.md")), Artifact(uri=str(tmp_path / "evaluation.json"))
    out = kfp_components.build_components().evaluate.python_func(
        examples=Dataset(uri=preprocessed["examples"]), model=Model(uri=model_dir), min_accuracy=0.0,
        registry_uri=reg_uri, model_name="digits", target_env="dev", champion_tolerance=0.0, allow_label_change=False,
        metrics=metrics, confusion_matrix=matrix, report=report, evaluation=evaluation,
        report_html=HTML(uri=str(tmp_path / "report.html")),
    )
    with open(evaluation.path) as f:
        saved = json.load(f)
    assert out.blessed is True and out.reason == saved["reason"] and out.accuracy == saved["metrics"]["accuracy"]
    assert set(metrics.metadata) == {
        "accuracy", "macro_f1", "weighted_f1", "top_2_accuracy", "expected_calibration_error", "log_loss",
        "num_examples", "champion_accuracy", "mcnemar_p_value",
    }
    assert metrics.metadata["mcnemar_p_value"] == 1.0  # the champion is this very model
    assert metrics.metadata["expected_calibration_error"] == pytest.approx(saved["metrics"]["expected_calibration_error"])
    assert saved["champion"]["paired_test"]["b"] == 0 and saved["diagnosis"]["final"]["train_accuracy"] == summary["history"]["accuracy"][-1]
    assert matrix.metadata["confusionMatrix"]["rows"][0]["row"] == saved["metrics"]["confusion_matrix"][0]
    with open(report.path) as f:
        text = f.read()
    assert f"**{saved['diagnosis']['verdict']}**: {saved['diagnosis']['reason']}." in text
    assert "## Most frequent confusions" in text and "McNemar" in text
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg ") == 5 and 'data-chart="champion"' in page
    assert f"Champion version {saved['champion']['version']} on the same {saved['metrics']['num_examples']} test images" in page


@pytest.mark.parametrize(
    "challenger, allow, blessed, reason_part",
    [
        (0.95, False, False, "the label set differs from the champion's (champion version 1: added ['x'], removed ['7']); set allow_label_change"),
        (0.95, True, True, "clears the floor 0.5000; label set changed (champion version 1: added ['x'], removed ['7']), allowed"),
        (0.40, True, False, "below the floor 0.5000 (label set changed"),
    ],
)
def test_a_changed_label_set_is_refused_unless_allowed(challenger, allow, blessed, reason_part):
    """Regression: a model for other classes replaced a better champion because it was 'not compared'."""
    result = decide_blessing("accuracy", challenger, 0.5, None, 0.0, None,
                             "champion version 1: added ['x'], removed ['7']", allow)
    assert result.blessed is blessed
    assert reason_part in result.reason
