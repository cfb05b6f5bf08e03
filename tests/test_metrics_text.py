"""ANLS, relaxed accuracy and exact match against values computed by running the official code (outside the repo).

Expected values: tests/fixtures/provenance/text_official.py reruns them with the upstream code:
  ANLS:    QwenLM/Qwen-VL eval_mm/infographicsvqa_eval.py @ e6bbb9dd9e9fc44a4498d372e83b3b172dc1d808 (evaluate_method on
           a gt/submission json pair)
  relaxed: google-research/pix2struct pix2struct/metrics.py @ 5b086ef5269a80d89fbdd37bdba263e492e83149
           (aggregate_metrics + relaxed_correctness) and QwenLM/Qwen-VL eval_mm/evaluate_vqa.py
           @ 371c034ddb13541b3e41a445ba8f02162046e0bc (evaluate_relaxed_accuracy)
  exact:   the same evaluate_vqa.py (gqa post-processing loop + evaluate_exact_match_accuracy)
"""

from __future__ import annotations

import pytest

from evalkit.metrics import get_metric
from evalkit.metrics.anls import anls
from evalkit.metrics.exact import exact_match, gqa_clean
from evalkit.metrics.relaxed import relaxed_accuracy
from evalkit.task import Prediction, Sample

# (prediction, answers, infographicsvqa_eval.py score)
ANLS_CASES = [
    ('Hello', ['hello'], 1.0),
    ('  Hello   World ', ['hello world'], 1.0),
    ('hellp', ['hello'], 0.8),
    ('abc', ['xyz'], 0.0),
    ('', ['abc'], 0.0),
    ('', [''], 1.0),
    ('abc', [''], 0.0),
    ('ß', ['ss'], 0.0),
    ('straße', ['strasse'], 0.7142857142857143),
    ('İstanbul', ['istanbul'], 0.875),
    ('1990', ['1989', '1990s', 'in 1990'], 0.8),
    ('abcd', ['abef'], 0.5),
    ('abcde', ['abxyz'], 0.0),
    ("a" * 1000, ["a" * 999 + "b"], 0.999),
    ('Hello\tworld\n', ['hello world'], 1.0),
    ('🙂 ok', ['🙂 OK'], 1.0),
    ('$1,000', ['1000'], 0.6666666666666667),
]

# (prediction, target(s), pix2struct value, eval_mm value)
RELAXED_CASES = [
    ('10', '10.4', 1.0, 1.0),
    ('100', '105', 1.0, 1.0),
    ('95', '100', 1.0, 0.0),
    ('105.1', '100', 0.0, 1.0),
    ('50%', '0.5', 1.0, 1.0),
    ('50', '50%', 0.0, 0.0),
    ('0', '0', 1.0, 1.0),
    ('0.0', '0', 0.0, 0.0),
    ('0', '0.01', 0.0, 0.0),
    ('1,000', '1000', 0.0, 0.0),
    (' 12 ', '12', 1.0, 1.0),
    ('Yes', 'yes', 1.0, 1.0),
    ('12%', '12', 0.0, 0.0),
    ('nan', 'nan', 0.0, 0.0),
    ('inf', 'inf', 0.0, 0.0),
    ('1e3', '1000', 1.0, 1.0),
    ('-5', '5', 0.0, 0.0),
    ('blue', ['Blue', 'navy'], 1.0, 1.0),
    ('', '', 1.0, 1.0),
    ('', '0', 0.0, 0.0),
    ('1_000', '1000', 1.0, 1.0),
    ('١٢', '12', 1.0, 1.0),
    ('  Blue ', 'blue', 0.0, 1.0),
    ('3.1', ['2', '3'], 1.0, 1.0),
    ('19.5%', '20%', 1.0, 1.0),
    ('0.05', '5%', 1.0, 1.0),
]

# (prediction, annotation, eval_mm cleaned answer, eval_mm accuracy)
GQA_CASES = [
    ('Yes, it is.', 'yes', 'yes', 1.0),
    ('The cat is black.', 'black', 'black', 1.0),
    ('This is a table', 'table', '', 0.0),
    ('a man', 'man', 'man', 1.0),
    ('banana split', 'banana split', 'split', 0.0),
    ('top of the table', 'table', 'table', 1.0),
    ('', 'yes', '', 0.0),
    ('Left!', 'left', 'left', 1.0),
    ('The answer is: 2', '2', 'answer is: 2', 0.0),
    ('an apple', 'apple', 'apple', 1.0),
    ('They are red', 'red', 'red', 1.0),
    ('cup of tea', 'cup', 'cup', 1.0),
    ('  Café  ', 'café', 'café', 1.0),
    ('Yes', ['no', 'YES '], 'yes', 1.0),
]

# (prediction, annotation, evaluate_exact_match_accuracy) -- OCR-VQA / AI2D
PLAIN_CASES = [
    (' Harry Potter ', 'harry potter', 1.0),
    ('B', 'b', 1.0),
    ('1', ['2', '1'], 1.0),
    ('', '', 1.0),
    ('a.', 'a', 0.0),
]


@pytest.mark.parametrize(("prediction", "answers", "expected"), ANLS_CASES)
def test_anls_matches_infographicsvqa_eval(prediction, answers, expected):
    assert anls(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_anls_edges():
    assert anls("x", []) == 0.0
    assert anls("abcd", "abef") == 0.5  # a bare string is one reference; exactly 0.5 is kept
    assert anls("abcd", ["abef"], threshold=0.6) == 0.0
    # pix2struct's anls_metric gives 0.6875 and 0.8333 on these (no strip / whitespace collapse)
    assert anls("  Hello   World ", ["hello world"]) == 1.0
    assert anls("Hello\tworld\n", ["hello world"]) == 1.0
    # by hand: normalised "a b" vs "ab" is one edit, over the longer raw length 3
    assert anls("a b", ["ab"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(("prediction", "target", "pix2struct", "eval_mm"), RELAXED_CASES)
def test_relaxed_matches_pix2struct_and_eval_mm(prediction, target, pix2struct, eval_mm):
    assert relaxed_accuracy(prediction, target, "pix2struct") == pix2struct
    assert relaxed_accuracy(prediction, target, "eval_mm") == eval_mm


def test_relaxed_edges():
    from evalkit.metrics.relaxed import _as_number, relaxed_match

    # by hand from relaxed_correctness' rules (module docstring):
    assert _as_number("50%") == 0.5 and _as_number("12.5%") == 0.125 and _as_number("%") is None
    assert relaxed_accuracy("1X%", "0.01") == 0.0  # "1X" is not a number: string comparison
    # 1.0 vs 1.05: 0.05/1.05 < 0.05 for pix2struct; for eval_mm (1.05 - 1.0)/1.0 is 0.050000000000000044 in floats
    assert relaxed_accuracy("100%", "1.05") == 1.0 and relaxed_accuracy("100%", "1.05", "eval_mm") == 0.0
    assert relaxed_match("100", "95") and not relaxed_match("100", "94.9")  # the default tolerance is 5%
    # the tolerance reaches the eval_mm branch too: 10/100 is within 10%, not within 5%
    assert relaxed_accuracy("100", "90", "eval_mm", max_relative_change=0.1) == 1.0
    assert relaxed_accuracy("100", "90", "eval_mm") == 0.0
    assert relaxed_accuracy("5", []) == 0.0
    with pytest.raises(ValueError, match="variant"):
        relaxed_accuracy("1", "1", variant="lmms")
    # float("1" * 5000) is inf, inf - inf is NaN: wrong in pix2struct and eval_mm alike (both run: False)
    assert relaxed_accuracy("1" * 5000, "1" * 5000) == 0.0
    assert relaxed_accuracy("1" * 5000, "1" * 5000, "eval_mm") == 0.0


@pytest.mark.parametrize(("prediction", "annotation", "cleaned", "accuracy"), GQA_CASES)
def test_gqa_clean_and_match_eval_mm(prediction, annotation, cleaned, accuracy):
    assert gqa_clean(prediction) == cleaned
    assert exact_match(prediction, annotation, normalize="gqa") == accuracy


@pytest.mark.parametrize(("prediction", "annotation", "accuracy"), PLAIN_CASES)
def test_plain_exact_match_eval_mm(prediction, annotation, accuracy):
    assert exact_match(prediction, annotation, normalize="plain") == accuracy


def test_registry_helpers():
    import math

    from evalkit.metrics import metric_names
    from evalkit.metrics.base import MetricResult, mean_result

    assert {"anls", "caption", "choice_accuracy", "exact_match", "grounding_accuracy", "relaxed_accuracy",
            "vqa_accuracy"} <= set(metric_names()) and metric_names() == sorted(metric_names())
    assert mean_result("k", [1.0, 0.0, 0.5], {"n": 3}) == MetricResult([{"k": 1.0}, {"k": 0.0}, {"k": 0.5}],
                                                                       {"k": 0.5}, {"n": 3})
    empty = mean_result("k", [])
    assert empty.per_sample == [] and math.isnan(empty.aggregate["k"]) and empty.info == {}


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown metric 'vqa'; known metrics: .*anls, caption, choice_accuracy"):
        get_metric("vqa")


def test_gqa_clean_keeps_the_first_sentence():
    assert gqa_clean("A cat. A dog.") == "cat"  # before the first ".", not the last
    assert gqa_clean("Red, white, blue") == "red"


def test_exact_match_by_hand():
    assert exact_match("STRASSE", "straße") == 0.0  # str.lower() on both sides: "strasse" != "straße"
    assert exact_match("5", 5) == 1.0 and exact_match("2.5", 2.5) == 1.0  # a numeric annotation is its str()


def test_exact_none_and_unknown():
    assert exact_match("Yes", "yes", normalize="none") == 0.0
    assert exact_match("yes", None) == 0.0
    with pytest.raises(ValueError, match="normalize"):
        exact_match("a", "a", normalize="vqa2")


def _run(name, outputs, references, **options):
    samples = [Sample(id=str(i), images=[], fields={}, references=r) for i, r in enumerate(references)]
    preds = [Prediction(sample_id=str(i), task="t", output=o) for i, o in enumerate(outputs)]
    return get_metric(name)(preds, samples, **options)


def test_adapters_keys_means_and_info():
    r = _run("anls", ["hellp", "abc"], [["hello"], "xyz"])
    assert r.per_sample == [{"anls": pytest.approx(0.8)}, {"anls": 0}]
    assert r.aggregate == {"anls": pytest.approx(0.4)}
    r = _run("relaxed_accuracy", ["95", "105.1"], ["100", ["100"]], variant="eval_mm")
    assert [s["relaxed_accuracy"] for s in r.per_sample] == [0.0, 1.0]
    assert r.info["relaxed_accuracy"]["variant"] == "eval_mm"
    r = _run("exact_match", ["This is a table", "a man"], ["table", "man"], normalize="gqa")
    assert [s["exact_match"] for s in r.per_sample] == [0.0, 1.0]
    assert r.aggregate["exact_match"] == 0.5
    r = _run("exact_match", ["x"], [None])
    assert r.info["exact_match"]["no_references"] == 1
