"""Every threshold and level that decides a metric's number, tested on the boundary and on both sides of it.

Expected values are worked out by hand from the rules the official code implements (cited in each metric's
module docstring); every case was checked to fail when its boundary is moved (``>=`` planted as ``>``, ``<=`` as
``<``, the 95% level as 90%, the VQA divisor 3 as 2 or 4), see tests/README.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalkit.metrics import get_metric
from evalkit.metrics.anls import anls
from evalkit.metrics.grounding import iou, parse_box
from evalkit.metrics.relaxed import relaxed_accuracy
from evalkit.metrics.stats import (
    bootstrap_ci,
    bootstrap_means,
    mcnemar,
    paired_bootstrap,
    percentile_interval,
)
from evalkit.metrics.vqa import vqa_score
from evalkit.task import Prediction, Sample


def _grounding(outputs: list[str], gold: list[float], width: float, height: float, **options):
    samples = [Sample(id=str(i), images=[], fields={}, references=gold, metadata={"width": width, "height": height})
               for i in range(len(outputs))]
    preds = [Prediction(sample_id=str(i), task="t", output=o) for i, o in enumerate(outputs)]
    return get_metric("grounding_accuracy")(preds, samples, **options)


# ------------------------------------------------------------------------------------------------ grounding IoU 0.5


def test_iou_exactly_half_is_correct():
    # (0,0),(999,999) on a 10x10 image scales to (0, 0, 10, 10) exactly (999/999 == 1 in float32): area 100.
    # Gold [0, 0, 10, 5] has area 50, all inside: IoU = 50 / (100 + 50 - 50) = 0.5 exactly.
    assert parse_box("(0,0),(999,999)", 10, 10) == (0.0, 0.0, 10.0, 10.0)
    assert iou((0.0, 0.0, 10.0, 10.0), [0, 0, 10, 5], dtype=np.float32) == 0.5
    result = _grounding(["(0,0),(999,999)"], [0, 0, 10, 5], 10, 10)
    assert result.per_sample == [{"grounding_accuracy": 1.0, "iou": 0.5}]


def test_iou_just_below_half_is_wrong():
    # gold [0, 0, 10, 4.9]: IoU = 49 / 100 = 0.49 < 0.5
    result = _grounding(["(0,0),(999,999)"], [0, 0, 10, 4.9], 10, 10)
    assert result.per_sample[0]["grounding_accuracy"] == 0.0
    assert result.per_sample[0]["iou"] == pytest.approx(0.49, abs=1e-6)


def test_iou_threshold_option_is_the_boundary():
    # the same IoU 0.5 box against thresholds on either side of it, and the lenient parser's own branch
    assert _grounding(["(0,0),(999,999)"], [0, 0, 10, 5], 10, 10, threshold=0.5).aggregate["grounding_accuracy"] == 1.0
    assert _grounding(["(0,0),(999,999)"], [0, 0, 10, 5], 10, 10, threshold=0.51).aggregate["grounding_accuracy"] == 0.0
    lenient = _grounding(["[0, 0, 10, 10]"], [0, 0, 10, 5], 10, 10, parser="lenient")
    assert lenient.per_sample == [{"grounding_accuracy": 1.0, "iou": 0.5}]


def test_grounding_aggregates_are_means_of_every_row():
    # IoU 0.5 (right), IoU 0.25 (wrong: box (0,0,10,10) vs gold [0,0,5,5]), unparseable (0)
    samples = [Sample(id=str(i), images=[], fields={}, references=g, metadata={"width": 10, "height": 10})
               for i, g in enumerate([[0, 0, 10, 5], [0, 0, 5, 5], [0, 0, 5, 5]])]
    preds = [Prediction(sample_id=str(i), task="t", output=o)
             for i, o in enumerate(["(0,0),(999,999)", "(0,0),(999,999)", "no box"])]
    result = get_metric("grounding_accuracy")(preds, samples)
    assert result.per_sample == [{"grounding_accuracy": 1.0, "iou": 0.5}, {"grounding_accuracy": 0.0, "iou": 0.25},
                                 {"grounding_accuracy": 0.0, "iou": 0.0}]
    assert result.aggregate == {"grounding_accuracy": pytest.approx(1 / 3), "iou": pytest.approx(0.25)}
    assert result.info["grounding_accuracy"] == {"parser": "qwen", "threshold": 0.5, "n": 3, "unparseable": 1,
                                                 "nan_iou": 0}


# ------------------------------------------------------------------------------------------------ ANLS cut 0.5


def test_anls_cut_exactly_at_half_is_kept():
    # edit distance 2 over max length 4: 1 - 2/4 = 0.5, kept (the script zeroes values *below* the threshold)
    assert anls("abcd", ["abef"]) == 0.5
    # distance 3 over 6 -> 0.5 kept; distance 4 over 7 -> 0.428... zeroed; distance 3 over 7 -> 0.571... kept
    assert anls("abcdef", ["abcxyz"]) == 0.5
    assert anls("abcdefg", ["abcwxyz"]) == 0.0
    assert anls("abcdefg", ["abcdxyz"]) == pytest.approx(4 / 7)


def test_anls_threshold_option_moves_the_cut():
    assert anls("abcd", ["abef"], threshold=0.5) == 0.5
    assert anls("abcd", ["abef"], threshold=0.5000001) == 0.0
    assert anls("abcdefg", ["abcwxyz"], threshold=0.4) == pytest.approx(3 / 7)
    samples = [Sample(id="0", images=[], fields={}, references=["abef"])]
    result = get_metric("anls")([Prediction(sample_id="0", task="t", output="abcd")], samples, threshold=0.6)
    assert result.per_sample == [{"anls": 0.0}] and result.info["anls"]["threshold"] == 0.6


# ------------------------------------------------------------------------------------------------ relaxed 5%

# (prediction, target, pix2struct, eval_mm): |pred - target| / |reference side| against 0.05, where the
# reference side is the target for pix2struct and the prediction for eval_mm.
RELAXED_BOUNDARY = [
    ("95", "100", 1.0, 0.0),  # 5/100 = 0.05 exactly: correct for pix2struct; 5/95 > 0.05 for eval_mm
    ("105", "100", 1.0, 1.0),  # pix2struct 5/100 = 0.05 exactly (above the target); eval_mm 5/105 < 0.05
    ("100", "105", 1.0, 1.0),  # pix2struct 5/105 < 0.05; eval_mm 5/100 = 0.05 exactly
    ("100", "95", 0.0, 1.0),  # pix2struct 5/95 > 0.05; eval_mm 5/100 = 0.05 exactly
    ("94.9", "100", 0.0, 0.0),  # 5.1/100 > 0.05
    ("105.1", "100", 0.0, 1.0),  # pix2struct 5.1/100 > 0.05; eval_mm 5.1/105.1 < 0.05
    ("200", "190", 0.0, 1.0),  # pix2struct 10/190 > 0.05; eval_mm 10/200 = 0.05 exactly
]


@pytest.mark.parametrize(("prediction", "target", "pix2struct", "eval_mm"), RELAXED_BOUNDARY)
def test_relaxed_accuracy_exactly_five_percent(prediction, target, pix2struct, eval_mm):
    assert relaxed_accuracy(prediction, target, "pix2struct") == pix2struct
    assert relaxed_accuracy(prediction, target, "eval_mm") == eval_mm


def test_relaxed_tolerance_option_is_the_boundary():
    assert relaxed_accuracy("90", "100", max_relative_change=0.1) == 1.0  # 10/100 = 0.1 exactly
    assert relaxed_accuracy("89", "100", max_relative_change=0.1) == 0.0
    assert relaxed_accuracy("95", "100", max_relative_change=0.04) == 0.0
    samples = [Sample(id="0", images=[], fields={}, references="100")]
    result = get_metric("relaxed_accuracy")([Prediction(sample_id="0", task="t", output="90")], samples,
                                            max_relative_change=0.1)
    assert result.per_sample == [{"relaxed_accuracy": 1.0}]


# ------------------------------------------------------------------------------------------------ VQA: 3 humans


@pytest.mark.parametrize(
    ("matching", "expected"),
    [
        # k of 10 humans give the prediction. Each of the 10 leave-one-out subsets scores min(1, matches / 3):
        # a held-out matching answer leaves k - 1, any other leaves k; score = (k*min(1,(k-1)/3) + (10-k)*min(1,k/3))/10
        (0, 0.0),
        (1, 0.3),  # (1*0 + 9*(1/3)) / 10
        (2, 0.6),  # (2*(1/3) + 8*(2/3)) / 10
        (3, 0.9),  # (3*(2/3) + 7*1) / 10
        (4, 1.0),  # (4*1 + 6*1) / 10: the first count where every subset has 3 matches
        (10, 1.0),
    ],
)
def test_vqa_three_matching_humans(matching, expected):
    answers = ["cat"] * matching + ["dog", "bird", "fish", "cow", "pig", "hen", "ant", "bee", "owl", "fox"][: 10 - matching]
    for variant in ("official", "eval_mm"):
        assert vqa_score("cat", answers, variant) == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------------------------------ the CI level


def _analytic_95(values: np.ndarray) -> tuple[float, float]:
    """The normal-approximation 95% interval of a mean, mean +- 1.959964 * sd / sqrt(n) (no bootstrap)."""
    half = 1.959963984540054 * values.std(ddof=0) / math.sqrt(values.size)
    return values.mean() - half, values.mean() + half


def test_bootstrap_ci_is_a_95_percent_interval():
    # 4,000 skew-free values: the percentile bootstrap of the mean and the normal interval must agree to
    # Monte Carlo error (~3% of the width with 1,000 resamples); a 90% interval is 16% narrower, a 99% 31% wider.
    values = np.random.default_rng(11).normal(0.5, 0.2, size=4000)
    low, high = bootstrap_ci(values)
    a_low, a_high = _analytic_95(values)
    assert (high - low) / (a_high - a_low) == pytest.approx(1.0, abs=0.06)
    assert (low + high) / 2 == pytest.approx(values.mean(), abs=0.1 * (a_high - a_low))


def test_bootstrap_ci_agrees_with_scipy_bootstrap():
    stats = pytest.importorskip("scipy.stats", reason="scipy (the dev extra) is not installed")
    values = (np.random.default_rng(12).random(3000) < 0.7).astype(float)  # 0/1 accuracies
    low, high = bootstrap_ci(values, n_resamples=2000)
    ref = stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                          random_state=np.random.default_rng(0)).confidence_interval
    assert (high - low) == pytest.approx(ref.high - ref.low, rel=0.06)
    assert low == pytest.approx(ref.low, abs=0.004) and high == pytest.approx(ref.high, abs=0.004)


def test_percentile_interval_takes_the_two_and_a_half_percent_tails():
    values = np.arange(1001, dtype=float)  # quantile q of 0..1000 is 1000 q exactly
    assert percentile_interval(values) == (25.0, 975.0)
    assert percentile_interval(values, alpha=0.1) == (50.0, 950.0)


def test_bootstrap_means_resample_with_replacement_at_full_size():
    values = np.array([0.0, 1.0])
    means = bootstrap_means(values, n_resamples=4000, seed=1)
    # each resample is 2 draws with replacement: means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    assert set(np.unique(means)) == {0.0, 0.5, 1.0}
    assert np.mean(means == 0.5) == pytest.approx(0.5, abs=0.03)
    assert np.mean(means == 0.0) == pytest.approx(0.25, abs=0.03)


def test_runner_stores_the_95_percent_interval():
    """What run.json gets: score_task's ci95 is the 95% interval (the audit's planted 90% went unnoticed)."""
    from evalkit.metrics.score import score_task
    from evalkit.task import DatasetSpec, MetricSpec, TaskSpec

    rng = np.random.default_rng(13)
    refs = ["yes"] * 3000
    outputs = ["yes" if r < 0.6 else "no" for r in rng.random(3000)]
    samples = [Sample(id=str(i), images=[], fields={}, references=[r] * 10) for i, r in enumerate(refs)]
    preds = [Prediction(sample_id=str(i), task="t", output=o) for i, o in enumerate(outputs)]
    spec = TaskSpec(name="t", dataset=DatasetSpec(), fields={}, prompts={}, metrics=[MetricSpec("vqa_accuracy", {})])
    entry = score_task(spec, samples, preds)["metrics"]["vqa_accuracy"]
    values = np.array([o == "yes" for o in outputs], dtype=float)
    assert entry["value"] == pytest.approx(values.mean()) and entry["n"] == 3000
    a_low, a_high = _analytic_95(values)
    low, high = entry["ci95"]
    assert (high - low) / (a_high - a_low) == pytest.approx(1.0, abs=0.06)


# ------------------------------------------------------------------------------------------------ tests at alpha


def test_mcnemar_exact_values_on_both_sides_of_five_percent():
    # discordant pairs all one way: p = 2 * 0.5**n -> n = 5: 0.0625, n = 6: 0.03125 (exact binomial)
    assert mcnemar([1] * 5 + [0], [0] * 6) == 0.0625
    assert mcnemar([1] * 6 + [0], [0] * 7) == pytest.approx(0.03125, rel=1e-12)
    # 4 vs 1 discordant: P(X <= 1 | 5, 1/2) doubled = 2 * 6/32 = 0.375; capped at 1 for 2 vs 2
    assert mcnemar([1, 1, 1, 1, 0], [0, 0, 0, 0, 1]) == pytest.approx(0.375, rel=1e-12)
    assert mcnemar([1, 1, 0, 0], [0, 0, 1, 1]) == 1.0
    # chi-square with continuity correction: n01 = 10, n10 = 0 -> (10 - 1)^2 / 10 = 8.1, p = erfc(sqrt(8.1 / 2))
    assert mcnemar([1] * 10, [0] * 10, exact=False) == pytest.approx(math.erfc(math.sqrt(4.05)), rel=1e-12)
    assert mcnemar([1, 0], [0, 1], exact=False) == 1.0  # |1 - 1| - 1 < 0 is clamped to 0


def test_paired_bootstrap_counts_ties_with_the_observed_difference():
    # diff = [1, 1]: every resample's mean is 1, so every shifted mean is 0 < |observed| = 1: p = 1/(n+1)
    assert paired_bootstrap([1.0, 1.0], [0.0, 0.0], n_resamples=99) == pytest.approx(0.01)
    # diff = [1, -1]: observed 0 -> the runs differ per sample but not on average; p counts |shifted| >= 0: 1
    assert paired_bootstrap([1.0, 0.0], [0.0, 1.0], n_resamples=99) == 1.0
