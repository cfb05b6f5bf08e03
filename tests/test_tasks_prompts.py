"""Prompts match Qwen-VL's eval_mm verbatim, and few-shot assembly follows eval_mm.

The reference templates below are copied from QwenLM/Qwen-VL eval_mm (evaluate_caption.py,
evaluate_vqa.py, evaluate_grounding.py, evaluate_multiple_choice.py), where `{}` is filled with
the image path and the text fields; a request renders the image as a separate part, so the test
renders it back as a path and compares the strings.
"""

from __future__ import annotations

import pytest
from fixtures.catalog import DATA, registry

from evalkit.data import load_samples
from evalkit.prompts import build_request, choose_shots

EVAL_MM = {
    "caption": "<img>{}</img>Describe the image in English:",
    "vqa": "<img>{}</img>{} Answer:",
    "grounding": "<img>{}</img><ref>{}</ref><box>",
    "choice": "<img>{}</img>Context: {}\nQuestion: {}\nOptions: {}\nAnswer:",
}
CHAT_HEAD = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nPicture 1:<img>"
IMG = "/data/x.jpg"


def first(task: str):
    spec = registry().get(task)
    return spec, load_samples(spec, str(DATA))[0]


@pytest.mark.parametrize("task", ["nocaps_val", "flickr30k_karpathy_test", "coco_karpathy_test"])
def test_caption_prompt(task):
    spec, sample = first(task)
    assert build_request(spec, sample, "base").text(IMG) == EVAL_MM["caption"].format(IMG)
    assert (spec.generation.max_new_tokens, spec.generation.min_new_tokens) == (30, 8)


@pytest.mark.parametrize("task, max_new", [
    ("vqav2_val", 10), ("vqav2_testdev", 10), ("okvqa_val", 10), ("gqa_testdev_balanced", 10), ("vizwiz_val", 10),
    ("vizwiz_testdev", 10), ("textvqa_val", 10), ("docvqa_val", 100), ("docvqa_test", 100),
    ("chartqa_test_human", 100), ("chartqa_test_augmented", 100), ("ocrvqa_test", 100), ("ai2d_test", 10),
])
def test_vqa_prompt(task, max_new):
    spec, sample = first(task)
    question = sample.fields["question"] + sample.fields.get("options", "")
    assert build_request(spec, sample, "base").text(IMG) == EVAL_MM["vqa"].format(IMG, question)
    assert (spec.generation.max_new_tokens, spec.generation.min_new_tokens) == (max_new, 1)
    assert spec.postprocess == ["strip"]


def test_ai2d_question_is_followed_by_its_options():
    spec, sample = first("ai2d_test")
    assert build_request(spec, sample, "base").text(IMG) == (
        f"<img>{IMG}</img>which of these define dairy itemc\nD\nb\na Answer:")
    assert sample.references == ["D"]  # the text of the gold option, scored by exact match


@pytest.mark.parametrize("task", ["refcoco_val", "refcocoplus_testA", "refcocog_test"])
def test_grounding_prompt(task):
    spec, sample = first(task)
    assert build_request(spec, sample, "base").text(IMG) == EVAL_MM["grounding"].format(IMG, sample.fields["sentence"])
    assert (spec.generation.max_new_tokens, spec.generation.min_new_tokens) == (28, 10)
    assert spec.postprocess == []  # eval_mm keeps the raw grounding output


def test_scienceqa_prompt_and_choices():
    spec = registry().get("scienceqa_img_test")
    samples = load_samples(spec, str(DATA))
    empty_hint, with_hint = samples[0], samples[1]
    request = build_request(spec, empty_hint, "base")
    assert request.text(IMG) == EVAL_MM["choice"].format(
        IMG, "N/A", "Which figure of speech is used in this text?", "A. simile\nB. metaphor")
    assert request.choices == [" A", " B"]
    assert "Context: Moles live underground.\n" in build_request(spec, with_hint, "base").text(IMG)
    assert build_request(spec, samples[2], "base").choices == [" A", " B", " C", " D"]


@pytest.mark.parametrize("task", ["vqav2_val", "nocaps_val", "refcoco_val", "scienceqa_img_test"])
def test_chat_prompt_is_chatml_with_the_default_system_prompt(task):
    spec, sample = first(task)
    text = build_request(spec, sample, "chat").text(IMG)
    assert text.startswith(CHAT_HEAD + IMG + "</img>\n")
    assert "<|im_end|>\n<|im_start|>assistant\n" in text


# ------------------------------------------------------------------ few-shot


@pytest.fixture(scope="module")
def okvqa():
    spec = registry().get("okvqa_val")
    return spec, load_samples(spec, str(DATA)), load_samples(spec, str(DATA), split="train")


def test_fewshot_pool_comes_from_the_train_files(okvqa):
    spec, _, pool = okvqa
    assert spec.fewshot.split == "train" and len(pool) == 6
    assert all("train2014" in im.path for s in pool for im in s.images)
    assert pool[0].references[0] == "pink"


def test_same_seed_same_shots(okvqa):
    spec, samples, pool = okvqa
    a = [s.id for s in choose_shots(pool, samples[0], 4, seed=0, task=spec.name)]
    assert a == [s.id for s in choose_shots(pool, samples[0], 4, seed=0, task=spec.name)]
    others = {tuple(s.id for s in choose_shots(pool, samples[0], 4, seed=k, task=spec.name)) for k in range(1, 6)}
    assert others - {tuple(a)}  # the seed matters


def test_shots_never_show_the_query_image():
    spec = registry().get("textvqa_val")
    query = load_samples(spec, str(DATA))[0]
    pool = load_samples(spec, str(DATA), split="train")
    twin = type(query)(id="twin", images=list(query.images), fields=query.fields, references=query.references)
    for seed in range(10):
        shots = choose_shots(pool + [query, twin], query, 4, seed=seed, task=spec.name)
        assert all(query.images[0].key not in {im.key for im in s.images} for s in shots)


def test_four_shot_prompt_holds_five_images_in_order(okvqa):
    spec, samples, pool = okvqa
    query = samples[0]
    shots = choose_shots(pool, query, 4, seed=0, task=spec.name)
    request = build_request(spec, query, "base", shots)
    assert request.images == [s.images[0] for s in shots] + [query.images[0]]
    expected = "".join(EVAL_MM["vqa"].format(IMG, s.fields["question"]) + " " + s.references[0] for s in shots)
    assert request.text(IMG) == expected + EVAL_MM["vqa"].format(IMG, query.fields["question"])


def test_caption_shots_end_with_a_reference_caption():
    spec = registry().get("flickr30k_karpathy_test")
    query = load_samples(spec, str(DATA))[0]
    shots = choose_shots(load_samples(spec, str(DATA), split="train"), query, 2, seed=0, task=spec.name)
    text = build_request(spec, query, "base", shots).text(IMG)
    assert text == "".join(f"{EVAL_MM['caption'].format(IMG)} {s.references[0]}" for s in shots) + \
        EVAL_MM["caption"].format(IMG)
