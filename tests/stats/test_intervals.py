"""t-intervals, the percentile bootstrap and the paired ΔECE bootstrap, against hand values, scipy and coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from bayespeft.metrics import calibration_error
from bayespeft.stats import bootstrap_interval, delta_ece_interval, t_interval
from bayespeft.stats.intervals import bootstrap_index_blocks

# Student-t quantiles from a printed table (not scipy): t_{0.975, 7} and t_{0.95, 7}.
T975_7 = 2.364624252
T95_7 = 1.894578605


def test_t_interval_hand_computed():
    # x = 2 4 4 4 5 5 7 9: mean 5, sum of squares about the mean 9+1+1+1+0+0+4+16 = 32, s = sqrt(32/7)
    x = [2, 4, 4, 4, 5, 5, 7, 9]
    s = math.sqrt(32 / 7)
    r = t_interval(x)
    assert (r.n, r.mean, r.reason) == (8, 5.0, None)
    assert r.std == pytest.approx(s, abs=1e-12)
    assert r.half_width == pytest.approx(T975_7 * s / math.sqrt(8), abs=1e-8)
    assert r.interval == pytest.approx((5 - T975_7 * s / math.sqrt(8), 5 + T975_7 * s / math.sqrt(8)), abs=1e-8)
    assert t_interval(x, level=0.90).half_width == pytest.approx(T95_7 * s / math.sqrt(8), abs=1e-8)


def test_t_interval_agrees_with_scipy_t_interval():
    x = np.random.default_rng(3).normal(2.0, 0.5, size=6)
    lo, hi = scipy.stats.t.interval(0.99, df=5, loc=x.mean(), scale=scipy.stats.sem(x))
    r = t_interval(x, level=0.99)
    assert r.interval == pytest.approx((lo, hi), rel=1e-12)
    assert r.std == pytest.approx(np.std(x, ddof=1), rel=1e-12)


def test_t_interval_coverage_on_normal_samples():
    # n = 4 draws of N(1, 2^2), 1000 repetitions: coverage of the true mean must be 0.95 (binomial SE 0.007).
    # A z quantile would cover ~0.86, a one-sided t quantile ~0.90; the band [0.93, 0.97] separates them.
    rng = np.random.default_rng(0)
    samples = rng.normal(1.0, 2.0, size=(1000, 4))
    hits = [r.lo <= 1.0 <= r.hi for r in map(t_interval, samples)]
    assert 0.93 <= np.mean(hits) <= 0.97


def test_t_interval_fewer_than_two_values_has_no_std():
    one = t_interval([0.8])
    assert (one.n, one.mean) == (1, 0.8)
    assert one.std is None and one.half_width is None and one.interval is None
    assert "at least 2" in one.reason
    none = t_interval([])
    assert none.mean is None and none.std is None and none.reason == "no values"
    assert one.to_dict()["std"] is None


@pytest.mark.parametrize(
    "values, level, match",
    [([1.0, float("nan")], 0.95, "non-finite"), ([[1.0, 2.0]], 0.95, "one-dimensional"), ([1.0, 2.0], 95, "level")],
)
def test_t_interval_bad_input(values, level, match):
    with pytest.raises(ValueError, match=match):
        t_interval(values, level)


@pytest.mark.parametrize("block", [1, 7, 64, None])
def test_index_blocks_are_one_stream(block):
    want = np.random.default_rng(11).integers(0, 23, (50, 23))
    got = np.concatenate(list(bootstrap_index_blocks(23, 50, 11, block)))
    np.testing.assert_array_equal(got, want)


def test_bootstrap_agrees_with_scipy_paired_percentile():
    rng = np.random.default_rng(5)
    a = rng.normal(size=60)
    b = a + rng.normal(0.3, 0.5, size=60)
    ours = bootstrap_interval(lambda x, y: (y - x).mean(-1), a, b, n_boot=500, level=0.9, seed=7, block=37)
    ref = scipy.stats.bootstrap(
        (a, b), lambda x, y, axis=-1: (y - x).mean(axis), paired=True, vectorized=True, n_resamples=500,
        confidence_level=0.9, method="percentile", rng=np.random.default_rng(7),
    )
    assert ours.interval == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-12)
    assert ours.se == pytest.approx(ref.standard_error, rel=1e-12)
    assert ours.estimate == pytest.approx((b - a).mean(), rel=1e-12)


def test_bootstrap_of_a_mean_matches_normal_theory_on_a_large_sample():
    # N = 4000 draws of N(1, 2^2): the bootstrap interval of the mean approaches mean ± 1.96 s/sqrt(N)
    # (half-width ~0.062); with B = 2000 an endpoint's Monte-Carlo error is ~0.002, tolerance 0.1 * half-width.
    x = np.random.default_rng(1).normal(1.0, 2.0, size=4000)
    half = 1.959963985 * x.std(ddof=1) / math.sqrt(len(x))
    r = bootstrap_interval(lambda v: v.mean(-1), x, n_boot=2000, seed=2)
    assert r.lo == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert r.hi == pytest.approx(x.mean() + half, abs=0.1 * half)
    assert r.se == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)), rel=0.1)


def test_bootstrap_coverage_on_a_skewed_distribution():
    # Exponential(1) samples of n = 40, 400 data sets, B = 1000: the percentile interval of the mean is known to
    # under-cover slightly for skewed data (~0.92-0.94); loose band [0.87, 0.98] (binomial SE ~0.012).
    rng = np.random.default_rng(4)
    hits = []
    for k in range(400):
        r = bootstrap_interval(lambda v: v.mean(-1), rng.exponential(1.0, size=40), n_boot=1000, seed=k)
        hits.append(r.lo <= 1.0 <= r.hi)
    assert 0.87 <= np.mean(hits) <= 0.98


def test_bootstrap_resamples_arrays_together():
    # Paired: resampling (a, b) jointly and taking mean(a) - mean(b) is exactly the bootstrap of mean(a - b).
    rng = np.random.default_rng(6)
    a = rng.normal(size=200)
    b = a + rng.normal(0, 0.01, size=200)  # strongly correlated: an unpaired bootstrap would be ~100x wider
    joint = bootstrap_interval(lambda x, y: x.mean(-1) - y.mean(-1), a, b, n_boot=300, seed=3)
    single = bootstrap_interval(lambda d: d.mean(-1), a - b, n_boot=300, seed=3)
    np.testing.assert_allclose(joint.replicates, single.replicates, rtol=0, atol=1e-14)
    same = bootstrap_interval(lambda x, y: x.mean(-1) - y.mean(-1), a, a.copy(), n_boot=300, seed=3)
    assert np.all(same.replicates == 0.0) and same.interval == (0.0, 0.0)


def test_bootstrap_loop_and_vectorized_agree():
    x = np.random.default_rng(8).gamma(2.0, size=(30, 2))  # examples with a trailing axis
    vec = bootstrap_interval(lambda v: np.median(v[..., 0] * v[..., 1], axis=-1), x, n_boot=200, seed=1)
    loop = bootstrap_interval(lambda v: np.median(v[:, 0] * v[:, 1]), x, n_boot=200, seed=1, vectorized=False)
    np.testing.assert_array_equal(vec.replicates, loop.replicates)
    assert vec.interval == loop.interval


def test_bootstrap_degenerate_cases_say_why():
    one = bootstrap_interval(lambda v: v.mean(-1), [3.0])
    assert one.estimate == 3.0 and one.interval is None and one.se is None and "at least 2" in one.reason
    with np.errstate(divide="ignore"):
        bad = bootstrap_interval(lambda v: np.log(v.min(-1)), np.array([0.0, 1.0, 2.0]), n_boot=50)
    assert bad.interval is None and "not finite" in bad.reason
    with pytest.raises(ValueError, match="one value per replicate"):
        bootstrap_interval(lambda v: v.mean(), np.arange(5.0))
    with pytest.raises(ValueError, match="same length"):
        bootstrap_interval(lambda x, y: x.mean(-1), np.arange(5.0), np.arange(4.0))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_interval(lambda v: v.mean(-1), np.arange(5.0), n_boot=1)


def _probs_with_confidences(conf: np.ndarray, top: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows with top-label probability ``conf`` at class ``top`` and the rest spread evenly (conf > 1/C)."""
    p = np.repeat(((1 - conf) / (n_classes - 1))[:, None], n_classes, axis=1)
    p[np.arange(len(conf)), top] = conf
    return p


@pytest.fixture(scope="module")
def two_predictives():
    """MAP and Bayes predictives on the same 400 examples, with confidences on bin edges and exactly 1.0."""
    rng = np.random.default_rng(9)
    n, c = 400, 20
    conf_map = rng.uniform(0.06, 1.0, n)
    conf_map[:30] = np.arange(1, 16).repeat(2) / 15  # on the edges b/15, including 1.0
    conf_bayes = 0.06 + 0.85 * (conf_map - 0.06)  # a tempered copy: smaller confidences, same ordering
    y = rng.integers(0, c, n)
    top_map = np.where(rng.uniform(size=n) < conf_map, y, (y + 1) % c)
    top_bayes = np.where(rng.uniform(size=n) < 0.1, (top_map + 2) % c, top_map)  # a few predictions change
    pm = _probs_with_confidences(conf_map, top_map, c)
    pb = _probs_with_confidences(conf_bayes, top_bayes, c)
    return pm, pb, y


def _top(p, y):
    return p.max(axis=1), (p.argmax(axis=1) == y)


def test_delta_ece_estimate_is_the_difference_of_metric_eces(two_predictives):
    pm, pb, y = two_predictives
    for n_bins in (15, 4):
        r = delta_ece_interval(*_top(pm, y), *_top(pb, y), n_bins=n_bins, n_boot=10)
        want = calibration_error(pm, y, n_bins=n_bins) - calibration_error(pb, y, n_bins=n_bins)
        assert r.estimate == pytest.approx(want, abs=1e-12)
        assert want != 0.0


def test_delta_ece_replicates_equal_metric_eces_on_each_resample(two_predictives):
    # The vectorised replicates against bayespeft.metrics.calibration_error on each resample (same index stream).
    pm, pb, y = two_predictives
    r = delta_ece_interval(*_top(pm, y), *_top(pb, y), n_boot=25, seed=4)
    idx = np.concatenate(list(bootstrap_index_blocks(len(y), 25, 4)))
    want = [calibration_error(pm[i], y[i]) - calibration_error(pb[i], y[i]) for i in idx]
    np.testing.assert_allclose(r.replicates, want, rtol=0, atol=1e-12)
    assert r.lo == pytest.approx(np.quantile(want, 0.025), abs=1e-12)
    assert r.hi == pytest.approx(np.quantile(want, 0.975), abs=1e-12)


def test_delta_ece_identical_inputs_give_exactly_zero(two_predictives):
    pm, _, y = two_predictives
    r = delta_ece_interval(*_top(pm, y), *_top(pm.copy(), y), n_boot=500, seed=1, block=33)
    assert r.estimate == 0.0 and r.interval == (0.0, 0.0) and np.all(r.replicates == 0.0)


def test_delta_ece_block_size_does_not_change_the_result(two_predictives):
    pm, pb, y = two_predictives
    a = delta_ece_interval(*_top(pm, y), *_top(pb, y), n_boot=100, seed=2)
    b = delta_ece_interval(*_top(pm, y), *_top(pb, y), n_boot=100, seed=2, block=9)
    np.testing.assert_allclose(a.replicates, b.replicates, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(conf_map=[0.5, 1.2]), "conf_map must be top-label confidences in \\[0, 1\\]"),
        (dict(correct_bayes=[1, 2]), "correct_bayes must be 0/1"),
        (dict(conf_bayes=[0.5, 0.6, 0.7], correct_bayes=[1, 0, 1]), "same length"),
        (dict(n_bins=0), "n_bins"),
    ],
)
def test_delta_ece_bad_input(kwargs, match):
    args = dict(conf_map=[0.5, 0.9], correct_map=[1, 0], conf_bayes=[0.5, 0.8], correct_bayes=[1, 0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        delta_ece_interval(**args)
