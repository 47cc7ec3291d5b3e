"""The paired champion/challenger comparison: McNemar's test, the paired bootstrap interval, and
the blessing decision whose reason reports them."""

import math

import numpy as np
import pytest

from components.evaluate import (
    MCNEMAR_EXACT_BELOW,
    PairedTest,
    compare_paired,
    decide_blessing,
    mcnemar_test,
    paired_bootstrap_interval,
)


def _chi2_sf_1df(x):
    # Survival function of chi-square with 1 d.o.f., independent of scipy: P(Z^2 > x) = erfc(sqrt(x / 2)).
    return math.erfc(math.sqrt(x / 2))


@pytest.mark.parametrize(
    "b, c, method, statistic, p_value",
    [
        (0, 0, "exact", 0.0, 1.0),  # no discordant pair: no evidence either way
        (1, 4, "exact", 1.0, 2 * (1 + 5) / 2**5),  # 2 * P(X <= 1), X ~ Bin(5, 1/2) = 12/32
        (4, 1, "exact", 1.0, 2 * (1 + 5) / 2**5),  # two-sided: symmetric in b and c
        (0, 6, "exact", 0.0, 2 / 2**6),
        (12, 12, "exact", 12.0, 1.0),  # 2 * P(X <= 12), X ~ Bin(24, 1/2), is above 1: capped
        (0, 24, "exact", 0.0, 2 / 2**24),  # the largest b + c still tested exactly
        (15, 10, "chi2_corrected", 16 / 25, _chi2_sf_1df(16 / 25)),  # b + c = 25: chi-square
        (20, 10, "chi2_corrected", 81 / 30, _chi2_sf_1df(81 / 30)),  # (|20-10|-1)^2 / 30 = 2.7
        (5, 45, "chi2_corrected", 39**2 / 50, _chi2_sf_1df(39**2 / 50)),
        (13, 13, "chi2_corrected", 0.0, 1.0),  # the correction is clipped at 0 when b = c
    ],
)
def test_mcnemar_hand_computed(b, c, method, statistic, p_value):
    got_method, got_statistic, got_p = mcnemar_test(b, c)
    assert (got_method, got_statistic) == (method, pytest.approx(statistic))
    assert got_p == pytest.approx(p_value, rel=1e-9, abs=1e-15)


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs():
    assert MCNEMAR_EXACT_BELOW == 25
    assert mcnemar_test(12, 12)[0] == "exact" and mcnemar_test(13, 12)[0] == "chi2_corrected"
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_test(-1, 3)


def test_paired_bootstrap_degenerate_cases_are_exact():
    n = 40
    same = [True] * 30 + [False] * 10
    assert paired_bootstrap_interval(same, same) == (0.0, 0.0)  # identical models: no difference at all
    assert paired_bootstrap_interval([True] * n, [False] * n) == (1.0, 1.0)


def test_paired_bootstrap_matches_the_sampling_distribution_and_is_reproducible():
    """The difference of paired 0/1 results has a known standard error: the percentile interval
    must be close to the normal one, (b - c)/n +- 1.96 * sd / sqrt(n)."""
    rng = np.random.default_rng(7)
    n = 400
    champion = rng.random(n) < 0.80
    challenger = champion.copy()
    flip = rng.choice(n, size=60, replace=False)  # 60 discordant pairs
    challenger[flip] = ~champion[flip]
    d = challenger.astype(float) - champion.astype(float)
    se = d.std() / math.sqrt(n)
    low, high = paired_bootstrap_interval(challenger, champion, resamples=4000, seed=1)
    assert low < d.mean() < high
    assert low == pytest.approx(d.mean() - 1.96 * se, abs=0.25 * se)
    assert high == pytest.approx(d.mean() + 1.96 * se, abs=0.25 * se)
    # Fixed seed: the same inputs give the same interval; a lower level gives a narrower one.
    assert paired_bootstrap_interval(challenger, champion) == paired_bootstrap_interval(challenger, champion)
    assert paired_bootstrap_interval(challenger, champion, confidence=0.5)[1] < high


@pytest.mark.parametrize(
    "first, second, kwargs, message",
    [
        ([], [], {}, "empty"),
        ([True, False], [True], {}, "one length"),
        ([True], [True], {"resamples": 0}, "resamples must be >= 1"),
        ([True], [True], {"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
    ],
)
def test_paired_bootstrap_rejects_bad_input(first, second, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap_interval(first, second, **kwargs)


def test_compare_paired_counts_discordant_pairs_and_the_difference():
    challenger = [True, True, True, False, False, True, True, False]
    champion = [True, False, False, True, False, True, False, False]
    t = compare_paired(challenger, champion)
    assert (t.b, t.c, t.n) == (3, 1, 8)  # b: only the challenger right; c: only the champion right
    assert t.difference == pytest.approx((5 - 3) / 8)
    assert t.method == "exact" and t.p_value == pytest.approx(2 * (1 + 4) / 2**4)
    assert t.ci_low <= t.difference <= t.ci_high and t.confidence == 0.95


def _paired(difference, low, high, p):
    return PairedTest(b=5, c=3, n=100, method="exact", statistic=3.0, p_value=p, difference=difference, ci_low=low, ci_high=high, confidence=0.95)


@pytest.mark.parametrize(
    "challenger, floor, champion, tolerance, paired, blessed, reason",
    [
        (
            0.91, 0.5, 0.89, 0.0, _paired(0.02, -0.01, 0.05, 0.21), True,
            "accuracy 0.9100 vs champion 0.8900 (+0.0200, 95% CI [-0.0100, +0.0500], McNemar p=0.21): "
            "clears the floor 0.5000 and is within 0.0000 of the champion's 0.8900",
        ),
        (
            0.87, 0.5, 0.89, 0.0, _paired(-0.02, -0.05, 0.01, 0.48), False,
            "accuracy 0.8700 vs champion 0.8900 (-0.0200, 95% CI [-0.0500, +0.0100], McNemar p=0.48): "
            "is worse than the champion's 0.8900 by more than the tolerance 0.0000",
        ),
        (  # the tolerance, not the p-value, decides: a significant drop within tolerance passes
            0.87, 0.5, 0.89, 0.03, _paired(-0.02, -0.03, -0.01, 0.003), True,
            "(-0.0200, 95% CI [-0.0300, -0.0100], McNemar p=0.003): clears the floor 0.5000 and is within 0.0300",
        ),
        (  # below the floor: the comparison is still reported
            0.40, 0.5, 0.30, 0.0, _paired(0.10, 0.02, 0.18, 0.01), False,
            "accuracy 0.4000 vs champion 0.3000 (+0.1000, 95% CI [+0.0200, +0.1800], McNemar p=0.01): "
            "accuracy 0.4000 is below the floor 0.5000",
        ),
        (  # without the paired test the reasons are the plain ones
            0.91, 0.5, 0.89, 0.0, None, True,
            "accuracy 0.9100 clears the floor 0.5000 and is within 0.0000 of the champion's 0.8900",
        ),
        (0.91, 0.5, None, 0.0, None, True, "accuracy 0.9100 clears the floor 0.5000; no champion to compare"),
    ],
)
def test_decide_blessing_reports_the_paired_test(challenger, floor, champion, tolerance, paired, blessed, reason):
    result = decide_blessing("accuracy", challenger, floor, champion, tolerance, paired)
    assert result.blessed is blessed
    assert reason in result.reason
