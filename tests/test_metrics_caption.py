"""COCO caption metrics: the wrapper against pycocoevalcap's scorers run directly (the official implementation).

The only test module that starts METEOR (one JVM, module scope). Data: the first 40 predictions of coco-caption's
demo results file (tests/fixtures/coco-caption/, see its README); its references
(captions_val2014.json) are not available offline, so each image's references are the next three demo captions
(cyclic) plus, for even positions, its own caption with the first "a " replaced by "the ".

FROZEN holds what tests/fixtures/provenance/caption_official.py prints: COCOEvalCap.evaluate()'s steps (PTBTokenizer on gts and res
separately, then Bleu(4), Meteor(), Rouge(), Cider()) with pycocoevalcap 1.2, on this construction.
"""

from __future__ import annotations

import json

import pytest
from conftest import COCO_CAPTION_RESULTS

from evalkit.metrics import get_metric
from evalkit.metrics.caption import REFERENCE_SET_NOTE, caption_scores, evaluate_captions, meteor_scorer
from evalkit.task import Prediction, Sample

FAKECAP = COCO_CAPTION_RESULTS

FROZEN = {
    "BLEU_1": 0.7234042553174388, "BLEU_2": 0.6312950299252368, "BLEU_3": 0.5598210045649433,
    "BLEU_4": 0.5090855054588174, "METEOR": 0.3412467114692825, "ROUGE_L": 0.6291232393362477,
    "CIDEr": 0.9169967513008668,
}
FROZEN_FIRST_CIDER = [1.478838584634157, 0.0, 0.999753152639396]


@pytest.fixture(scope="module")
def demo():
    fake = json.loads(FAKECAP.read_text())[:40]
    ids = [r["image_id"] for r in fake]
    preds = {r["image_id"]: r["caption"] for r in fake}
    refs = {
        ids[i]: [fake[(i + k) % len(fake)]["caption"] for k in (1, 2, 3)]
        + ([fake[i]["caption"].replace("a ", "the ", 1)] if i % 2 == 0 else [])
        for i in range(len(ids))
    }
    return ids, preds, refs


@pytest.fixture(scope="module")
def demo_result(demo):
    _, preds, refs = demo
    return evaluate_captions(preds, refs, metrics=("CIDEr", "BLEU", "ROUGE_L", "METEOR"))


def test_matches_frozen_official_values(demo, demo_result):
    ids, _, _ = demo
    for name, value in FROZEN.items():
        assert demo_result.aggregate[name] == pytest.approx(value, abs=1e-12), name
    assert [demo_result.per_image["CIDEr"][i] for i in ids[:3]] == pytest.approx(FROZEN_FIRST_CIDER, abs=1e-12)


def test_matches_pycocoevalcap_run_directly(demo, demo_result):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids, preds, refs = demo
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in refs[i]] for i in ids})
    res = tok.tokenize({i: [{"caption": preds[i]}] for i in ids})
    cider, per_image = Cider().compute_score(gts, res)
    assert demo_result.aggregate["CIDEr"] == pytest.approx(cider, abs=1e-12)
    assert [demo_result.per_image["CIDEr"][i] for i in ids] == pytest.approx(list(per_image), abs=1e-12)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [demo_result.aggregate[f"BLEU_{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    rouge, _ = Rouge().compute_score(gts, res)
    assert demo_result.aggregate["ROUGE_L"] == pytest.approx(rouge, abs=1e-12)
    # per-image CIDEr / ROUGE_L average to the corpus score (what the runner's CI is put on)
    assert sum(demo_result.per_image["CIDEr"].values()) / len(ids) == pytest.approx(cider, abs=1e-12)


def test_meteor_scorer_is_started_once(demo):
    _, preds, refs = demo
    first = meteor_scorer()
    small = dict(list(preds.items())[:3])
    caption_scores(small, {k: refs[k] for k in small}, metrics=("METEOR",))
    assert meteor_scorer() is first


def test_metrics_are_optional_and_validated(demo):
    _, preds, refs = demo
    small = dict(list(preds.items())[:4])
    scores = caption_scores(small, {k: refs[k] for k in small}, metrics=("CIDEr",))
    assert set(scores) == {"CIDEr"}
    with pytest.raises(ValueError, match="unknown caption metrics"):
        caption_scores(small, {k: refs[k] for k in small}, metrics=("CIDEr-X",))
    with pytest.raises(ValueError, match="same image ids"):
        caption_scores(small, {}, metrics=("CIDEr",))


def test_hostile_captions():
    preds = {1: "", 2: "Ein Café ☕ in Zürich — sehr schön", 3: "dog " * 400, 4: "two dogs ||| playing", 5: "a\nb\tc"}
    refs = {
        1: ["a cat on a mat"],
        2: ["a café in zurich", "a coffee shop"],
        3: ["a dog running on the grass"],
        4: ["two dogs play ||| in the park", "dogs"],
        5: ["a b c"],
    }
    result = evaluate_captions(preds, refs)
    assert result.per_image["CIDEr"][1] == 0.0
    for name, value in result.aggregate.items():
        assert value == value and value >= 0.0, name  # finite, no NaN
    assert result.per_image["CIDEr"][5] > 0.0


def test_adapter_groups_by_image_and_notes_reference_dependence(demo):
    ids, preds, refs = demo
    samples = [Sample(id=f"s{i}", images=[], fields={}, references=refs[i], metadata={"image_id": i}) for i in ids[:6]]
    samples.append(Sample(id="dup", images=[], fields={}, references=refs[ids[0]], metadata={"image_id": ids[0]}))
    outputs = [preds[i] for i in ids[:6]] + ["ignored duplicate"]
    predictions = [Prediction(sample_id=s.id, task="t", output=o) for s, o in zip(samples, outputs)]
    result = get_metric("caption")(predictions, samples, metrics=("CIDEr", "BLEU", "ROUGE_L"))
    assert next(iter(result.aggregate)) == "CIDEr"
    assert set(result.per_sample[0]) == {"CIDEr", "ROUGE_L"}
    assert result.per_sample[-1] == result.per_sample[0]
    assert sum(s["CIDEr"] for s in result.per_sample[:6]) / 6 == pytest.approx(result.aggregate["CIDEr"])
    assert result.info["caption"]["duplicate_image_samples"] == 1
    assert result.info["caption"]["subset_note"] == REFERENCE_SET_NOTE


def test_bleu_intervals_are_the_official_bleu_of_each_resample(demo):
    """Each resample's BLEU from summed statistics equals pycocoevalcap's BleuScorer run on that
    resample of images (same seeded indices), so the interval is BLEU's own."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    from evalkit.metrics.caption import bleu_resamples, bleu_with_ci, tokenize
    from evalkit.metrics.stats import _resample_blocks

    ids, preds, refs = demo
    # half the predictions cut short, so the brevity penalty is exercised
    preds = {i: (p if k % 2 else " ".join(p.split()[:3])) for k, (i, p) in enumerate(preds.items())}
    tokens = tokenize({**{("ref", i): refs[i] for i in ids}, **{("res", i): [preds[i]] for i in ids}})
    gts = {i: tokens[("ref", i)] for i in ids}
    res = {i: tokens[("res", i)] for i in ids}
    score, resampled = bleu_resamples(gts, res, n_resamples=30, seed=7)
    _, _, idx = next(_resample_blocks(len(ids), 30, seed=7))
    for row, picks in enumerate(idx):
        scorer = BleuScorer(n=4)
        for j in picks:
            scorer += (res[ids[j]][0], gts[ids[j]])
        official, _ = scorer.compute_score(option="closest", verbose=0)
        assert list(resampled[row]) == pytest.approx(official, rel=1e-12, abs=1e-15), row
    value, intervals = bleu_with_ci(gts, res)
    assert value == score
    for v, (low, high) in zip(value, intervals):
        assert low < v < high


def test_bleu_interval_reaches_run_json(demo):
    """Every caption aggregate but METEOR carries a 95% interval in run.json's metrics."""
    from evalkit.metrics.score import score_task
    from evalkit.task import DatasetSpec, MetricSpec, TaskSpec

    ids, preds, refs = demo
    samples = [Sample(id=str(i), images=[], fields={}, references=refs[i], metadata={"image_id": i}) for i in ids]
    predictions = [Prediction(sample_id=str(i), task="t", output=preds[i]) for i in ids]
    spec = TaskSpec(name="t", dataset=DatasetSpec(), fields={}, prompts={},
                    metrics=[MetricSpec("caption", {"metrics": ["CIDEr", "BLEU", "ROUGE_L"]})])
    metrics = score_task(spec, samples, predictions)["metrics"]
    for name in ("CIDEr", "BLEU_1", "BLEU_4", "ROUGE_L"):
        low, high = metrics[name]["ci95"]
        assert low <= metrics[name]["value"] <= high, name
