"""Bootstrap CIs and paired tests. McNemar is checked against scipy (binomtest / chi2) where installed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from evalkit.metrics.stats import bootstrap_ci, mcnemar, paired_bootstrap, paired_test


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
