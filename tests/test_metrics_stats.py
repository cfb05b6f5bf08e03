"""Bootstrap CIs and paired tests. McNemar is checked against scipy (binomtest / chi2) where installed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from evalkit.metrics.stats import (
    _resample_blocks,
    bootstrap_ci,
    bootstrap_means,
    bootstrap_totals,
    mcnemar,
    paired_bootstrap,
    paired_test,
    percentile_interval,
)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(0).random(400)
    low, high = bootstrap_ci(values, seed=3)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_ci(values, seed=3)
    assert (low, high) != bootstrap_ci(values, seed=4)
    # standard error of a uniform mean: ~0.0144 -> 95% width ~0.057
    assert 0.04 < high - low < 0.075


def test_bootstrap_ci_degenerate_inputs():
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    low, high = bootstrap_ci([])
    assert np.isnan(low) and np.isnan(high)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([0.5, float("nan")])


def test_bootstrap_is_fast_for_cider_sized_inputs():
    values = np.random.default_rng(1).gamma(2.0, 0.4, size=5000)
    start = time.perf_counter()
    bootstrap_ci(values, n_resamples=1000)
    assert time.perf_counter() - start < 2.0


def test_mcnemar_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    a = (rng.random(300) < 0.62).astype(float)
    b = (rng.random(300) < 0.5).astype(float)
    n01 = int(((a == 1) & (b == 0)).sum())
    n10 = int(((a == 0) & (b == 1)).sum())
    assert mcnemar(a, b) == pytest.approx(stats.binomtest(n01, n01 + n10, 0.5).pvalue, rel=1e-9)
    chi = (abs(n01 - n10) - 1) ** 2 / (n01 + n10)
    assert mcnemar(a, b, exact=False) == pytest.approx(stats.chi2.sf(chi, 1), rel=1e-9)


def test_mcnemar_small_exact_values():
    # 0 vs 5 discordant pairs: two-sided exact p = 2 * 0.5**5
    assert mcnemar([1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]) == pytest.approx(0.0625)
    assert mcnemar([1, 0], [1, 0]) == 1.0
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([0.5], [1.0])


def test_paired_tests():
    rng = np.random.default_rng(5)
    base = rng.random(500)
    assert paired_bootstrap(base + 0.05, base) < 0.001
    assert paired_bootstrap(base, base) == 1.0
    noisy = base + rng.normal(0, 0.2, size=500)
    assert paired_bootstrap(noisy, base) > 0.01
    with pytest.raises(ValueError, match="same samples"):
        paired_bootstrap([1.0, 2.0], [1.0])
    binary_a, binary_b = [1, 0, 1, 1], [0, 0, 1, 0]
    assert paired_test(binary_a, binary_b) == mcnemar(binary_a, binary_b)
    assert paired_test(base, base + 0.1) == paired_bootstrap(base, base + 0.1)


def test_defaults_are_the_documented_ones():
    # run.json's intervals and p-values are reproducible across versions only while these stay put:
    # 1,000 resamples at seed 0 for intervals, 10,000 at seed 0 for the paired bootstrap
    values = np.random.default_rng(6).random(50)
    other = values + np.random.default_rng(7).normal(0, 0.1, 50)
    assert bootstrap_ci(values) == bootstrap_ci(values, n_resamples=1000, alpha=0.05, seed=0)
    assert np.array_equal(bootstrap_means(values), bootstrap_means(values, n_resamples=1000, seed=0))
    assert paired_bootstrap(values, other) == paired_bootstrap(values, other, n_resamples=10_000, seed=0)
    assert paired_test(values, other) == paired_bootstrap(values, other, seed=0)
    assert paired_test(values, other, seed=3) == paired_bootstrap(values, other, seed=3)
    assert bootstrap_ci(values, alpha=0.1) == percentile_interval(bootstrap_means(values), 0.1)
    rows = np.random.default_rng(10).random((5, 2))
    assert np.array_equal(bootstrap_totals(rows), bootstrap_totals(rows, 1000, 0))
    assert paired_bootstrap(values, other, seed=5) != paired_bootstrap(values, other, seed=0)  # the seed is used


def test_bootstrap_totals_sum_the_resampled_rows():
    stats = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])  # 4 rows, 3 columns
    totals = bootstrap_totals(stats, n_resamples=200, seed=4)
    assert totals.shape == (200, 3)
    _, _, idx = next(_resample_blocks(4, 200, seed=4))
    assert np.array_equal(totals, stats[idx].sum(axis=1))  # the same seeded indices as bootstrap_means
    assert np.all(totals[:, 2] == 8.0) and np.all(totals[:, 0] + totals[:, 1] <= 4.0)
    assert {0.0, 1.0, 2.0} <= set(np.unique(totals[:, 0])) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert np.isnan(bootstrap_totals(np.zeros((0, 3)), n_resamples=4)).all()
    assert bootstrap_totals(np.zeros((0, 3)), n_resamples=4).shape == (4, 3)


def test_paired_bootstrap_edges():
    base = np.random.default_rng(8).random(40)
    noisy = base + np.random.default_rng(9).normal(0, 0.3, 40)
    assert paired_bootstrap(noisy, base) == paired_bootstrap(noisy, base)  # seeded: the same p every call
    # one sample that differs: every resample's mean difference is the observed one, shifted to exactly 0
    assert paired_bootstrap([1.0], [0.0], n_resamples=99) == pytest.approx(0.01)
    assert paired_bootstrap([], []) == 1.0


def test_paired_test_needs_both_sides_binary_for_mcnemar():
    binary, graded = [1.0, 0.0, 1.0, 1.0], [0.5, 0.2, 0.9, 0.4]
    assert paired_test(binary, graded) == paired_bootstrap(binary, graded)
    assert paired_test(graded, binary) == paired_bootstrap(graded, binary)


def test_error_messages():
    with pytest.raises(ValueError, match=r"^per-sample scores must be finite$"):
        bootstrap_ci([1.0, float("inf")])
    with pytest.raises(ValueError, match=r"^McNemar's test needs 0/1 scores$"):
        mcnemar([0.0, 2.0], [1.0, 0.0])
    assert mcnemar([1, 0], [1, 0], exact=False) == 1.0  # no discordant pair: 1.0, not 0 / 0
