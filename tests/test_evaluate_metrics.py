"""compute_metrics' additions against hand-computed values: weighted F1, top-k accuracy, the
expected calibration error (Guo et al. 2017) and the most frequent confusions."""

import numpy as np
import pytest

from components.evaluate import calibration_bins, compute_metrics, expected_calibration_error, scalar_metrics, top_confusions


@pytest.mark.parametrize(
    "confidences, correct, num_bins, expected",
    [
        # Every prediction right at confidence 1: perfectly calibrated.
        ([1.0, 1.0, 1.0], [True, True, True], 15, 0.0),
        # Ten predictions at 0.9, nine right: accuracy equals confidence in the one bin.
        ([0.9] * 10, [True] * 9 + [False], 15, 0.0),
        # Two bins of two: |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.2 + 0.2.
        ([0.9, 0.9, 0.6, 0.6], [True, False, True, True], 15, 0.4),
        # Always wrong at 0.8: the gap is the whole confidence.
        ([0.8, 0.8], [False, False], 15, 0.8),
        # Bins are (lower, upper]: 0.5 falls in (0, 0.5] with M=2, so |0 - 0.5| * 1/2 + |1 - 0.75| * 1/2.
        # (Were 0.5 in the upper bin, both would share it: |0.5 - 0.625| = 0.125.)
        ([0.5, 0.75], [False, True], 2, 0.375),
        # One bin (M=1): |mean accuracy - mean confidence| = |2/3 - 0.6|.
        ([0.3, 0.6, 0.9], [True, False, True], 1, 2 / 3 - 0.6),
        # Confidence 0 goes into the first bin instead of falling outside every bin.
        ([0.0, 1.0], [False, True], 15, 0.0),
    ],
)
def test_expected_calibration_error_hand_computed(confidences, correct, num_bins, expected):
    assert expected_calibration_error(confidences, correct, num_bins) == pytest.approx(expected, abs=1e-12)


def test_calibration_bins_are_the_reliability_diagram_of_the_ece():
    bins = calibration_bins([0.9, 0.9, 0.6, 0.6], [True, False, True, True])
    assert [(b["count"], b["accuracy"], b["confidence"]) for b in bins] == [(2, 1.0, pytest.approx(0.6)), (2, 0.5, pytest.approx(0.9))]
    assert bins[0]["lower"] == pytest.approx(8 / 15) and bins[0]["upper"] == pytest.approx(9 / 15)


@pytest.mark.parametrize(
    "confidences, correct, num_bins, message",
    [
        ([], [], 15, "empty"),
        ([0.5, 0.5], [True], 15, "one length"),
        ([1.2], [True], 15, r"in \[0, 1\]"),
        ([0.5], [True], 0, "num_bins must be >= 1"),
    ],
)
def test_expected_calibration_error_rejects_bad_input(confidences, correct, num_bins, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(confidences, correct, num_bins)


def test_top_confusions_are_off_diagonal_largest_first_ties_in_matrix_order():
    matrix = [[9, 3, 0, 1], [0, 8, 2, 0], [3, 0, 7, 1], [0, 1, 1, 5]]
    names = ["a", "b", "c", "d"]
    assert top_confusions(matrix, names) == [("a", "b", 3), ("c", "a", 3), ("b", "c", 2), ("a", "d", 1), ("c", "d", 1)]
    assert top_confusions(matrix, names, top=1) == [("a", "b", 3)]
    assert top_confusions([[4, 0], [0, 5]], ["x", "y"]) == []  # no mistake, no zero-count entries
    with pytest.raises(ValueError, match=r"shape \(2, 2\) does not match 3 class names"):
        top_confusions([[1, 0], [0, 1]], ["x", "y", "z"])


# Six classes so that both top-2 and top-5 accuracy are defined.
CLASSES = ["a", "b", "c", "d", "e", "f"]
TRUTH = ["a", "a", "b", "c", "d", "f"]
PROBS = np.array(
    [
        [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # a -> a, right
        [0.10, 0.60, 0.15, 0.05, 0.05, 0.05],  # a -> b; a is 3rd: in the top 5, not the top 2
        [0.30, 0.40, 0.10, 0.10, 0.05, 0.05],  # b -> b, right
        [0.05, 0.05, 0.20, 0.60, 0.05, 0.05],  # c -> d; c is 2nd: in the top 2
        [0.05, 0.05, 0.05, 0.75, 0.05, 0.05],  # d -> d, right
        [0.40, 0.30, 0.10, 0.10, 0.08, 0.02],  # f -> a; f is last: not even in the top 5
    ]
)


def test_compute_metrics_adds_weighted_f1_top_k_ece_and_confusions():
    m = compute_metrics(TRUTH, PROBS, CLASSES)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["top_2_accuracy"] == pytest.approx(4 / 6)
    assert m["top_5_accuracy"] == pytest.approx(5 / 6)
    # Per-class F1 (support): a 0.5 (2), b 2/3 (1), c 0 (1), d 2/3 (1), e 0 (0), f 0 (1).
    # a: P=1/2 R=1/2; b: P=1/2 R=1; d: P=1/2 R=1; c, f: never right; e: no example.
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 2 / 3 + 0 + 2 / 3 + 0) / 6)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0 + 2 / 3 + 0 + 0) / 6)
    # Top confidences 0.5, 0.6, 0.4, 0.6, 0.75, 0.4 fall in four of the 15 bins: the two 0.4s
    # (one right), 0.5 (right), the two 0.6s (both wrong), 0.75 (right).
    expected_ece = (abs(0.5 - 0.4) * 2 + abs(1 - 0.5) * 1 + abs(0 - 0.6) * 2 + abs(1 - 0.75) * 1) / 6
    assert m["expected_calibration_error"] == pytest.approx(expected_ece)
    assert m["top_confusions"] == [("a", "b", 1), ("c", "d", 1), ("f", "a", 1)]
    assert list(scalar_metrics(m)) == [
        "accuracy", "macro_f1", "weighted_f1", "top_2_accuracy", "top_5_accuracy",
        "expected_calibration_error", "log_loss", "num_examples",
    ]


def test_top_k_is_left_out_when_there_are_not_more_than_k_classes():
    m = compute_metrics(["x", "y"], np.array([[0.9, 0.1], [0.3, 0.7]]), ["x", "y"])
    assert "top_2_accuracy" not in m and "top_5_accuracy" not in m
    m3 = compute_metrics(["x", "y", "z"], np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]), ["x", "y", "z"])
    assert m3["top_2_accuracy"] == pytest.approx(2 / 3) and "top_5_accuracy" not in m3


def test_compute_metrics_rejects_probabilities_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"probabilities have shape \(1, 3\), expected \(1, 2\)"):
        compute_metrics(["x"], np.array([[0.2, 0.3, 0.5]]), ["x", "y"])
