"""VQA accuracy against values computed by running the official evaluators (outside the repo).

Expected values: tests/fixtures/provenance/vqa_official.py drives each evaluator exactly as its caller does -- result json,
``VQA(annotation, question)``, ``vqa.loadRes(results, question)``, ``VQAEval(vqa, res, n=2).evaluate()`` --
with one annotation per case (answer dicts carrying answer_id 1..n), reading the unrounded per-question accuracy:
  official: GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py @ a013f0043c1e2cdc995922dfe257f7149aa9af06
  eval_mm:  QwenLM/Qwen-VL eval_mm/vqa_eval.py + vqa.py @ 48454c33e56ad898d4156d74e03a227a73c8b245
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.metrics import get_metric
from evalkit.metrics.vqa import normalize_answer, normalize_punctuation, vqa_score
from evalkit.task import Prediction, Sample

Y10 = ["yes"] * 10

# (prediction, human answers, official value, eval_mm value)
CASES = [
    ("yes", Y10, 1.0, 1.0),
    ("Yes", Y10, 0.0, 1.0),
    ("yes.", Y10, 0.0, 1.0),
    ("YES!", ["yes"] * 9 + ["no"], 1.0, 1.0),
    ("yes\n", Y10, 1.0, 1.0),
    ("two", ["2"] * 10, 0.0, 1.0),
    ("two", ["2"] * 5 + ["two"] * 5, 1.0, 1.0),
    ("2", ["two"] * 4 + ["2"] + ["3"] * 5, 1.0, 0.3),
    ("the dog", ["dog"] * 3 + ["a dog"] * 3 + ["puppy"] * 4, 1.0, 0.9),
    ("dog", ["The dog"] * 10, 0.0, 0.0),
    ("dont know", ["don't know"] * 2 + ["dont know"] + ["no"] * 7, 0.9, 0.6),
    ("1,000", ["1000"] * 3 + ["1,000"] * 3 + ["many"] * 4, 1.0, 1.0),
    ("1000", ["1,000"] * 10, 0.0, 0.0),
    ("3.5.", ["3.5"] * 2 + ["3.50"] * 8, 0.6, 0.6),
    ("", ["yes"] * 10, 0.0, 0.0),
    ("", [""] * 10, 1.0, 1.0),
    ("", [""] * 4 + ["yes"] * 6, 1.0, 1.0),
    ("café", ["café"] * 2 + ["cafe"] * 8, 0.6, 0.6),
    ("yes " * 500, Y10, 0.0, 0.0),
    ("t-shirt", ["t shirt"] * 3 + ["t-shirt"] * 3 + ["shirt"] * 4, 1.0, 1.0),
    ("red, white", ["red white"] * 2 + ["red and white"] * 8, 0.6, 0.6),
    ("a", ["a"] * 10, 1.0, 0.0),
    ("none", ["none"] * 10, 1.0, 0.0),
    ("none", ["none"] * 5 + ["0"] * 5, 1.0, 1.0),
    ("yes?", ["yes"] * 6 + ["no"] * 4, 1.0, 1.0),
    ("x", ["x", "y", "x"], 0.444444444444, 0.444444444444),
    ("." * 40 + "x", ["........x"] * 3 + ["y"] * 7, 0.0, 0.0),
    ("Left", ["left"] * 2 + ["right"] * 8, 0.6, 0.6),
    ("10:30", ["10:30"] * 5 + ["1030"] * 5, 1.0, 1.0),
    ("(a) apple", ["apple"] * 5 + ["a apple"] * 5, 1.0, 1.0),
    ("it's red", ["its red"] * 4 + ["red"] * 6, 0.0, 0.0),
    ("hes", ["he's"] * 4 + ["no"] * 6, 1.0, 1.0),
    ("  blue  ", ["blue "] * 5 + [" blue"] * 5, 1.0, 0.0),
]


@pytest.mark.parametrize(("prediction", "answers", "official", "eval_mm"), CASES)
def test_matches_official_evaluators(prediction, answers, official, eval_mm):
    assert vqa_score(prediction, answers, "official") == pytest.approx(official, abs=1e-12)
    assert vqa_score(prediction, answers, "eval_mm") == pytest.approx(eval_mm, abs=1e-12)


def test_default_variant_is_current_official():
    assert vqa_score("Yes", Y10) == 0.0
    assert vqa_score("Yes", Y10, variant="eval_mm") == 1.0


def test_lmms_eval_differs_on_identical_answers():
    # lmms-eval vqav2_process_results (@0393078) gives 0.0 here (it normalises the prediction to "0" and
    # leaves identical answers raw) where the official evaluator gives 1.0; and 0.9 on the 40-period case.
    assert vqa_score("none", ["none"] * 10) == 1.0
    assert vqa_score("." * 40 + "x", ["........x"] * 3 + ["y"] * 7) == 0.0


def test_normalisation_steps():
    assert normalize_punctuation("1,000") == "1000"
    assert normalize_punctuation("t-shirt") == "t shirt"
    assert normalize_punctuation("red, white") == "red white"
    assert normalize_punctuation("3.5.") == "3.5"
    assert normalize_answer("The Two dogs!") == "2 dogs"
    assert normalize_answer("dont") == "don't"
    assert normalize_punctuation("." * 40) == "." * 8  # the official re.sub count=re.UNICODE (32) cap
    # a mark touching a space anywhere (here " -") is deleted everywhere, also where it joins two words
    assert normalize_punctuation("t-shirt -x") == "tshirt x"
    assert normalize_punctuation("t-shirt- x") == "tshirt x"


def test_newlines_and_tabs_inside_the_answer_are_spaces():
    # vqaEval.py replaces "\n" and "\t" by " " in the prediction and the answers before anything else, so with
    # ten identical answers (compared raw in the official variant) "red\nwhite" still matches "red white"
    for prediction in ("red\nwhite", "red\twhite", "\tred white\n"):
        assert vqa_score(prediction, ["red white"] * 10) == 1.0
        assert vqa_score(prediction, ["red white"] * 10, variant="eval_mm") == 1.0


def test_unknown_variant_and_no_answers():
    with pytest.raises(ValueError, match="variant"):
        vqa_score("yes", Y10, variant="lmms")
    assert vqa_score("yes", []) == 0.0


def test_adapter_per_sample_and_info():
    samples = [Sample(id=str(i), images=[], fields={}, references=a) for i, (_, a, _, _) in enumerate(CASES[:6])]
    preds = [Prediction(sample_id=str(i), task="t", output=p) for i, (p, _, _, _) in enumerate(CASES[:6])]
    result = get_metric("vqa_accuracy")(preds, samples, variant="eval_mm")
    assert [s["vqa_accuracy"] for s in result.per_sample] == pytest.approx([c[3] for c in CASES[:6]])
    assert result.aggregate["vqa_accuracy"] == pytest.approx(sum(c[3] for c in CASES[:6]) / 6)
    assert result.info["vqa_accuracy"]["variant"] == "eval_mm"
    preds[0].answer = "no"  # a parsed answer wins over the raw output
    assert get_metric("vqa_accuracy")(preds, samples).per_sample[0]["vqa_accuracy"] == 0.0


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["yes", "Yes.", "two", "1,000", "the dog", "dont", "", " ", "a", "none", "...", "3.5."]
)


@settings(max_examples=300, deadline=None)
@given(prediction=text, answers=st.lists(text, max_size=12), variant=st.sampled_from(["official", "eval_mm"]))
def test_property_score_in_unit_interval(prediction, answers, variant):
    score = vqa_score(prediction, answers, variant)
    assert 0.0 <= score <= 1.0


@settings(max_examples=300, deadline=None)
@given(answer=text)
def test_property_normaliser_total_and_self_consistent(answer):
    normalised = normalize_answer(answer)
    assert isinstance(normalised, str)
    assert normalised == normalised.strip()
    # ten humans agreeing with an answer made of plain words: the prediction equal to it scores 1
    assert vqa_score(answer, [answer] * 10, "official") == 1.0
