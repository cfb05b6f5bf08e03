"""Confidence intervals and paired significance tests on per-sample scores.

Task scores are means over samples, so their uncertainty is that of a mean: the percentile bootstrap
(seeded numpy, vectorised over resamples). Paired tests compare two runs on the same samples: McNemar for
0/1 scores, a paired bootstrap of the mean difference otherwise.

CIDEr's IDF depends on the whole reference set, so re-running it per resample would cost minutes and change
the metric; instead the per-image scores, computed once with the full set's document frequencies (their
mean is the corpus CIDEr), are resampled like any other (benchmarks/bench_cider_bootstrap.py: well under a
second for 1,000 x 5,000). No scipy: the binomial tail uses log-gamma, the chi-square(1) tail is erfc.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_CHUNK_ELEMENTS = 4_000_000  # resample indices drawn per block, bounds memory at ~32 MB


def _as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError("per-sample scores must be finite")
    return arr


def _resample_blocks(n: int, n_resamples: int, seed: int):
    """(start, stop, indices [stop - start, n]) blocks of resamples with replacement, seeded."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        yield start, stop, rng.integers(0, n, size=(stop - start, n))


def bootstrap_means(values: Sequence[float] | np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement, same size) of ``values``."""
    arr = _as_array(values)
    if arr.size == 0:
        return np.full(n_resamples, np.nan)
    out = np.empty(n_resamples)
    for start, stop, idx in _resample_blocks(arr.size, n_resamples, seed):
        out[start:stop] = arr[idx].mean(axis=1)
    return out


def bootstrap_totals(stats: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Column sums [n_resamples, F] of resamples of the rows of ``stats`` [n, F].

    For corpus metrics that are a function of summed per-sample statistics (BLEU: n-gram matches,
    guesses and lengths): the metric of each resample is that function of its totals, so the
    interval is the metric's own, not that of a mean of sentence-level scores.
    """
    arr = np.asarray(stats, dtype=np.float64)
    out = np.full((n_resamples, arr.shape[1]), np.nan)
    if arr.shape[0] == 0:
        return out
    for start, stop, idx in _resample_blocks(arr.shape[0], n_resamples, seed):
        out[start:stop] = arr[idx].sum(axis=1)
    return out


def percentile_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    if np.isnan(values).all():
        return (float("nan"), float("nan"))
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return (float(low), float(high))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean; (nan, nan) for no values."""
    return percentile_interval(bootstrap_means(values, n_resamples, seed), alpha)


def _paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_array(a), _as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same samples: {x.size} vs {y.size}")
    return x, y


def paired_bootstrap(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_resamples: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value for mean(a - b) == 0: resampled mean differences shifted to the null (centred),
    p = (#|shifted| >= |observed| + 1) / (n_resamples + 1). 1.0 when the runs never differ."""
    x, y = _paired(a, b)
    diff = x - y
    if diff.size == 0 or not np.any(diff):
        return 1.0
    observed = diff.mean()
    shifted = bootstrap_means(diff, n_resamples, seed) - observed
    extreme = int(np.count_nonzero(np.abs(shifted) >= abs(observed) - 1e-15))
    return (extreme + 1) / (n_resamples + 1)


def _binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial test of k successes in n at p = 0.5 (min tail doubled, capped at 1)."""
    k = min(k, n - k)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    peak = max(log_terms)
    tail = math.exp(peak) * sum(math.exp(t - peak) for t in log_terms)
    return min(1.0, 2.0 * tail)


def mcnemar(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, exact: bool = True) -> float:
    """McNemar's test on paired 0/1 scores: exact binomial on the discordant pairs, or chi-square (1 dof) with
    continuity correction ``(|n01 - n10| - 1)^2 / (n01 + n10)`` when ``exact=False``."""
    x, y = _paired(a, b)
    if not np.all(np.isin(x, (0.0, 1.0))) or not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("McNemar's test needs 0/1 scores")
    n01 = int(np.count_nonzero((x == 1) & (y == 0)))
    n10 = int(np.count_nonzero((x == 0) & (y == 1)))
    discordant = n01 + n10
    if discordant == 0:
        return 1.0
    if exact:
        return _binomial_two_sided(n01, discordant)
    statistic = max(abs(n01 - n10) - 1, 0) ** 2 / discordant
    return math.erfc(math.sqrt(statistic / 2.0))


def is_binary(values: Sequence[float] | np.ndarray) -> bool:
    return bool(np.all(np.isin(_as_array(values), (0.0, 1.0))))


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, seed: int = 0) -> float:
    """p-value for "the two runs score the same": exact McNemar for 0/1 scores, else the paired bootstrap."""
    if is_binary(a) and is_binary(b):
        return mcnemar(a, b, exact=True)
    return paired_bootstrap(a, b, seed=seed)
