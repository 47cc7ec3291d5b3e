import numpy as np
import pytest

from components.evaluate import compute_metrics, decide_blessing


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
