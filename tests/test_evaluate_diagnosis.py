"""diagnose_fit on a table of training curves, and the report that carries it."""

import pytest

from components.evaluate import OVERFIT_REMEDIES, UNDERFIT_REMEDIES, PairedTest, diagnose_fit, report_markdown


def _h(acc, val_acc, loss=None, val_loss=None):
    n = len(acc)
    return {
        "loss": loss or [1.0 - 0.1 * i for i in range(n)],
        "accuracy": acc,
        "val_loss": val_loss or [1.0 - 0.05 * i for i in range(n)],
        "val_accuracy": val_acc,
    }


@pytest.mark.parametrize(
    "history, kwargs, verdict, reason_part",
    [
        # Train and eval agree and are high.
        (_h([0.80, 0.90, 0.95], [0.78, 0.88, 0.93]), {}, "ok", "gap +0.020"),
        # Train far above eval: the gap rule.
        (_h([0.90, 0.97, 0.99], [0.85, 0.86, 0.84]), {}, "overfit", "exceeds eval accuracy 0.840 by 0.150 (> 0.10)"),
        # The gap threshold is an argument: 0.15 is within a 0.20 threshold.
        (_h([0.90, 0.97, 0.99], [0.85, 0.86, 0.84]), {"gap_threshold": 0.20}, "ok", "at most 0.20"),
        # A gap of exactly the threshold is not overfitting (strictly more is).
        (_h([0.80, 0.90], [0.75, 0.80]), {}, "ok", "gap +0.100"),
        # Accuracies close, but eval loss rose 50% above its minimum while train loss kept falling.
        (
            _h([0.90, 0.92, 0.93], [0.88, 0.88, 0.87], loss=[0.5, 0.3, 0.2], val_loss=[0.4, 0.3, 0.45]),
            {},
            "overfit",
            "eval loss rose from its minimum 0.300 (epoch 2) to 0.450 (+50%, > 10% and > 0.05) while train loss kept falling (0.300 -> 0.200)",
        ),
        # Eval loss rose, but so did train loss (a too-high learning rate, not overfitting).
        (_h([0.90, 0.92, 0.93], [0.88, 0.88, 0.87], loss=[0.5, 0.3, 0.35], val_loss=[0.4, 0.3, 0.45]), {}, "ok", "eval loss 0.450"),
        # A rise under the relative threshold is noise.
        (_h([0.90, 0.92, 0.93], [0.88, 0.88, 0.87], loss=[0.5, 0.3, 0.2], val_loss=[0.4, 0.30, 0.32]), {}, "ok", "within 10%"),
        # Regression (the demo was called overfit): +25 % relative but only +0.03 nats absolute,
        # with eval accuracy at 0.95, is noise.
        (_h([0.96, 0.98, 0.99], [0.94, 0.95, 0.95], loss=[0.3, 0.1, 0.05], val_loss=[0.2, 0.12, 0.15]), {}, "ok", "within 10% or 0.05"),
        # ... and the absolute bar is an argument.
        (_h([0.96, 0.98, 0.99], [0.94, 0.95, 0.95], loss=[0.3, 0.1, 0.05], val_loss=[0.2, 0.12, 0.15]),
         {"min_loss_increase": 0.01}, "overfit", "to 0.150 (+25%, > 10% and > 0.01)"),
        # Both poor: underfit, even though the gap is also large.
        (_h([0.40, 0.50, 0.55], [0.30, 0.35, 0.40]), {}, "underfit", "final train accuracy 0.550 and eval accuracy 0.400 are both below 0.70"),
        # Train poor but eval fine (dropout makes training accuracy look low): not underfit.
        (_h([0.60, 0.65, 0.68], [0.70, 0.75, 0.80]), {}, "ok", "train accuracy 0.680"),
        # Chance matters when it is high: 2 classes, floor lowered to 0.5, 0.55 is within 0.10 of chance 0.5.
        (
            _h([0.52, 0.55], [0.50, 0.54]),
            {"num_classes": 2, "poor_accuracy": 0.5},
            "underfit",
            "below 0.60 (the larger of 0.50 and chance 0.50 + 0.10)",
        ),
        # ... and with 100 classes, 0.55 is far above chance once the floor is lowered.
        (_h([0.52, 0.55], [0.50, 0.54]), {"num_classes": 100, "poor_accuracy": 0.5}, "ok", "gap +0.010"),
        # No eval split: overfitting cannot be judged, and the reason says so.
        ({"loss": [0.5, 0.3], "accuracy": [0.85, 0.95]}, {}, "ok", "no eval curves"),
        ({"loss": [1.5, 1.3], "accuracy": [0.35, 0.45]}, {}, "underfit", "final train accuracy 0.450 is below 0.70"),
    ],
)
def test_diagnose_fit_table(history, kwargs, verdict, reason_part):
    d = diagnose_fit(history, **kwargs)
    assert d["verdict"] == verdict
    assert reason_part in d["reason"]
    assert d["remedies"] == {"overfit": list(OVERFIT_REMEDIES), "underfit": list(UNDERFIT_REMEDIES), "ok": []}[verdict]
    assert d["epochs"] == len(history["loss"]) and d["final"]["train_accuracy"] == history["accuracy"][-1]


def test_remedies_name_the_usual_fixes():
    overfit = " ".join(OVERFIT_REMEDIES)
    for fix in ("dropout", "L2", "augment", "early stopping", "more labelled training data"):
        assert fix in overfit
    underfit = " ".join(UNDERFIT_REMEDIES)
    for fix in ("unfreeze the top layers", "two-phase fine-tuning", "more `epochs`", "higher `learning_rate`"):
        assert fix in underfit


@pytest.mark.parametrize(
    "history, kwargs, message",
    [
        ({"accuracy": [0.9]}, {}, "no 'loss' curve"),
        ({"loss": [], "accuracy": []}, {}, "no 'loss' curve"),
        ({"loss": [0.5], "accuracy": [0.9], "val_loss": [0.5]}, {}, "both 'val_loss' and 'val_accuracy'"),
        ({"loss": [0.5, 0.4], "accuracy": [0.9]}, {}, "differ in length"),
        ({"loss": [0.5], "accuracy": [0.9]}, {"num_classes": 1}, "num_classes must be >= 2"),
        ({"loss": [0.5], "accuracy": [0.9]}, {"gap_threshold": -0.1}, "gap_threshold must be >= 0"),
    ],
)
def test_diagnose_fit_rejects_bad_history(history, kwargs, message):
    with pytest.raises(ValueError, match=message):
        diagnose_fit(history, **kwargs)


def _result(champion, diagnosis):
    return {
        "metrics": {
            "accuracy": 0.75, "macro_f1": 0.7, "weighted_f1": 0.72, "top_2_accuracy": 0.9,
            "expected_calibration_error": 0.05, "log_loss": 0.6, "num_examples": 4,
            "per_class": {"cat": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}, "dog": {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}},
            "confusion_matrix": [[1, 1], [0, 2]],
            "top_confusions": [("cat", "dog", 1)],
            "calibration_bins": [{"lower": 0.8, "upper": 0.8667, "count": 4, "accuracy": 0.75, "confidence": 0.85}],
        },
        "class_names": ["cat", "dog"],
        "blessed": True,
        "reason": "accuracy 0.7500 vs champion 0.5000 (...): clears the floor",
        "champion": champion,
        "diagnosis": diagnosis,
    }


def test_report_shows_confusions_paired_test_and_diagnosis():
    import dataclasses

    paired = PairedTest(b=2, c=1, n=4, method="exact", statistic=1.0, p_value=1.0, difference=0.25, ci_low=-0.25, ci_high=0.75, confidence=0.95)
    champion = {"version": 3, "status": "compared", "accuracy": 0.5, "macro_f1": 0.4, "paired_test": dataclasses.asdict(paired)}
    diagnosis = diagnose_fit(_h([0.90, 0.97, 0.99], [0.85, 0.86, 0.84]))
    text = report_markdown(_result(champion, diagnosis))
    assert "**Blessed**: accuracy 0.7500 vs champion 0.5000" in text
    assert "weighted F1 0.7200; top-2 accuracy 0.9000" in text and "expected calibration error 0.0500 (15 bins)" in text
    assert "| cat | 1.000 | 0.500 | 0.667 | 2 |" in text
    assert "| cat | dog | 1 |" in text
    assert "| +0.2500 | [-0.2500, +0.7500] | 2 | 1 | exact | 1 |" in text
    assert "The p-value is reported, not gating" in text
    assert "**overfit**: final train accuracy 0.990 exceeds eval accuracy 0.840" in text
    assert "- regularize: more dropout in the head" in text


def test_report_without_champion_mistakes_or_training_curves():
    result = _result(None, None)
    result["metrics"]["top_confusions"] = []
    text = report_markdown(result)
    assert "No champion: the target environment has no model yet" in text
    assert "None: every test image was classified correctly." in text
    assert "Not available: the model artifact has no `training.json`." in text
    other = _result({"version": 2, "status": "different_labels", "classes": ["emu", "owl"]}, diagnose_fit(_h([0.9], [0.9])))
    assert "Champion version 2 was trained on other classes (emu, owl); not compared." in report_markdown(other)
    assert "**ok**:" in report_markdown(other)


def test_report_warns_about_classes_with_few_test_images():
    result = _result(None, None)
    result["warnings"] = ["class 'cat' has 2 images in the test split (fewer than 5): its test metrics are unreliable"]
    assert "**Warning**: class 'cat' has 2 images in the test split (fewer than 5): its test metrics are unreliable.\n" in report_markdown(result)
