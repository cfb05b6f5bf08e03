"""Parity of the bundled Qwen-VL with the ORIGINAL reference outputs in expected.json.

Tolerances are the fixture README's (fp32 CPU): ids exact, logits abs 1e-4, intermediates
abs 1e-4 + rel 1e-4 per value, sums rel 1e-4 (abs 1e-2 for near-zero-mean sums).
Padded batches are checked against the batch-1 records: evalkit must not depend on padding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures.qwen_tiny import image_request, records

from evalkit.models.qwen_vl import QwenVLForCausalLM, QwenVLProcessor
from evalkit.models.qwen_vl.adapter import QwenVLAdapter
from evalkit.models.qwen_vl.vision import VisionTransformer
from evalkit.task import Request

LOGIT_ATOL = 1e-4
SINGLE = [
    "caption_eval",
    "caption_hf",
    "vqa",
    "grounding",
    "two_images",
    "text_only",
    "chatml",
    "long_ntk_logn",
]
CACHE_FREE = [r for r in SINGLE if r != "long_ntk_logn"]  # the fixture has no cache-free run for it


def assert_close(got, want, atol: float, rtol: float = 0.0, what: str = "") -> None:
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    assert got.shape == want.shape, what
    bad = (got - want).abs() > atol + rtol * want.abs()
    assert not bad.any(), f"{what}: max deviation {(got - want).abs().max().item():.3g}"


def assert_stats(tensor: torch.Tensor, ref: dict, what: str) -> None:
    """Compare a tensor with a reference `stats` object."""
    assert list(tensor.shape) == ref["shape"], what
    flat = tensor.detach().double().flatten()
    assert_close(flat[: len(ref["first"])], ref["first"], 1e-4, 1e-4, f"{what}.first")
    assert_close(flat[ref["sample_index"]], ref["sample"], 1e-4, 1e-4, f"{what}.sample")
    assert flat.abs().sum().item() == pytest.approx(ref["abs_sum"], rel=1e-4), f"{what}.abs_sum"
    assert flat.sum().item() == pytest.approx(ref["sum"], rel=1e-4, abs=1e-2), f"{what}.sum"


@pytest.fixture(autouse=True)
def in_fixture_dir(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_dir)  # prompts name their images relative to this directory


@pytest.fixture(scope="module")
def model(tiny_model) -> QwenVLForCausalLM:
    return tiny_model


@pytest.fixture(scope="module")
def processor(tiny_processor) -> QwenVLProcessor:
    return tiny_processor


@pytest.fixture(scope="module")
def traces(model: QwenVLForCausalLM, processor: QwenVLProcessor, tiny_dir: Path):
    """One traced forward per record (lazily): inputs, every vision stage, LM input, ln_f, logits."""
    cache: dict[str, dict] = {}
    visual, lm = model.transformer.visual, model.transformer

    def run(record: dict) -> dict:
        if record["id"] in cache:
            return cache[record["id"]]
        seen: dict[str, torch.Tensor] = {}

        def keep(name: str, transform=lambda t: t):
            return lambda module, args, out: seen.__setitem__(name, transform(out))

        hooks = [
            visual.conv1.register_forward_hook(keep("visual_conv1")),
            visual.ln_pre.register_forward_hook(keep("visual_ln_pre")),
            visual.transformer.register_forward_hook(keep("visual_blocks", lambda t: t.transpose(0, 1))),
            visual.attn_pool.register_forward_hook(keep("visual_attn_pool")),
            visual.register_forward_hook(keep("visual_out")),
            lm.h[0].register_forward_pre_hook(
                lambda module, args: seen.__setitem__("lm_input_embeds", args[0])
            ),
            lm.ln_f.register_forward_hook(keep("lm_final_hidden")),
        ]
        batch = processor(text=record["prompt"], return_tensors="pt")
        try:
            with torch.no_grad():
                seen["logits"] = model(**batch).logits[0]
        finally:
            for hook in hooks:
                hook.remove()
        cache[record["id"]] = {"batch": batch, **seen}
        return cache[record["id"]]

    return run


@pytest.mark.parametrize("rid", SINGLE)
def test_input_ids_and_pixels(rid, expected, processor):
    record = records(expected)[rid]
    batch = processor(text=record["prompt"], return_tensors="pt")
    assert batch["input_ids"][0].tolist() == record["input_ids"]
    assert batch["attention_mask"].all()
    if "pixel_values" in record:
        assert_stats(batch["pixel_values"], record["pixel_values"], "pixel_values")
    else:
        assert "pixel_values" not in batch


@pytest.mark.parametrize("rid", SINGLE)
def test_vision_stages_and_lm_states(rid, expected, traces):
    record = records(expected)[rid]
    trace = traces(record)
    stages = ["visual_conv1", "visual_ln_pre", "visual_blocks", "visual_attn_pool", "visual_out"]
    for name in stages + ["lm_input_embeds", "lm_final_hidden"]:
        if name in record:
            assert_stats(trace[name], record[name], f"{rid}.{name}")
    if "visual_out_token_sums" in record:
        sums = trace["visual_out"][:, [0, 1, 127, 255]].sum(-1).flatten()
        assert_close(sums, record["visual_out_token_sums"], 1e-4, 1e-4, "visual_out_token_sums")


@pytest.mark.parametrize("rid", SINGLE)
def test_logits(rid, expected, traces):
    record = records(expected)[rid]
    logits = traces(record)["logits"]
    for pos, first20 in record["logits_at_positions"].items():
        assert_close(logits[int(pos), :20], first20, LOGIT_ATOL, what=f"logits[{pos}]")
    ref, last = record["last_logits"], logits[-1]
    assert_close(last[:20], ref["first20"], LOGIT_ATOL, what="last first20")
    assert last.argmax().item() == ref["argmax"]
    values, ids = last.topk(10)
    assert ids.tolist() == ref["top10_ids"]
    assert_close(values, ref["top10_vals"], LOGIT_ATOL, what="top10")
    assert last.max().item() == pytest.approx(ref["max"], abs=LOGIT_ATOL)
    assert last.double().sum().item() == pytest.approx(ref["sum"], abs=1e-2)
    assert last.double().std().item() == pytest.approx(ref["std"], rel=1e-4)
    for token, value in ref["special_ids_vals"].items():
        assert last[int(token)].item() == pytest.approx(value, abs=LOGIT_ATOL)


def check_greedy(new_ids: list[int], scores: tuple, ref: dict, what: str) -> None:
    assert new_ids == ref["new_ids"], what
    assert len(scores) == len(ref["step_scores"])
    for step, (got, want) in enumerate(zip(scores, ref["step_scores"])):
        got = got[0]
        assert got.argmax().item() == want["argmax"], f"{what} step {step}"
        assert got.max().item() == pytest.approx(want["max"], abs=LOGIT_ATOL), f"{what} step {step}"
        assert_close(got[:5], want["first5"], LOGIT_ATOL, what=f"{what} step {step}")
        assert got.topk(5).indices.tolist() == want["top5_ids"], f"{what} step {step}"


def greedy(model, batch, ref: dict, use_cache: bool):
    stop = ref["stop_words_ids"] or []
    eos = [ref["eos_token_id"], *(ids[0] for ids in stop)]  # single-token stop words end generation
    out = model.generate(
        **batch,
        max_new_tokens=ref["max_new_tokens"],
        do_sample=False,
        num_beams=1,
        eos_token_id=eos,
        pad_token_id=151643,
        use_cache=use_cache,
        output_scores=True,
        return_dict_in_generate=True,
    )
    return out.sequences[:, batch["input_ids"].shape[1] :], out.scores


@pytest.mark.parametrize("rid", SINGLE)
def test_greedy_with_cache(rid, expected, model, processor):
    record = records(expected)[rid]
    batch = processor(text=record["prompt"], return_tensors="pt")
    with torch.no_grad():
        new, scores = greedy(model, batch, record["greedy"], use_cache=True)
    check_greedy(new[0].tolist(), scores, record["greedy"], f"{rid} cached")
    text = processor.batch_decode(new, skip_special_tokens=True)[0]
    assert text == record["greedy"]["text_skip_special"]
    assert processor.decode(new[0]) == record["greedy"]["text"]


@pytest.mark.parametrize("rid", CACHE_FREE)
def test_greedy_without_cache(rid, expected, model, processor):
    record = records(expected)[rid]
    batch = processor(text=record["prompt"], return_tensors="pt")
    with torch.no_grad():
        new, scores = greedy(model, batch, record["greedy"], use_cache=False)
    assert new[0].tolist() == record["greedy"]["new_ids_nocache_argmax"]
    check_greedy(new[0].tolist(), scores, record["greedy"], f"{rid} no cache")


def test_chatml_context(expected, processor):
    record = records(expected)["chatml"]
    raw, ids = processor.tokenizer.make_context(record["chat_query"])
    assert raw == record["prompt"]
    assert ids == record["input_ids"]


def test_multiple_choice_losses(expected, model, processor):
    record = records(expected)["multiple_choice"]
    ids = torch.tensor(record["input_ids"])
    pixels = processor(text=record["prompt"])["pixel_values"].expand(len(ids), -1, -1, -1)
    mask = (ids != 151643).long()
    keep = max(len(t) for t in record["target_ids"])  # only the target positions need logits
    with torch.no_grad():
        logits = model(
            input_ids=ids[:, :-1], attention_mask=mask[:, :-1], pixel_values=pixels, logits_to_keep=keep
        ).logits
    losses = torch.nn.functional.cross_entropy(logits.permute(0, 2, 1), ids[:, -keep:], reduction="none")
    target = [loss[-len(t) :].mean().item() for loss, t in zip(losses, record["target_ids"])]
    assert_close(target, record["target_losses"], 1e-4, what="target_losses")
    assert int(torch.tensor(target).argmin()) == record["pred"]


def test_visual_multihead(expected, tiny_dir):
    spec = expected["visual_multihead"]
    tower = VisionTransformer.from_safetensors(str(tiny_dir / spec["file"]), spec["config"])
    assert tower.attn_pool.attn.num_heads == spec["resampler_heads"]
    pixels = QwenVLProcessor(None, spec["config"]["image_size"]).transform(spec["image"])
    with torch.no_grad():
        out = tower(pixels[None])
    assert_stats(out, spec["out"], "visual_multihead.out")


# -- batches: every member equals its batch-1 record -------------------------------------------
BATCH = ["caption_eval", "text_only", "two_images", "chatml", "vqa"]


def test_padded_batch_equals_batch_one(expected, model, processor):
    recs = records(expected)
    batch = processor(text=[recs[r]["prompt"] for r in BATCH], return_tensors="pt", padding=True)
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        logits = model(**batch).logits
        out = model.generate(
            **batch,
            max_new_tokens=12,
            do_sample=False,
            num_beams=1,
            eos_token_id=151643,
            pad_token_id=151643,
            output_scores=True,
            return_dict_in_generate=True,
        )
    for row, rid in enumerate(BATCH):
        record = recs[rid]
        pad = width - record["n_tokens"]
        assert batch["input_ids"][row, pad:].tolist() == record["input_ids"]
        for pos, first20 in record["logits_at_positions"].items():
            assert_close(logits[row, pad + int(pos), :20], first20, LOGIT_ATOL, what=f"{rid} logits[{pos}]")
        new = out.sequences[row, width:].tolist()
        check_greedy(new, tuple(s[row : row + 1] for s in out.scores), record["greedy"], f"{rid} in batch")


def test_reference_left_pad_record(expected, model, processor):
    """The reference shifted padded rows (absolute positions); evalkit gives padded member 0 its
    batch-1 result instead, and agrees with the reference on the unpadded member 1."""
    recs = records(expected)
    record = recs["batch_left_pad"]
    batch = processor(text=record["prompts"], return_tensors="pt", padding=True)
    assert batch["input_ids"].tolist() == record["input_ids"]
    assert batch["attention_mask"].tolist() == record["attention_mask"]
    with torch.no_grad():
        last = model(**batch).logits[:, -1]
        new = model.generate(
            **batch, max_new_tokens=12, do_sample=False, eos_token_id=151643, pad_token_id=151643
        )
    assert_close(last[0, :20], recs["caption_eval"]["last_logits"]["first20"], LOGIT_ATOL, what="member 0")
    assert_close(last[1, :20], record["last_logits_first20"][1], LOGIT_ATOL, what="member 1")
    assert last.argmax(-1).tolist() == record["last_logits_argmax"]
    assert new[:, batch["input_ids"].shape[1] :].tolist() == record["greedy_new_ids"]


def test_ntk_alpha_from_each_rows_true_length(expected, model, processor):
    """The long prompt (alpha 3) padded beside a short one keeps its own alpha; the short one keeps 1."""
    recs = records(expected)
    long_rec, short_rec = recs["long_ntk_logn"], recs["text_only"]
    batch = processor(text=[short_rec["prompt"], long_rec["prompt"]], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch, logits_to_keep=1).logits[:, -1]
    assert_close(logits[0, :20], short_rec["last_logits"]["first20"], LOGIT_ATOL, what="short row")
    assert_close(logits[1, :20], long_rec["last_logits"]["first20"], LOGIT_ATOL, what="long row")


# -- the runner-facing harness ---------------------------------------------------------------
@pytest.fixture(scope="module")
def harness(model, processor, tiny_ckpt) -> QwenVLAdapter:
    return QwenVLAdapter(model, processor, str(tiny_ckpt), batch_size=2)


def test_harness_generate_matches_records(expected, harness, tiny_dir):
    recs = records(expected)
    requests = [
        image_request("a", str(tiny_dir / "img_a.png"), "Describe the image in English:", max_new_tokens=12),
        Request("b", "t", ["The capital of France is"], max_new_tokens=12),
        image_request(
            "c", str(tiny_dir / "img_b.png"), "What color is the square? Answer:", max_new_tokens=12
        ),
        image_request(
            "d",
            str(tiny_dir / "img_a.png"),
            "Describe the image in English:",
            max_new_tokens=12,
            stop=["s res"],
        ),
    ]
    out = harness.generate(requests)
    assert out[0] == recs["caption_eval"]["greedy"]["text_skip_special"]
    assert out[1] == recs["text_only"]["greedy"]["text_skip_special"]
    assert out[2] == recs["vqa"]["greedy"]["text_skip_special"]
    assert out[3] == " resolution"  # cut before the stop string


def test_harness_loglikelihood(expected, harness, tiny_dir):
    record = records(expected)["multiple_choice"]
    text = record["prompt"].replace("<img>img_b.png</img>", "")
    request = image_request("m", str(tiny_dir / "img_b.png"), text, choices=[" A", " B", " C"])
    scores = harness.loglikelihood([request, request])
    assert len(scores) == 2 and scores[0] == scores[1]
    assert_close([-s.mean_logprob for s in scores[0]], record["target_losses"], 1e-4, what="choice losses")
    assert [s.n_tokens for s in scores[0]] == [1, 1, 1]
    best = max(range(3), key=lambda i: scores[0][i].mean_logprob)
    assert best == record["pred"]


def test_harness_identity(harness, tiny_ckpt):
    ident = harness.identity()
    assert ident["path"] == str(tiny_ckpt.resolve())
    assert len(ident["weights_sha256"]) == 64
    assert harness.identity() is ident  # hashed once
