"""Paired tests, effect size and Holm's correction: published outputs, brute-force null distributions, hand work."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bayespeft.stats import cohens_dz, compare_methods, compare_paired, holm, paired_t_test, wilcoxon_test

# Student's sleep data (Cushny & Peebles 1905; R's `sleep`): extra hours of sleep of 10 patients under two drugs.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_matches_r_on_the_sleep_data():
    # R: t.test(sleep$extra[1:10], sleep$extra[11:20], paired = TRUE)
    #    t = -4.0621, df = 9, p-value = 0.002833, 95% CI -2.4598858 -0.7001142, mean difference -1.58
    c = compare_paired(SLEEP_1, SLEEP_2)
    assert c.t_test.statistic == pytest.approx(-4.0621, abs=5e-5)
    assert c.t_test.p_value == pytest.approx(0.002833, abs=5e-7)
    assert c.mean_difference.mean == pytest.approx(-1.58, abs=1e-12)
    assert c.mean_difference.interval == pytest.approx((-2.4598858, -0.7001142), abs=5e-8)
    # d_z = mean / sd of the differences; sd = sqrt(sum (d + 1.58)^2 / 9) = sqrt(13.616 / 9)
    assert c.effect.d_z == pytest.approx(-1.58 / np.sqrt(13.616 / 9), abs=1e-12)


def test_paired_t_hand_computed():
    # d = 1 2 3 4 (a - b): mean 2.5, s = sqrt(5/3), t = 2.5 / (s / 2) = sqrt(15).
    # Student's t with 3 df has a closed-form CDF, F(t) = 1/2 + (1/pi) [u / (1 + u^2) + arctan u], u = t / sqrt 3,
    # so with u = sqrt 5 the two-sided p is 1 - (2/pi) (sqrt(5)/6 + arctan sqrt 5) = 0.0304663
    r = paired_t_test([11, 12, 13, 14], [10, 10, 10, 10])
    assert r.statistic == pytest.approx(np.sqrt(15), abs=1e-12)
    assert r.p_value == pytest.approx(1 - 2 / np.pi * (np.sqrt(5) / 6 + np.arctan(np.sqrt(5))), abs=1e-12)
    assert cohens_dz([11, 12, 13, 14], [10, 10, 10, 10]).d_z == pytest.approx(2.5 / np.sqrt(5 / 3), abs=1e-12)


def _wilcoxon_brute_force(d: np.ndarray) -> tuple[float, float]:
    """min(W+, W-) and the two-sided exact p from all 2^n sign patterns (distinct |d|, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1.0
    w_plus = ranks[d > 0].sum()
    null = np.array([np.dot(signs, ranks) for signs in itertools.product((0, 1), repeat=len(d))])
    p = 2 * min(np.mean(null <= w_plus), np.mean(null >= w_plus))
    return min(w_plus, ranks.sum() - w_plus), min(1.0, p)


@pytest.mark.parametrize(
    "d",
    [
        [0.3, -0.1, 0.45, 0.8, 0.62, -0.27, 0.9, 0.15],
        [-0.2, -0.5, 0.1, -0.7, -0.35, -0.9],
        [1.0, -2.0, 3.0, -4.0, 5.0],
    ],
)
def test_wilcoxon_matches_exact_enumeration(d):
    d = np.asarray(d)
    stat, p = _wilcoxon_brute_force(d)
    r = wilcoxon_test(d + 1.0, np.ones_like(d))
    assert (r.n, r.statistic) == (len(d), stat)
    assert r.p_value == pytest.approx(p, abs=1e-12)
    with_zero = wilcoxon_test(np.append(d, 0.0), np.zeros(len(d) + 1))  # zero differences are dropped
    assert (with_zero.n, with_zero.p_value) == (len(d), pytest.approx(p, abs=1e-12))


def test_wilcoxon_three_seeds_cannot_go_below_a_quarter():
    # all 3 differences positive: W- = 0, P = 2 * (1/8) = 0.25 -- the smallest p three seeds can give
    r = wilcoxon_test([0.9, 0.8, 0.85], [0.7, 0.75, 0.6])
    assert (r.statistic, r.p_value, r.reason) == (0.0, 0.25, None)


def test_degenerate_pairs_return_none_with_a_reason():
    for fn in (paired_t_test, wilcoxon_test, cohens_dz):
        r = fn([0.5], [0.4])
        assert "at least 2" in r.reason
    zeros = wilcoxon_test([0.5, 0.6], [0.5, 0.6])
    assert zeros.p_value is None and zeros.statistic is None and "zero" in zeros.reason
    # constant differences, also when only rounding separates them (0.81 - 0.71 != 0.72 - 0.62 in binary: without
    # the tolerance t would be ~1e15 and p ~ 0)
    assert np.ptp(np.subtract([0.81, 0.72, 0.93], [0.71, 0.62, 0.83])) > 0
    for a, b in (([3.0, 4.0, 5.0], [1.0, 2.0, 3.0]), ([0.81, 0.72, 0.93], [0.71, 0.62, 0.83])):
        t, dz = paired_t_test(a, b), cohens_dz(a, b)
        assert t.statistic is None and t.p_value is None and "zero variance" in t.reason
        assert dz.d_z is None and "zero variance" in dz.reason
    c = compare_paired([0.81, 0.72, 0.93], [0.71, 0.62, 0.83])
    assert c.mean_difference.mean == pytest.approx(0.1) and c.wilcoxon.p_value == 0.25
    assert "NaN" not in str(c.to_dict()) and "nan" not in str(c.to_dict())
    with pytest.raises(ValueError, match="same length"):
        paired_t_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        wilcoxon_test([1.0, float("nan")], [1.0, 2.0])


def test_holm_on_the_textbook_example():
    # Holm (1979) as in Wikipedia's example: p = .01 .04 .03 .005, alpha .05. Sorted .005 .01 .03 .04 times
    # 4 3 2 1 = .02 .03 .06 .04 -> running max .02 .03 .06 .06. Reject H4 (.005) and H1 (.01) only.
    r = holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert r.m == 4
    assert r.adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert r.reject == [True, False, False, True]


def test_holm_running_max_cap_and_missing_tests():
    # sorted .01 .02 .04 .3 .5 times 5 4 3 2 1 = .05 .08 .12 .6 .5 -> running max .05 .08 .12 .6 .6
    r = holm([0.5, 0.02, 0.3, 0.01, 0.04])
    assert r.adjusted == pytest.approx([0.6, 0.08, 0.6, 0.05, 0.12], abs=1e-15)
    assert r.reject == [False, False, False, True, False]
    assert holm([0.6, 0.7]).adjusted == [1.0, 1.0]
    miss = holm([0.01, None, 0.04])  # a test that could not run is not part of the family: m = 2
    assert (miss.m, miss.adjusted, miss.reject) == (2, [0.02, None, 0.04], [True, None, True])
    assert holm([]).m == 0
    for bad in ([0.1, float("nan")], [1.5]):
        with pytest.raises(ValueError, match="p-values"):
            holm(bad)


def test_holm_decisions_equal_the_step_down_procedure():
    # Holm's original formulation: walk the sorted p-values, reject while p_(k) <= alpha / (m - k + 1).
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=rng.integers(1, 8))
        order = np.argsort(p)
        want = np.zeros(len(p), bool)
        for k, j in enumerate(order):
            if p[j] > 0.05 / (len(p) - k):
                break
            want[j] = True
        assert holm(list(p), 0.05).reject == want.tolist()


def test_holm_agrees_with_statsmodels_when_installed():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(1).uniform(0, 0.2, size=9)
    reject, adjusted, _, _ = multitest.multipletests(p, alpha=0.05, method="holm")
    r = holm(list(p))
    assert r.adjusted == pytest.approx(adjusted.tolist(), abs=1e-15) and r.reject == reject.tolist()


def test_compare_methods_pairs_by_seed_not_by_position():
    lora = {42: 0.80, 123: 0.70, 456: 0.90}
    hybrid = {456: 0.911, 7: 0.5, 42: 0.810, 123: 0.712}  # other order, one extra seed
    full = {123: 0.60, 42: 0.85, 456: 0.75}
    out = compare_methods({"lora": lora, "hybrid": hybrid, "full": full}, baseline="lora")
    assert [(c.method, c.other) for c in out] == [("hybrid", "lora"), ("full", "lora")]
    h = out[0]
    assert h.seeds == [42, 123, 456]
    assert h.comparison.mean_difference.mean == pytest.approx((0.010 + 0.012 + 0.011) / 3, abs=1e-12)
    assert h.comparison.t_test.p_value == pytest.approx(
        paired_t_test([0.810, 0.712, 0.911], [0.80, 0.70, 0.90]).p_value, abs=1e-15
    )
    family = holm([c.comparison.t_test.p_value for c in out])
    assert [c.t_holm for c in out] == family.adjusted and [c.t_reject for c in out] == family.reject
    w_family = holm([c.comparison.wilcoxon.p_value for c in out])  # a family of its own, not the t-tests'
    assert [c.wilcoxon_holm for c in out] == w_family.adjusted and w_family.adjusted != family.adjusted
    pairs = compare_methods({"lora": lora, "hybrid": hybrid, "full": full})
    assert [(c.method, c.other) for c in pairs] == [("lora", "hybrid"), ("lora", "full"), ("hybrid", "full")]
    assert pairs[0].comparison.mean_difference.mean == pytest.approx(-h.comparison.mean_difference.mean)
    with pytest.raises(ValueError, match="baseline 'normtune' is not one of the methods"):
        compare_methods({"lora": lora}, baseline="normtune")


def test_compare_methods_without_common_seeds_says_why():
    out = compare_methods({"a": {1: 0.5}, "b": {2: 0.6}})
    c = out[0]
    assert c.seeds == [] and c.t_holm is None and c.t_reject is None
    assert c.comparison.t_test.p_value is None and "0 pair(s)" in c.comparison.t_test.reason
    assert c.comparison.mean_difference.mean is None
