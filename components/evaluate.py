"""Evaluate: score the exported model on the test split, compare it with the champion, decide.

The challenger is scored through its *serving signature* on the raw encoded test images, so the
numbers describe exactly what ``push`` publishes and ``predict`` serves. When the target
environment already has a model (the champion) trained on the same label set, it is scored on
the same test images; the blessing rule is a floor plus "not worse than the champion by more than
a tolerance", and a paired test (McNemar, with a paired bootstrap interval of the accuracy
difference) says how much of the difference noise could explain. The training curves in
``training.json`` are read for a diagnosis of over- or underfitting.

Formulas and their sources:

* accuracy, macro and weighted F1, log loss (mean negative log of the probability of the true
  class, nats), top-k accuracy, per-class precision/recall/F1 and the confusion matrix:
  scikit-learn (``sklearn.metrics``; ``top_k_accuracy_score`` for top-k).
* expected calibration error: Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
  Networks", ICML 2017, eq. 3 (M = 15 equal-width confidence bins, as in their experiments).
* McNemar's test: McNemar, Psychometrika 12(2), 1947; continuity correction by Edwards,
  Psychometrika 13(3), 1948; its use for comparing two classifiers on one test set: Dietterich,
  "Approximate Statistical Tests for Comparing Supervised Classification Learning Algorithms",
  Neural Computation 10(7), 1998.
* paired bootstrap percentile interval: Efron and Tibshirani, "An Introduction to the
  Bootstrap", 1993, ch. 13.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Sequence

from components.settings import MODEL_NAME, REGISTRY_URI, TARGET_ENV, Setting, in_range, validate
from components.artifacts import (
    CLASS_NAMES, IMAGE_KEY, LABEL_KEY, OUTPUT_PROBABILITIES, SERVING_DIR, SERVING_INPUT, SERVING_SIGNATURE, TRAINING_FILE,
    few_images_warnings, raw_feature_spec, split_files,
)

_BATCH = 256

#: Equal-width confidence bins of the ECE (Guo et al. 2017 use 15).
ECE_BINS = 15
#: ``top_k_accuracy`` is reported for these k when the model has more than k classes.
TOP_K = (2, 5)
#: Off-diagonal confusion-matrix cells listed in the report, most frequent first.
TOP_CONFUSIONS = 5
#: Below this many discordant pairs McNemar's chi-square approximation is poor and the exact
#: binomial test is used (the rule of thumb b + c < 25 quoted with the test, e.g. in Wikipedia's
#: "McNemar's test" and in mlxtend's ``mcnemar`` documentation).
MCNEMAR_EXACT_BELOW = 25
#: Paired bootstrap: resamples, confidence level of the percentile interval, fixed seed (so that
#: a rerun on the same predictions reports the same interval).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0

#: The usual remedies, naming the finetune settings (``FinetuneSettings``) that apply them.
OVERFIT_REMEDIES = (
    "regularize: more dropout in the head (`dropout`), L2 on its kernels (`l2`) or decoupled weight decay (`optimizer=adamw`, `weight_decay`)",
    "augment the training images (`augmentation`: flips, rotation, zoom, contrast)",
    "stop earlier: fewer `epochs`, or early stopping on the eval split (`early_stopping_patience`)",
    "more labelled training data",
)
UNDERFIT_REMEDIES = (
    "more capacity: unfreeze the top layers of the base model (two-phase fine-tuning: train the head, "
    "then the top of the base at a 10-100x lower learning rate: `fine_tune_epochs`, `unfreeze=top:N`, "
    "`fine_tune_learning_rate`), or a larger head (`dense_units`)",
    "train longer: more `epochs`",
    "a higher `learning_rate` for the head",
    "a larger base model or input size (`base_model`, `width_multiplier`, `image_size`)",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateSettings:
    """Settings of the evaluate step, validated on construction.

    Attributes:
        registry_uri, model_name, target_env: Where the champion is (the model ``target_env``
            points at); an empty one of them skips the comparison.
        min_accuracy: Test accuracy floor for blessing, in [0, 1].
        champion_tolerance: How much lower than the champion's accuracy the challenger may
            score and still be blessed, in [0, 1] (an accuracy difference).
        allow_label_change: Bless a model trained on another label set than the champion's
            (see ``decide_blessing``).
    """

    registry_uri: str = REGISTRY_URI.field()
    model_name: str = MODEL_NAME.field()
    target_env: str = TARGET_ENV.field()
    min_accuracy: float = Setting(float, 0.5, "test accuracy floor for blessing, in [0, 1]", check=in_range(0, 1)).field()
    champion_tolerance: float = Setting(
        float, 0.0, "how much lower than the champion's accuracy the challenger may score", check=in_range(0, 1)
    ).field()
    allow_label_change: bool = Setting(
        bool, False, "let a model trained on another label set than the champion's replace it"
    ).field()

    def __post_init__(self) -> None:
        validate(self)


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """The challenger against the champion on the same test examples.

    Attributes:
        b: Examples the challenger classifies right and the champion wrong (>= 0).
        c: Examples the challenger classifies wrong and the champion right (>= 0).
        n: Test examples compared (>= b + c).
        method: ``exact`` (two-sided binomial test of b out of b + c at 1/2) or
            ``chi2_corrected`` (chi-square with Edwards' continuity correction, 1 d.o.f.).
        statistic: ``max(|b - c| - 1, 0)^2 / (b + c)`` for ``chi2_corrected``; ``min(b, c)`` for
            ``exact`` (the convention of statsmodels' ``mcnemar``).
        p_value: Two-sided p-value in [0, 1] of "both models have the same error rate".
        difference: Challenger accuracy minus champion accuracy, ``(b - c) / n``, in [-1, 1].
        ci_low: Lower end of the paired bootstrap percentile interval of ``difference``.
        ci_high: Upper end of that interval.
        confidence: Level of the interval, in (0, 1).
    """

    b: int
    c: int
    n: int
    method: str
    statistic: float
    p_value: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float

    def summary(self, metric: str, challenger: float, champion: float) -> str:
        """``"accuracy 0.9100 vs champion 0.8900 (+0.0200, 95% CI [-0.0100, +0.0500], McNemar p=0.21)"``."""
        return (
            f"{metric} {challenger:.4f} vs champion {champion:.4f} ({self.difference:+.4f}, "
            f"{self.confidence:.0%} CI [{self.ci_low:+.4f}, {self.ci_high:+.4f}], McNemar p={self.p_value:.2g})"
        )


@dataclasses.dataclass(frozen=True)
class Blessing:
    """The outcome of the champion/challenger gate: ``blessed`` and a one-line ``reason``."""

    blessed: bool
    reason: str


def decide_blessing(
    metric: str,
    challenger: float,
    floor: float,
    champion: float | None = None,
    tolerance: float = 0.0,
    paired: PairedTest | None = None,
    label_change: str | None = None,
    allow_label_change: bool = False,
) -> Blessing:
    """Decides whether the challenger may be pushed.

    A challenger trained on another label set than the champion's solves another task: the two
    are not compared, and it is refused unless ``allow_label_change`` (then the floor decides).

    The rule: the challenger must reach the floor, and must not be worse than the champion by
    more than ``tolerance``. The paired test is *reported, not gating*: the rule is the
    pipeline's documented contract (``min_accuracy``, ``champion_tolerance``), and on the small
    test splits of fine-tuning a significance requirement would block almost every retrained
    model that is merely as good as its champion. The reason carries the test so that a reader
    sees whether a difference that decided the blessing is larger than noise.

    Args:
        metric: Name of the compared metric (higher is better), for the reason text.
        challenger: The challenger's value of ``metric`` on the test split, in [0, 1].
        floor: Absolute minimum the challenger must reach (inclusive), in [0, 1].
        champion: The champion's value on the same test split, or None when there is no
            comparable champion (then the floor alone decides).
        tolerance: How much worse than the champion the challenger may be (>= 0).
        paired: The paired test of the two models on the same examples, for the reason text;
            None when there is no champion or its per-example predictions are unknown.
        label_change: How the label set differs from the champion's (e.g. "added ['x'],
            removed ['7']"), or None when it does not or there is no champion.
        allow_label_change: Let a challenger with another label set replace the champion.

    Returns:
        ``Blessing``; the reason states the compared numbers and, with ``paired``, the
        difference, its interval and the McNemar p-value, e.g. ``"accuracy 0.9100 vs champion
        0.8900 (+0.0200, 95% CI [-0.0100, +0.0500], McNemar p=0.21): clears the floor 0.5000 and
        is within 0.0000 of the champion's 0.8900"``.
    """
    if label_change is not None:
        if not allow_label_change:
            return Blessing(False, f"the label set differs from the champion's ({label_change}); "
                                   "set allow_label_change to let this model replace it")
        if challenger < floor:
            return Blessing(False, f"{metric} {challenger:.4f} is below the floor {floor:.4f} (label set changed: {label_change})")
        return Blessing(True, f"{metric} {challenger:.4f} clears the floor {floor:.4f}; label set changed ({label_change}), allowed")
    versus = f"{paired.summary(metric, challenger, champion)}: " if paired is not None and champion is not None else ""
    if challenger < floor:
        below = f"{metric} {challenger:.4f} is below the floor {floor:.4f}"
        return Blessing(False, f"{versus}{below}" if versus else below)
    if champion is None:
        return Blessing(True, f"{metric} {challenger:.4f} clears the floor {floor:.4f}; no champion to compare")
    subject = "" if versus else f"{metric} {challenger:.4f} "
    if challenger < champion - tolerance:
        return Blessing(
            False,
            f"{versus}{subject}is worse than the champion's {champion:.4f} by more than the tolerance {tolerance:.4f}",
        )
    return Blessing(
        True,
        f"{versus}{subject}clears the floor {floor:.4f} and is within {tolerance:.4f} of the champion's {champion:.4f}",
    )


def mcnemar_test(b: int, c: int) -> tuple[str, float, float]:
    """McNemar's test of two classifiers from their discordant pair counts.

    Under the null hypothesis both classifiers have the same error rate, so each of the
    ``b + c`` examples on which exactly one of them is right is equally likely to favour either.
    With ``b + c < MCNEMAR_EXACT_BELOW`` the exact two-sided binomial test of ``b`` out of
    ``b + c`` at 1/2 is used; otherwise the chi-square statistic with continuity correction
    ``max(|b - c| - 1, 0)^2 / (b + c)`` on 1 degree of freedom (Edwards 1948), the version Dietterich
    (1998) recommends for comparing two classifiers on one test set.

    Sources: McNemar, "Note on the sampling error of the difference between correlated
    proportions or percentages", Psychometrika 12(2):153-157, 1947; Edwards, "Note on the
    'correction for continuity' in testing the significance of the difference between
    correlated proportions", Psychometrika 13(3):185-187, 1948; Dietterich, Neural Computation
    10(7):1895-1923, 1998. The p-values come from ``scipy.stats.binomtest`` and
    ``scipy.stats.chi2``.

    Args:
        b: Examples only the first classifier gets right, >= 0.
        c: Examples only the second classifier gets right, >= 0.

    Returns:
        ``(method, statistic, p_value)``: ``method`` is ``exact`` or ``chi2_corrected``;
        ``statistic`` is ``min(b, c)`` (exact) or the corrected chi-square value (>= 0);
        ``p_value`` in [0, 1]; with no discordant pair (b = c = 0) it is 1.

    Raises:
        ValueError: a negative count.
    """
    from scipy import stats

    if b < 0 or c < 0:
        raise ValueError(f"discordant pair counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n < MCNEMAR_EXACT_BELOW:
        p = stats.binomtest(b, n, 0.5).pvalue if n else 1.0
        return "exact", float(min(b, c)), min(1.0, float(p))
    # Edwards' correction brings the continuous chi-square closer to the discrete count; it is
    # clipped at 0 so that b = c (no evidence either way) gives p = 1, not a p just below 1.
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    return "chi2_corrected", float(statistic), float(stats.chi2.sf(statistic, df=1))


def paired_bootstrap_interval(
    first_correct: Sequence[bool],
    second_correct: Sequence[bool],
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile interval of ``accuracy(first) - accuracy(second)`` by a paired bootstrap.

    Each resample draws ``n`` test examples with replacement and keeps both models' results on
    every drawn example together (the pairing), so the interval reflects the correlation between
    the two models' errors, which is what makes it narrower than two separate intervals.
    Source: Efron and Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13 (percentile
    interval).

    Args:
        first_correct: Per-example correctness of the first model, bool ``[n]``.
        second_correct: Per-example correctness of the second model on the same examples, ``[n]``.
        resamples: Bootstrap resamples, >= 1.
        confidence: Interval level in (0, 1); 0.95 gives the 2.5th and 97.5th percentiles.
        seed: Seed of numpy's ``default_rng``: the same inputs give the same interval.

    Returns:
        ``(low, high)`` in [-1, 1], ``low <= high``.

    Raises:
        ValueError: empty or unequal-length inputs, ``resamples < 1``, ``confidence`` outside (0, 1).
    """
    import numpy as np

    first, second = np.asarray(first_correct, bool), np.asarray(second_correct, bool)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"paired correctness must be two 1-D arrays of one length, got shapes {first.shape} and {second.shape}")
    if not first.size:
        raise ValueError("paired correctness is empty: nothing to resample")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    per_example = first.astype(np.int8) - second.astype(np.int8)
    n = per_example.size
    rng = np.random.default_rng(seed)
    # Resample in chunks of ~10M indices so a large test split does not need resamples x n memory.
    chunk = max(1, 10_000_000 // n)
    means = np.concatenate([
        per_example[rng.integers(0, n, size=(min(chunk, resamples - start), n))].mean(axis=1)
        for start in range(0, resamples, chunk)
    ])
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def compare_paired(
    challenger_correct: Sequence[bool],
    champion_correct: Sequence[bool],
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> PairedTest:
    """McNemar's test and the paired bootstrap interval of challenger vs champion.

    Args:
        challenger_correct: Per-example correctness of the challenger, bool ``[n]``.
        champion_correct: Per-example correctness of the champion on the same examples, ``[n]``.
        resamples, confidence, seed: See ``paired_bootstrap_interval``.

    Returns:
        ``PairedTest`` (b: only the challenger right; c: only the champion right).

    Raises:
        ValueError: as ``paired_bootstrap_interval``.
    """
    import numpy as np

    low, high = paired_bootstrap_interval(challenger_correct, champion_correct, resamples, confidence, seed)
    ours, theirs = np.asarray(challenger_correct, bool), np.asarray(champion_correct, bool)
    b, c = int(np.sum(ours & ~theirs)), int(np.sum(~ours & theirs))
    method, statistic, p_value = mcnemar_test(b, c)
    return PairedTest(b, c, int(ours.size), method, statistic, p_value, (b - c) / ours.size, low, high, confidence)


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], num_bins: int = ECE_BINS) -> float:
    """Expected calibration error (ECE) of top-class confidences.

    ``ECE = sum_m |acc(B_m) - conf(B_m)| * |B_m| / n`` over ``num_bins`` equal-width bins
    ``B_m = ((m-1)/M, m/M]`` of the confidence (a confidence of exactly 0 falls in the first
    bin), where ``acc`` is the fraction of correct predictions in the bin and ``conf`` their mean
    confidence; empty bins contribute nothing. Source: Guo, Pleiss, Sun and Weinberger, "On
    Calibration of Modern Neural Networks", ICML 2017, section 2, eq. 3 (they use M = 15).

    Args:
        confidences: Probability of the predicted class per example, float ``[n]`` in [0, 1].
        correct: Whether that prediction is right, bool ``[n]``.
        num_bins: M, >= 1.

    Returns:
        ECE in [0, 1]; 0 is perfectly calibrated.

    Raises:
        ValueError: empty or unequal-length inputs, a confidence outside [0, 1], ``num_bins < 1``.
    """
    return sum(abs(b["accuracy"] - b["confidence"]) * b["count"] for b in calibration_bins(confidences, correct, num_bins)) / len(confidences)


def calibration_bins(confidences: Sequence[float], correct: Sequence[bool], num_bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """The non-empty bins of ``expected_calibration_error`` (the data of a reliability diagram).

    Args:
        confidences, correct, num_bins: See ``expected_calibration_error``.

    Returns:
        One ``{"lower", "upper", "count", "accuracy", "confidence"}`` per non-empty bin, in
        increasing confidence; the bin holds confidences in ``(lower, upper]``.

    Raises:
        ValueError: as ``expected_calibration_error``.
    """
    import numpy as np

    conf, right = np.asarray(confidences, np.float64), np.asarray(correct, bool)
    if conf.shape != right.shape or conf.ndim != 1:
        raise ValueError(f"confidences and correct must be two 1-D arrays of one length, got shapes {conf.shape} and {right.shape}")
    if not conf.size:
        raise ValueError("no confidence to calibrate: the inputs are empty")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError(f"confidences must be in [0, 1], got values in [{conf.min()}, {conf.max()}]")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # right=True puts a confidence equal to an inner edge in the bin below: bins are (lower, upper].
    index = np.digitize(conf, edges[1:-1], right=True)
    return [
        {
            "lower": float(edges[m]),
            "upper": float(edges[m + 1]),
            "count": int(np.sum(index == m)),
            "accuracy": float(right[index == m].mean()),
            "confidence": float(conf[index == m].mean()),
        }
        for m in range(num_bins)
        if np.any(index == m)
    ]


def top_confusions(confusion_matrix: Sequence[Sequence[int]], class_names: Sequence[str], top: int = TOP_CONFUSIONS) -> list[tuple[str, str, int]]:
    """The most frequent mistakes: off-diagonal cells of a confusion matrix, largest first.

    Args:
        confusion_matrix: ``[k, k]`` counts, rows = true class, columns = predicted class.
        class_names: The ``k`` class names in matrix order.
        top: How many to return, >= 0.

    Returns:
        Up to ``top`` ``(true class, predicted class, count)`` with ``count > 0``, by decreasing
        count; ties keep matrix order (row, then column). In JSON each is a 3-element list.

    Raises:
        ValueError: a matrix that is not ``[k, k]`` with ``k = len(class_names)``.
    """
    import numpy as np

    matrix = np.asarray(confusion_matrix)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"confusion matrix shape {matrix.shape} does not match {k} class names")
    cells = [(int(matrix[i, j]), i, j) for i in range(k) for j in range(k) if i != j and matrix[i, j] > 0]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [(class_names[i], class_names[j], count) for count, i, j in cells[:top]]


def diagnose_fit(
    history: dict[str, Sequence[float]],
    num_classes: int | None = None,
    gap_threshold: float = 0.10,
    loss_rise: float = 0.10,
    min_loss_increase: float = 0.05,
    poor_accuracy: float = 0.70,
    chance_margin: float = 0.10,
) -> dict[str, Any]:
    """Reads the training curves for over- or underfitting.

    The usual bias/variance reading of learning curves (e.g. Goodfellow, Bengio and Courville,
    "Deep Learning", 2016, sections 5.2 and 7.8 on early stopping), read at the final epoch: the
    state training ended in (with early stopping that restores the best weights, the exported
    model may be an earlier epoch's, but the trend that stopped training is the one diagnosed):

    * ``underfit`` (checked first: a model that cannot fit its training data has to be fixed
      before its generalization means anything): the final train accuracy is poor, and so is the
      eval accuracy (when there is one). Poor means below ``poor_accuracy``, or less than
      ``chance_margin`` above chance ``1 / num_classes``.
    * ``overfit``: the final train accuracy exceeds the eval accuracy by more than
      ``gap_threshold``, or the eval loss ended more than ``loss_rise`` (relative) and more than
      ``min_loss_increase`` (absolute) above its minimum while the train loss kept falling after
      that epoch. The absolute bar keeps a well-fit model (eval loss 0.10 -> 0.12, +20 %) from
      being called overfit for noise.
    * ``ok``: neither. Without eval curves (no eval split) overfitting cannot be judged, and the
      reason says so.

    Args:
        history: Keras' per-epoch ``History.history`` as ``training.json`` holds it: ``loss``
            and ``accuracy`` (required), ``val_loss`` and ``val_accuracy`` (optional, on the eval
            split); lists of one length >= 1. Accuracies in [0, 1], losses in nats.
        num_classes: Number of classes (>= 2) for the chance level; None skips that test.
        gap_threshold: Train-minus-eval accuracy above which the model overfits. Default 0.10.
        loss_rise: Relative rise of the final eval loss above its minimum that counts as "clearly
            above" it. Default 0.10 (10 %).
        min_loss_increase: Smallest absolute rise of the eval loss, in nats, that counts.
            Default 0.05.
        poor_accuracy: Accuracy below which a curve counts as poor. Default 0.70.
        chance_margin: A curve less than this far above chance counts as poor. Default 0.10.

    Returns:
        ``{"verdict": "overfit" | "underfit" | "ok", "reason": str, "remedies": list[str] (empty
        when ok), "epochs": int, "final": {"train_accuracy", "eval_accuracy", "train_loss",
        "eval_loss"} (eval ones None without eval curves)}``.

    Raises:
        ValueError: a missing or empty ``loss``/``accuracy`` curve, curves of different lengths,
            only one of ``val_loss``/``val_accuracy``, ``num_classes < 2``, a negative threshold.
    """
    for key in ("loss", "accuracy"):
        if not history.get(key):
            raise ValueError(f"training history has no {key!r} curve (keys: {sorted(history)})")
    if ("val_loss" in history) != ("val_accuracy" in history):
        raise ValueError(f"training history needs both 'val_loss' and 'val_accuracy' or neither (keys: {sorted(history)})")
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in history]
    lengths = {k: len(history[k]) for k in keys}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"training curves differ in length: {lengths}")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    for name, value in (("gap_threshold", gap_threshold), ("loss_rise", loss_rise), ("min_loss_increase", min_loss_increase),
                        ("poor_accuracy", poor_accuracy), ("chance_margin", chance_margin)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")

    loss, accuracy = list(history["loss"]), list(history["accuracy"])
    val_loss, val_accuracy = list(history.get("val_loss", [])), list(history.get("val_accuracy", []))
    has_eval = bool(val_accuracy)
    train_acc, eval_acc = accuracy[-1], (val_accuracy[-1] if has_eval else None)
    final = {
        "train_accuracy": train_acc,
        "eval_accuracy": eval_acc,
        "train_loss": loss[-1],
        "eval_loss": val_loss[-1] if has_eval else None,
    }
    chance = 1.0 / num_classes if num_classes else None
    poor_bar = max(poor_accuracy, chance + chance_margin) if chance is not None else poor_accuracy

    def result(verdict: str, reason: str, remedies: Iterable[str] = ()) -> dict[str, Any]:
        return {"verdict": verdict, "reason": reason, "remedies": list(remedies), "epochs": len(loss), "final": final}

    bar_text = f"below {poor_bar:.2f}" + (f" (the larger of {poor_accuracy:.2f} and chance {chance:.2f} + {chance_margin:.2f})" if chance is not None else "")
    if train_acc < poor_bar and (eval_acc is None or eval_acc < poor_bar):
        seen = f"final train accuracy {train_acc:.3f}" + (f" and eval accuracy {eval_acc:.3f} are both" if has_eval else " is")
        return result("underfit", f"{seen} {bar_text}: the model does not fit even its training data", UNDERFIT_REMEDIES)
    if not has_eval:
        return result("ok", f"final train accuracy {train_acc:.3f} is not poor; no eval curves (no eval split), so overfitting cannot be judged")
    gap = train_acc - eval_acc
    if gap > gap_threshold:
        return result(
            "overfit",
            f"final train accuracy {train_acc:.3f} exceeds eval accuracy {eval_acc:.3f} by {gap:.3f} (> {gap_threshold:.2f})",
            OVERFIT_REMEDIES,
        )
    best = min(range(len(val_loss)), key=val_loss.__getitem__)
    rise = val_loss[-1] - val_loss[best]
    if rise > val_loss[best] * loss_rise and rise > min_loss_increase and loss[-1] < loss[best]:
        return result(
            "overfit",
            f"eval loss rose from its minimum {val_loss[best]:.3f} (epoch {best + 1}) to {val_loss[-1]:.3f} "
            f"(+{val_loss[-1] / val_loss[best] - 1:.0%}, > {loss_rise:.0%} and > {min_loss_increase:g}) while train loss kept falling "
            f"({loss[best]:.3f} -> {loss[-1]:.3f})",
            OVERFIT_REMEDIES,
        )
    return result(
        "ok",
        f"final train accuracy {train_acc:.3f}, eval accuracy {eval_acc:.3f} (gap {gap:+.3f}, at most {gap_threshold:.2f}); "
        f"eval loss {val_loss[-1]:.3f} within {loss_rise:.0%} or {min_loss_increase:g} of its minimum {val_loss[best]:.3f}, "
        f"or train loss not falling",
    )


def read_split(files: list[str]) -> tuple[list[bytes], list[str]]:
    """Encoded images and class names of a split's TFRecord files (file order)."""
    import tensorflow as tf


    images, labels = [], []
    for batch in tf.data.TFRecordDataset(files).batch(_BATCH).map(lambda x: tf.io.parse_example(x, raw_feature_spec())):
        images.extend(batch[IMAGE_KEY].numpy().tolist())
        labels.extend(v.decode() for v in batch[LABEL_KEY].numpy())
    return images, labels


def load_serving(model_dir: str) -> tuple[Callable[[list[bytes]], Any], list[str]]:
    """Loads a serving SavedModel; returns ``(predict_probabilities, class_names)``.

    ``predict_probabilities(images)`` maps a list of encoded images to a float32 numpy array
    ``[n, num_classes]``.
    """
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures[SERVING_SIGNATURE]
    class_names = [v.decode() for v in getattr(loaded, CLASS_NAMES).numpy()]

    def predict(images: list[bytes]) -> Any:
        parts = [
            serve(**{SERVING_INPUT: tf.constant(images[i:i + _BATCH])})[OUTPUT_PROBABILITIES].numpy()
            for i in range(0, len(images), _BATCH)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(class_names)), np.float32)

    return predict, class_names


def compute_metrics(true_labels: list[str], probabilities: Any, class_names: list[str]) -> dict[str, Any]:
    """Classification metrics of probabilities ``[n, num_classes]`` (columns = ``class_names``).

    Args:
        true_labels: True class name per example, ``[n]``.
        probabilities: float ``[n, num_classes]``, rows summing to 1 (the serving signature's
            ``probabilities``).
        class_names: Column order of ``probabilities``.

    Returns:
        Scalars: ``accuracy``, ``macro_f1``, ``weighted_f1`` (F1 averaged with class support as
        weights), ``top_2_accuracy`` / ``top_5_accuracy`` (only when there are more than 2 / 5
        classes), ``expected_calibration_error`` (all in [0, 1]), ``log_loss`` (nats, >= 0),
        ``num_examples``. Structures: ``per_class`` ({class: {precision, recall, f1,
        support}}), ``confusion_matrix`` (rows = true class, columns = predicted, in
        ``class_names`` order), ``top_confusions`` (``top_confusions()``), ``calibration_bins``
        (``calibration_bins()``).

    Raises:
        ValueError: no example, a true label that is not in ``class_names`` (named), or
            probabilities whose shape is not ``[n, num_classes]``.
    """
    import numpy as np
    from sklearn import metrics

    if not true_labels:
        raise ValueError("the test split is empty: nothing to evaluate")
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(true_labels) - set(index))
    if unknown:
        raise ValueError(f"test labels {unknown} are not among the model's classes {class_names}")
    probabilities = np.asarray(probabilities)
    if probabilities.shape != (len(true_labels), len(class_names)):
        raise ValueError(f"probabilities have shape {probabilities.shape}, expected {(len(true_labels), len(class_names))}")
    y_true = np.array([index[c] for c in true_labels])
    y_pred = probabilities.argmax(axis=1)
    ids = list(range(len(class_names)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    matrix = metrics.confusion_matrix(y_true, y_pred, labels=ids).tolist()
    # float32 probabilities can sum to 1 + 1e-7: clip the top-class confidence into the ECE's domain.
    confidence = np.clip(probabilities.max(axis=1).astype(np.float64), 0.0, 1.0)
    correct = y_pred == y_true
    result: dict[str, Any] = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "macro_f1": float(metrics.f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(metrics.f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
    }
    for k in TOP_K:
        if len(class_names) > k:
            result[f"top_{k}_accuracy"] = float(metrics.top_k_accuracy_score(y_true, probabilities, k=k, labels=ids))
    result.update(
        expected_calibration_error=expected_calibration_error(confidence, correct),
        log_loss=float(metrics.log_loss(y_true, np.clip(probabilities, 1e-7, 1.0), labels=ids)),
        num_examples=len(true_labels),
        per_class={
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(class_names)
        },
        confusion_matrix=matrix,
        top_confusions=top_confusions(matrix, class_names),
        calibration_bins=calibration_bins(confidence, correct),
    )
    return result


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of ``compute_metrics``' result (what KFP ``Metrics`` shows), in order."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def report_markdown(result: dict[str, Any]) -> str:
    """A Markdown report of ``run_evaluate``'s result for the KFP UI.

    Sections: the blessing decision and its reason, a warning per class with few test images,
    the scalar metrics, the per-class table, the
    most frequent confusions, calibration, the champion comparison with the paired test, and the
    diagnosis of the training curves with its remedies.
    """
    m = result["metrics"]
    top_k = "".join(f"; top-{k} accuracy {m[f'top_{k}_accuracy']:.4f}" for k in TOP_K if f"top_{k}_accuracy" in m)
    lines = [
        "# Evaluation",
        "",
        f"**{'Blessed' if result['blessed'] else 'Not blessed'}**: {result['reason']}",
        "",
        *[f"**Warning**: {w}.\n" for w in result.get("warnings", [])],
        f"Test examples: {m['num_examples']}; accuracy {m['accuracy']:.4f}; macro F1 {m['macro_f1']:.4f}; "
        f"weighted F1 {m['weighted_f1']:.4f}{top_k}; log loss {m['log_loss']:.4f}; "
        f"expected calibration error {m['expected_calibration_error']:.4f} ({ECE_BINS} bins)",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        for c, v in m["per_class"].items()
    ]
    lines += ["", "## Most frequent confusions", ""]
    if m["top_confusions"]:
        lines += ["| true class | predicted as | count |", "|---|---|---:|"]
        lines += [f"| {t} | {p} | {n} |" for t, p, n in m["top_confusions"]]
    else:
        lines.append("None: every test image was classified correctly.")
    lines += ["", "## Calibration", "", "| confidence | examples | accuracy | mean confidence |", "|---|---:|---:|---:|"]
    lines += [
        f"| ({b['lower']:.3f}, {b['upper']:.3f}] | {b['count']} | {b['accuracy']:.3f} | {b['confidence']:.3f} |"
        for b in m["calibration_bins"]
    ]
    lines += ["", "## Champion", ""]
    ch = result.get("champion")
    if not ch:
        lines.append("No champion: the target environment has no model yet, so the floor alone decided.")
    elif ch["status"] != "compared":
        lines.append(f"Champion version {ch['version']} was trained on other classes ({', '.join(ch['classes'])}); not compared.")
    else:
        t = ch["paired_test"]
        lines += [
            f"Champion version {ch['version']}: accuracy {ch['accuracy']:.4f}, macro F1 {ch['macro_f1']:.4f}, on the same {t['n']} test images.",
            "",
            "| challenger - champion accuracy | {:.0%} paired bootstrap CI | b (only challenger right) | c (only champion right) | McNemar | p-value |".format(t["confidence"]),
            "|---:|---|---:|---:|---|---:|",
            f"| {t['difference']:+.4f} | [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] | {t['b']} | {t['c']} | {t['method']} | {t['p_value']:.3g} |",
            "",
            "The p-value is reported, not gating: blessing needs the floor and at most the tolerance below the champion.",
        ]
    lines += ["", "## Training curves", ""]
    d = result.get("diagnosis")
    if not d:
        lines.append("Not available: the model artifact has no `training.json`.")
    else:
        lines.append(f"**{d['verdict']}**: {d['reason']}.")
        if d["remedies"]:
            lines += ["", "Usual remedies:", ""] + [f"- {r}" for r in d["remedies"]]
    return "\n".join(lines) + "\n"


def score_champion(
    registry_uri: str, model_name: str, alias: str, class_names: list[str], images: list[bytes], labels: list[str], scratch_dir: str
) -> dict[str, Any] | None:
    """Scores the model the alias points at on the same test images.

    Args:
        registry_uri, model_name, alias: Where the champion is.
        class_names: The challenger's classes (compared as a set with the champion's).
        images: Encoded test images ``[n]``; labels: their true class names ``[n]``.
        scratch_dir: Local folder the champion version is downloaded into.

    Returns:
        None when there is no registry model or alias yet; else ``{"version", "status"}`` with
        ``status`` ``compared`` (and ``accuracy``, ``macro_f1``, and ``predictions``: the
        champion's predicted class name per test image, ``[n]``, for the paired test) or
        ``different_labels`` (and ``classes``: the champion was trained on another label set,
        so the two are not the same task and are not compared).

    Raises:
        components.registry.RegistryError: the registry cannot be read.
    """
    from components import registry

    found = registry.champion(registry_uri, model_name, alias)
    if found is None:
        return None
    version = found["version"]
    local = registry.open_registry(registry_uri).download_version(model_name, version, os.path.join(scratch_dir, f"champion-{version}"))
    predict, champion_classes = load_serving(local)
    if sorted(champion_classes) != sorted(class_names):
        return {"version": version, "status": "different_labels", "classes": champion_classes}
    probabilities = predict(images)
    m = compute_metrics(labels, probabilities, champion_classes)
    # Names, not column ids: the champion may order the same classes differently.
    predictions = [champion_classes[i] for i in probabilities.argmax(axis=1)]
    return {"version": version, "status": "compared", "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "predictions": predictions}


def read_training(model_dir: str) -> dict[str, Any] | None:
    """The model folder's ``training.json`` (``run_finetune_step``'s summary), or None without one.

    ``finetune`` always writes it; a model artifact made elsewhere may lack it, and the report then
    says that the training curves are not available (rather than failing the evaluation).

    Raises:
        json.JSONDecodeError: the file exists but is not JSON.
    """
    path = os.path.join(model_dir, TRAINING_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_evaluate(
    test_files: list[str],
    model_dir: str,
    settings: EvaluateSettings,
    scratch_dir: str = "/tmp",
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Scores the challenger's serving model on the test split and decides its blessing.

    Args:
        test_files: TFRecord files of the test split.
        model_dir: Folder of the serving SavedModel (``finetune``'s ``serving/``).
        settings: The floor, the tolerance and where the champion is (``EvaluateSettings``).
        scratch_dir: Local folder for downloading the champion.
        training: The content of the model folder's ``training.json`` (``run_finetune_step``'s
            summary); its ``history`` is diagnosed by ``diagnose_fit``. None skips the diagnosis.

    Returns:
        What ``evaluation.json`` holds: ``{"metrics": compute_metrics(...), "class_names",
        "blessed", "reason", "champion", "champion_version", "diagnosis", "warnings"}``. ``champion``
        is None or ``score_champion``'s block without the per-example predictions, plus
        ``paired_test`` (the fields of ``PairedTest``) when compared. ``champion_version`` is the
        version the alias pointed at when read (None: unset, or no registry/alias given), which the
        push step's gate requires to be unchanged. ``diagnosis`` is ``diagnose_fit``'s result or
        None. ``warnings`` names each class with fewer than
        ``artifacts.MIN_SPLIT_IMAGES_PER_CLASS`` test images.

    Raises:
        ValueError: empty test split, a ``training`` without a usable ``history`` (see
            ``diagnose_fit``).
    """
    import numpy as np

    images, labels = read_split(test_files)
    predict, class_names = load_serving(model_dir)
    probabilities = predict(images)
    metrics = compute_metrics(labels, probabilities, class_names)
    diagnosis = None
    if training is not None:
        if "history" not in training:
            raise ValueError(f"training summary has no 'history' (keys: {sorted(training)})")
        diagnosis = diagnose_fit(training["history"], num_classes=len(class_names))
    champion, paired, champion_accuracy = None, None, None
    if settings.registry_uri and settings.model_name and settings.target_env:
        champion = score_champion(
            settings.registry_uri, settings.model_name, settings.target_env, class_names, images, labels, scratch_dir
        )
    if champion and champion["status"] == "compared":
        truth = np.array(labels)
        ours = np.array([class_names[i] for i in probabilities.argmax(axis=1)]) == truth
        paired = compare_paired(ours, np.array(champion.pop("predictions")) == truth)
        champion["paired_test"] = dataclasses.asdict(paired)
        champion_accuracy = champion["accuracy"]
    label_change = None
    if champion and champion["status"] == "different_labels":
        added = sorted(set(class_names) - set(champion["classes"]))
        removed = sorted(set(champion["classes"]) - set(class_names))
        label_change = f"champion version {champion['version']}: added {added}, removed {removed}"
    blessing = decide_blessing(
        "accuracy", metrics["accuracy"], settings.min_accuracy, champion_accuracy, settings.champion_tolerance, paired,
        label_change, settings.allow_label_change,
    )
    reason = blessing.reason
    support = {"test": {c: v["support"] for c, v in metrics["per_class"].items()}}
    return {
        "metrics": metrics,
        "class_names": class_names,
        "blessed": blessing.blessed,
        "reason": reason,
        "champion": champion,
        # What the push's gate checks: the alias must still point here (None: it was unset).
        "champion_version": None if champion is None else champion["version"],
        "diagnosis": diagnosis,
        "warnings": few_images_warnings(support, class_names, splits=("test",)),
    }


def write_json(obj: Any, path: str) -> None:
    """Writes ``obj`` as JSON atomically (temp file, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def run_evaluate_step(
    examples_dir: str,
    model_dir: str,
    evaluation_path: str,
    report_path: str,
    settings: EvaluateSettings,
    html_path: str | None = None,
) -> dict[str, Any]:
    """The evaluate step: scores the ``model`` artifact's serving model on the ``examples``
    artifact's test split against the floor and the champion, and writes the evaluation.

    Args:
        examples_dir: The preprocess step's ``examples`` artifact folder.
        model_dir: The finetune step's ``model`` artifact folder (its ``serving/`` is scored, its
            ``training.json`` diagnosed).
        evaluation_path: Output file: ``run_evaluate``'s result as JSON (push copies it).
        report_path: Output file: the Markdown report (``report_markdown``).
        settings: ``EvaluateSettings``.
        html_path: Output file, when given: the report with its charts as one self-contained
            HTML page (``components.report_html.evaluation_report``).

    Returns:
        ``run_evaluate``'s result.

    Raises:
        FileNotFoundError: no test split in ``examples_dir``.
        ValueError, components.registry.RegistryError: see ``run_evaluate``.
    """
    import tempfile

    training = read_training(model_dir)
    with tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:
        result = run_evaluate(
            split_files(examples_dir, "test"), os.path.join(model_dir, SERVING_DIR), settings, scratch, training=training,
        )
    write_json(result, evaluation_path)
    with open(report_path, "w") as f:
        f.write(report_markdown(result))
    for warning in result["warnings"]:
        print(f"warning: {warning}", flush=True)
    if html_path is not None:
        from components.report_html import evaluation_report, write_page

        write_page(evaluation_report(result, training), html_path)
    return result
