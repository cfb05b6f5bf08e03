"""Multiple-choice accuracy. Expected picks (tests/fixtures/provenance/choice_official.py): the scoring lines of QwenLM/Qwen-VL
eval_mm/evaluate_multiple_choice.py @ 10cb904198d4e0e161d0f9f36ba9fac8ac7899e4 (per-token cross-entropy, mean over
the target tokens, torch argmin) on per-token log-probs whose sums/lengths are the choice_scores below."""

from __future__ import annotations

import math

import pytest

from evalkit.metrics import get_metric
from evalkit.metrics.choice import gold_index, parse_choice, pick_by_loglikelihood
from evalkit.task import Prediction, Sample

# ([logprob_sum, n_tokens] per choice, eval_mm's argmin)
SCORED = [
    ([[-1.0, 1], [-0.5, 1], [-2.0, 1]], 1),
    ([[-2.0, 2], [-1.5, 1]], 0),  # mean, not sum: -1.0 beats -1.5 although the sum -2.0 is lower
    ([[-0.7, 1], [-0.7, 1], [-1.4, 2]], 0),  # ties -> the first
    ([[-3.2, 3], [-1.0, 1]], 1),
    ([[-0.25, 1], [-0.125, 1], [-0.5, 1], [-0.0625, 1], [-4.0, 1]], 3),
]


@pytest.mark.parametrize(("scores", "expected"), SCORED)
def test_loglikelihood_pick_matches_eval_mm(scores, expected):
    assert pick_by_loglikelihood(scores) == expected


def test_unusable_scores_never_picked():
    assert pick_by_loglikelihood([[0.0, 0], [-5.0, 1]]) == 1
    assert pick_by_loglikelihood([[math.nan, 1], [-5.0, 1]]) == 1
    assert pick_by_loglikelihood([]) is None


CHOICES = ["cat", "a dog", "bird"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("A", 0), ("(B)", 1), ("B. a dog", 1), ("C) bird", 2), ("Answer: B", 1), ("The answer is (C)", 2),
     ("A: cat", 0), ("b", 1), ("a dog", 1), ("A dog", 1), ("Bird.", 2), ("  bird  ", 2),
     ("a cat", None), ("D", None), ("", None), ("Bird is it", None), ("🙂", None), ("x" * 10_000, None)],
)
def test_parse_generated_choice(text, expected):
    assert parse_choice(text, CHOICES) == expected


def test_gold_index_forms():
    assert gold_index(2, CHOICES) == 2
    assert gold_index("1", CHOICES) == 1
    assert gold_index("C", CHOICES) == 2
    assert gold_index("a dog", CHOICES) == 1
    assert gold_index(None, CHOICES) is None


def test_adapter_mixes_scores_and_text():
    samples = [Sample(id=str(i), images=[], fields={"choices": CHOICES}, references=g) for i, g in enumerate([1, 2, 0, 0])]
    preds = [
        Prediction(sample_id="0", task="t", choice_scores=[[-2.0, 2], [-0.5, 1], [-3.0, 1]]),
        Prediction(sample_id="1", task="t", output="(C)"),
        Prediction(sample_id="2", task="t", output="I don't know"),
        Prediction(sample_id="3", task="t", output="raw", answer="A"),
    ]
    result = get_metric("choice_accuracy")(preds, samples)
    assert [s["choice_accuracy"] for s in result.per_sample] == [1.0, 1.0, 0.0, 1.0]
    assert result.aggregate == {"choice_accuracy": 0.75}
    assert result.info["choice_accuracy"] == {"n": 4, "from_scores": 1, "from_text": 3, "unparseable": 1, "bad_scores": 0}


@pytest.mark.parametrize(("scores", "expected"),
                         [([[math.nan, 1], [-5.0, 1]], 1), ([[0.0, 0], [-5.0, 1]], 1), ([[-1.0, 1], [-0.5, 0]], 0)])
def test_runner_records_the_choice_the_metric_scores(scores, expected):
    """One rule: the answer the runner writes is the choice the metric scores (NaN / zero-token choices skipped)."""
    from evalkit.runner import Runner
    from evalkit.task import ChoiceScore, Request

    request = Request(sample_id="s", task="t", parts=["q"], choices=[" A", " B"])
    pred = Prediction(sample_id="s", task="t")
    Runner._set_choice(pred, request, [ChoiceScore(lp, n) for lp, n in scores])
    assert pred.answer == pick_by_loglikelihood(pred.choice_scores) == expected
    assert pred.output == "AB"[expected]
    sample = Sample(id="s", images=[], fields={"choices": ["x", "y"]}, references=pred.answer)
    assert get_metric("choice_accuracy")([pred], [sample]).per_sample[0]["choice_accuracy"] == 1.0


def test_option_text_and_letter_edges():
    # option text is compared lower-cased after stripping spaces and one trailing period; an upper-case X stays
    assert parse_choice("TYPE X", ["type x", "type y"]) == 0
    assert parse_choice("Type Y.", ["type x", "type y"]) == 1
    # lower(), not upper(): "STRASSE".lower() is not "straße" (upper() would make both "STRASSE")
    assert parse_choice("STRASSE", ["straße", "road"]) is None
    # 26 options: every letter A..Z names one; the 27th option has no letter, so letters are not parsed at all
    many = [f"option {i}" for i in range(26)]
    assert parse_choice("Z", many) == 25 and parse_choice("(A)", many) == 0
    assert parse_choice("Z", [*many, "option 26"]) is None
    assert parse_choice("option 26", [*many, "option 26"]) == 26


def test_gold_letter_is_a_letter_even_when_an_option_reads_the_same():
    # a one-character reference is a letter: "a" is option A here, though option B's text is "a"
    assert gold_index("a", ["b", "a", "c"]) == 0
    assert gold_index("B", ["b", "a", "c"]) == 1
    assert gold_index("?", CHOICES) is None  # one character but no letter: looked up as option text, not found
    assert gold_index(True, CHOICES) is None  # a bool is not an index
    assert gold_index(1.0, CHOICES) is None
