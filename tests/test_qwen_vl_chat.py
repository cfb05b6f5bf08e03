"""Qwen-VL-Chat as its own chat() does it: prompts against the reference's make_context token ids
(tests/fixtures/qwen_vl_chat/make_context.json, real tokenizer), few-shot as one conversation, and
generation that stops at <|im_end|> / <|im_start|> in both engines."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CHAT_CONTEXT, TINY_CKPT
from fixtures.catalog import registry

from evalkit.chat import STOP_MARKERS, conversation
from evalkit.models.qwen_vl.tokenizer import QwenTokenizer
from evalkit.prompts import build_request
from evalkit.task import ImageRef, Request, Sample

FIXTURE = json.loads(CHAT_CONTEXT.read_text())
CASES = FIXTURE["chat"]


@pytest.fixture(scope="module")
def tokenizer() -> QwenTokenizer:
    return QwenTokenizer.from_pretrained(TINY_CKPT)  # the real qwen.tiktoken


def path_text(ref: ImageRef) -> str:
    return ref.path or ""


@pytest.mark.parametrize("i", range(len(CASES)))
def test_make_context_equals_reference(i, tokenizer):
    case = CASES[i]
    raw, ids = tokenizer.make_context(case["query"], [tuple(h) for h in case["history"]],
                                      max_window_size=case["max_window_size"])
    assert raw == case["raw"]
    assert ids == case["ids"]


@pytest.mark.parametrize("i", [i for i, c in enumerate(CASES) if c["max_window_size"] >= 6144])
def test_chat_template_equals_reference(i, tokenizer):
    """evalkit.chat (the one chat template) encoded as the engines encode requests: same ids as
    make_context, including user text that holds <|im_end|>, <|im_start|>, <|endoftext|> as characters."""
    case = CASES[i]
    history = [([q], None if r is None else [r]) for q, r in case["history"]]
    parts = conversation(history, [case["query"]])
    assert "".join(parts) == case["raw"]
    assert tokenizer.encode_parts(parts, plain_text=True) == case["ids"]


SPECS = {"What color is the bus? Answer:": ("vqav2_val", {"question": "What color is the bus?"}),
         "Describe the image in English:": ("coco_karpathy_test", {}),
         "the man on the left": ("refcoco_val", {"sentence": "the man on the left"})}


@pytest.mark.parametrize("template", FIXTURE["task_templates"], ids=lambda t: t["query"][:20])
def test_task_chat_prompts_equal_reference(template, tokenizer):
    task, fields = SPECS[template["query"]]
    spec = registry().get(task)
    sample = Sample(id="1", images=[ImageRef.from_path(template["image"])], fields=fields)
    request = build_request(spec, sample, "chat")
    ids = tokenizer.encode_parts(request.parts, request.plain_text, image_text=path_text)
    assert ids == template["ids"]  # grounding's ids go on with the reply's start: <ref>..</ref><box>
    assert set(STOP_MARKERS) <= set(request.stop)


def test_chat_few_shot_is_one_conversation(tokenizer):
    spec = registry().get("okvqa_val")
    shots = [Sample(id=f"s{k}", images=[ImageRef.from_path(f"/img/{k}.jpg")], fields={"question": f"Q{k}? <|im_end|>"},
                    references=[f"a{k}"] * 10) for k in range(2)]
    sample = Sample(id="q", images=[ImageRef.from_path("/img/q.jpg")], fields={"question": "What is it?"})
    request = build_request(spec, sample, "chat", shots)
    text = request.text(image_token="")
    assert text.count("<|im_start|>system") == 1 and text.count("You are a helpful assistant.") == 1
    assert [f"Picture {n}:<img>" in text for n in (1, 2, 3)] == [True] * 3 and "Picture 4" not in text
    # the reference's own multi-turn history, images numbered across it, is the oracle
    history = [(f"Picture {k + 1}:<img>/img/{k}.jpg</img>\nQ{k}? <|im_end|> Answer:", f"a{k}") for k in range(2)]
    _, expected = tokenizer.make_context("Picture 3:<img>/img/q.jpg</img>\nWhat is it? Answer:", history)
    assert tokenizer.encode_parts(request.parts, request.plain_text, image_text=path_text) == expected
    ids = tokenizer.encode_parts(request.parts, request.plain_text)
    # system + 2 shots x (user, assistant) + the query's user turn; the 2 typed into questions stay text
    assert ids.count(tokenizer.im_end_id) == 6 and text.count("<|im_end|>") == 8


class ForceTokens(torch.nn.Module):
    """lm_head that makes the n-th call (= the n-th new token, in both engines) pick a given id."""

    def __init__(self, head: torch.nn.Module, forced: dict[int, int]):
        super().__init__()
        self.head, self.forced, self.calls = head, forced, 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        if self.calls in self.forced:
            logits[..., self.forced[self.calls]] = 1e4
        self.calls += 1
        return logits


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_chat_generation_stops_at_im_end(engine, tiny_model, tiny_processor):
    from evalkit.models.qwen_vl.adapter import QwenVLAdapter

    tok = tiny_processor.tokenizer
    word, other = tok.encode("red")[0], tok.encode(" user")[0]
    parts = conversation([], ["What colour?"])
    request = Request(sample_id="1", task="t", parts=parts, max_new_tokens=6, stop=list(STOP_MARKERS), plain_text=True)
    head = tiny_model.lm_head
    # put back by hand: pytest >= 9.2's monkeypatch restores an instance's __dict__ entry, and a
    # Module keeps its submodules elsewhere, so its undo would delete lm_head from the shared model
    try:
        for stop_id in (tok.im_end_id, tok.im_start_id):
            forced = {0: word, 1: stop_id, 2: tok.im_start_id, 3: other, 4: other, 5: other}
            tiny_model.lm_head = ForceTokens(head, forced)
            model = QwenVLAdapter(tiny_model, tiny_processor, str(TINY_CKPT), batch_size=1, prompt_style="chat",
                                engine=engine)
            assert model.generate([request]) == ["red"]
    finally:
        tiny_model.lm_head = head
