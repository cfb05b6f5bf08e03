"""VQA accuracy (VQAv2, OK-VQA, TextVQA, VizWiz) as the official evaluator computes it.

The answer normalisation is GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py, rewritten
(not copied), quirks included because the published numbers carry them. Two variants, because the
official code changed and Qwen-VL's numbers come from the older one:

- ``official``: the current code (a013f0043c1e2cdc995922dfe257f7149aa9af06, "Fixed processing answers
  bug"): beyond whitespace, nothing is normalised unless the human answers disagree, so "Yes" scores 0
  against ten "yes".
- ``eval_mm``: Qwen-VL's eval_mm/vqa_eval.py (@48454c3, a LAVIS copy of the older code,
  c4e6a0e4e84b9702d99800d3393652d92b5df224) as evaluate_vqa.py calls it: the prediction is always
  normalised, the human answers never get the digits/articles step, so "2" cannot match "two".

tests/test_metrics_vqa.py holds the values both official files give on the cases where they differ.
lmms-eval (vqav2/utils.py @0393078) pre-normalises differently and matches neither; it is not reproduced.
The official code holds out one answer *dict* per subset; answer ids are unique, so here one answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from evalkit.metrics.base import (
    MetricInputError,
    MetricResult,
    answers_of,
    check_option,
    mean_result,
    register_metric,
)
from evalkit.metrics.exact import reference_list
from evalkit.task import Prediction, Sample

VARIANTS: tuple[str, ...] = ("official", "eval_mm")

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_PERIOD_STRIP_LIMIT = 32  # re.UNICODE passed positionally as re.sub's count in the official code
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# The official table, entries as they are (including oddities such as "somebody'd" -> "somebodyd").
_CONTRACTIONS = {
    'aint': "ain't", 'arent': "aren't", 'cant': "can't", 'couldve': "could've", 'couldnt': "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", 'didnt': "didn't", 'doesnt': "doesn't",
    'dont': "don't", 'hadnt': "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", 'hasnt': "hasn't",
    'havent': "haven't", 'hed': "he'd", "hed've": "he'd've", "he'dve": "he'd've", 'hes': "he's",
    'howd': "how'd", 'howll': "how'll", 'hows': "how's", "Id've": "I'd've", "I'dve": "I'd've", 'Im': "I'm",
    'Ive': "I've", 'isnt': "isn't", 'itd': "it'd", "itd've": "it'd've", "it'dve": "it'd've", 'itll': "it'll",
    "let's": "let's", 'maam': "ma'am", 'mightnt': "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", 'mightve': "might've", 'mustnt': "mustn't", 'mustve': "must've",
    'neednt': "needn't", 'notve': "not've", 'oclock': "o'clock", 'oughtnt': "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", 'shant': "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", 'shouldve': "should've", 'shouldnt': "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": 'somebodyd',
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", 'somebodyll': "somebody'll",
    'somebodys': "somebody's", 'someoned': "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", 'someonell': "someone'll", 'someones': "someone's",
    'somethingd': "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    'somethingll': "something'll", 'thats': "that's", 'thered': "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", 'therere': "there're", 'theres': "there's", 'theyd': "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", 'theyll': "they'll", 'theyre': "they're",
    'theyve': "they've", 'twas': "'twas", 'wasnt': "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    'weve': "we've", 'werent': "weren't", 'whatll': "what'll", 'whatre': "what're", 'whats': "what's",
    'whatve': "what've", 'whens': "when's", 'whered': "where'd", 'wheres': "where's", 'whereve': "where've",
    'whod': "who'd", "whod've": "who'd've", "who'dve": "who'd've", 'wholl': "who'll", 'whos': "who's",
    'whove': "who've", 'whyll': "why'll", 'whyre': "why're", 'whys': "why's", 'wont': "won't",
    'wouldve': "would've", 'wouldnt': "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    'yall': "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", 'youd': "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", 'youll': "you'll", 'youre': "you're", 'youve': "you've",
}


def clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip (the official first step)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_punctuation(text: str) -> str:
    """The official processPunctuation: a mark touching a space (or any, given "1,000") is deleted, else a space."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if delete_all or touches_space else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIOD_STRIP_LIMIT)


def normalize_digits_articles(text: str) -> str:
    """The official processDigitArticle step: lower-case, number words to digits, no articles, contractions."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """Full normalisation (whitespace, punctuation, digits/articles) as applied to a normalised prediction."""
    return normalize_digits_articles(normalize_punctuation(clean_whitespace(text)))


def _prepare(prediction: str, answers: Sequence[str], variant: str) -> tuple[str, list[str]]:
    check_option("VQA variant", variant, VARIANTS)
    if variant == "official":
        gts = [clean_whitespace(a) for a in answers]
        pred = clean_whitespace(prediction)
        if len(set(gts)) > 1:
            gts = [normalize_digits_articles(normalize_punctuation(a)) for a in gts]
            pred = normalize_digits_articles(normalize_punctuation(pred))
        return pred, gts
    gts = list(answers)  # eval_mm
    if len(set(gts)) > 1:
        gts = [normalize_punctuation(a) for a in gts]
    return normalize_answer(prediction), gts


def vqa_score(prediction: str, answers: Sequence[str], variant: str = "official") -> float:
    """VQA accuracy of one prediction in [0, 1]; 0.0 when there are no human answers (official: ZeroDivisionError)."""
    if not answers:
        return 0.0
    pred, gts = _prepare(prediction, answers, variant)
    matches = sum(gt == pred for gt in gts)
    # Holding out answer i leaves `matches - (gts[i] == pred)` matching answers among the others.
    total = sum(min(1.0, (matches - (gt == pred)) / 3) for gt in gts)
    return total / len(gts)


@register_metric("vqa_accuracy")
def vqa_accuracy(
    predictions: list[Prediction], samples: list[Sample], variant: str = "official"
) -> MetricResult:
    """Task adapter: ``sample.references`` are the human answers; per-sample key ``vqa_accuracy``."""
    check_option("VQA variant", variant, VARIANTS)
    texts = answers_of(predictions)
    refs = [reference_list(s.references) for s in samples]
    if any(refs) and all(len(r) <= 1 for r in refs):
        example = next(r for r in refs if r)
        raise MetricInputError(
            f"vqa_accuracy: every sample has at most one reference answer (e.g. {example!r}); "
            "VQA accuracy needs the human answers (10 per question) and scores a single one as 0 -- map "
            "`references` to the answer list (VQAv2 hub: answers[].answer) or use exact_match")
    scores = [vqa_score(t or "", r, variant) for t, r in zip(texts, refs, strict=True)]
    info = {"vqa_accuracy": {"variant": variant, "n": len(scores), "no_references": sum(not r for r in refs)}}
    return mean_result("vqa_accuracy", scores, info)
