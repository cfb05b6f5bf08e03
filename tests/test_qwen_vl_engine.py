"""The batched engine (evalkit/models/qwen_vl/engine.py) on the tiny fixture checkpoint, fp32 CPU.

Greedy outputs must not depend on batch size or request order, must equal transformers
`generate()` on the same weights (the harness's engine="hf" path) and the reference's greedy
records; choice log-likelihoods must equal the hf path's. Image de-duplication, the feature
cache's byte bound, out-of-memory back-off, stop strings and early-finishing rows are checked
through what the engine really does (vision-tower calls counted by a hook, batches seen by
a wrapper), not through its own claims alone.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.qwen_tiny import records, request_from_prompt
from PIL import Image

from evalkit.models.qwen_vl.adapter import QwenVLAdapter
from evalkit.models.qwen_vl.engine import QwenVLEngine
from evalkit.models.qwen_vl.engine_types import EngineConfig
from evalkit.models.qwen_vl.feature_cache import FeatureCache
from evalkit.task import ImageRef, Request

# Prompts whose greedy continuations vary token by token on the tiny random weights (image
# prompts mostly repeat one token), and stop strings that span token boundaries in them:
# "The capital of France is" -> "InInspector|InInspector| Xunit|.management|..."
# "Q: What is 2+2? A:"       -> " erre| erre|(records|(records|..."
CAPITAL, QA = "The capital of France is", "Q: What is 2+2? A:"
TEXTS = [CAPITAL, "Once upon a time", "1, 2, 3, 4,", "Hello, my name is", "def main():\n",
         "The quick brown fox", QA, "In 1492, Columbus"]
OM = 47337  # " OM": the eos model below emits eos where the tiny model emits this token


def ref(name: str, tiny_dir: Path) -> ImageRef:
    return ImageRef.from_path(tiny_dir / name)


def gradient_image() -> ImageRef:
    pixels = np.linspace(0, 255, 96 * 64 * 3).reshape(64, 96, 3).astype(np.uint8)
    return ImageRef.from_pil(Image.fromarray(pixels))


def mixed_requests(tiny_dir: Path) -> list[Request]:
    """Mixed prompt lengths, 0-2 images (three distinct, two shared), stop strings, differing
    max/min_new_tokens."""
    a, b, c = ref("img_a.png", tiny_dir), ref("img_b.png", tiny_dir), gradient_image()
    settings = [(12, 0, []), (3, 0, []), (7, 2, []), (1, 0, []), (12, 0, ["ช่"]), (5, 5, []), (12, 0, ["e(rec"]),
                (9, 0, [])]
    out = [Request(f"t{i}", "t", [text], max_new_tokens=n, min_new_tokens=m, stop=s)
           for i, (text, (n, m, s)) in enumerate(zip(TEXTS, settings))]
    out.append(Request("stop", "t", [CAPITAL], max_new_tokens=12, stop=["never", "r Xu"]))
    for i, (image, question, n) in enumerate([(a, "Describe the image in English:", 12), (a, "Hello, my name is", 6),
                                              (b, "Hello, my name is", 12), (b, "What color is it? Answer:", 4),
                                              (c, "Hello, my name is", 8), (c, "1, 2, 3, 4,", 12)]):
        out.append(Request(f"i{i}", "t", ["<img>", image, f"</img>{question}"], max_new_tokens=n))
    out.append(Request("two", "t", ["Picture 1: <img>", a, "</img>\nPicture 2: <img>", b, "</img>\nWhich?"],
                       max_new_tokens=5, stop=["infect infect infect"]))
    return out


def engine(model, processor, batch_size: int | None = None, **kwargs) -> QwenVLEngine:
    return QwenVLEngine(model, processor, EngineConfig(batch_size=batch_size, **kwargs))


def shuffled(items: list, seed: int = 1) -> tuple[list, list[int]]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order], order


def unshuffle(outputs: list, order: list[int]) -> list:
    back: list = [None] * len(outputs)
    for out, i in zip(outputs, order):
        back[i] = out
    return back


def count_vision_images(model) -> tuple[list[int], object]:
    """A hook on the vision tower that records how many images each call encodes."""
    seen: list[int] = []
    handle = model.transformer.visual.register_forward_hook(lambda m, args, out: seen.append(args[0].size(0)))
    return seen, handle


@pytest.fixture(scope="module")
def requests(tiny_dir) -> list[Request]:
    return mixed_requests(tiny_dir)


@pytest.fixture(scope="module")
def batch1_outputs(tiny_model, tiny_processor, requests) -> list[str]:
    return engine(tiny_model, tiny_processor, batch_size=1).generate(requests)


@pytest.fixture(scope="module")
def eos_model(tiny_model):
    """The tiny model with eos's (tied) embedding made a scaled copy of " OM": wherever the tiny
    model would emit " OM", this one emits eos, so rows end early on eos and min_new_tokens bites."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.transformer.wte.weight[151643] = 1.02 * model.transformer.wte.weight[OM]
    assert model.lm_head.weight is model.transformer.wte.weight
    return model


# -- invariance and equality with generate() ---------------------------------------------------
def test_outputs_do_not_depend_on_batch_size_or_order(tiny_model, tiny_processor, requests, batch1_outputs):
    assert len(set(batch1_outputs)) > 10  # varied outputs, or the comparison says little
    big = engine(tiny_model, tiny_processor, batch_size=32)
    assert big.generate(requests) == batch1_outputs
    assert big.stats.batch_sizes == [len(requests)]
    mixed, order = shuffled(requests)
    assert unshuffle(engine(tiny_model, tiny_processor, batch_size=5).generate(mixed), order) == batch1_outputs
    assert unshuffle(engine(tiny_model, tiny_processor).generate(mixed), order) == batch1_outputs  # auto
    row_by_row = engine(tiny_model, tiny_processor, batch_size=32, prefill_tokens=1)  # one row per prefill chunk
    assert row_by_row.generate(requests) == batch1_outputs


def test_engine_equals_transformers_generate(tiny_model, tiny_processor, tiny_ckpt, requests, batch1_outputs):
    hf = QwenVLAdapter(tiny_model, tiny_processor, str(tiny_ckpt), batch_size=4, engine="hf")
    assert hf.generate(requests) == batch1_outputs
    fast = QwenVLAdapter(tiny_model, tiny_processor, str(tiny_ckpt), batch_size=4)  # the default engine
    assert fast.backend == "fast"
    assert fast.generate(requests) == batch1_outputs


def test_static_decode_equals_generate(eos_model, tiny_model, tiny_processor, requests, batch1_outputs):
    """The fixed-shape decode step (static_decode.py: whole-cache attention under a mask built once
    per batch, K/V written at a position tensor, rotary rows precomputed; a CUDA graph on CUDA, eager
    here) gives the outputs of the dynamic path, which equal generate(): stop strings, images,
    rows ending on eos at different steps and min_new_tokens included."""
    static = engine(tiny_model, tiny_processor, batch_size=8, static_decode=True)
    assert static.generate(requests) == batch1_outputs
    reqs = [Request(f"r{m}", "t", [CAPITAL], max_new_tokens=12, min_new_tokens=m) for m in (0, 6, 8, 12)]
    want = engine(eos_model, tiny_processor, batch_size=1).generate(reqs)
    assert engine(eos_model, tiny_processor, batch_size=4, static_decode=True).generate(reqs) == want


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_decode_equals_generate_on_cuda(tiny_ckpt, tiny_processor, requests):
    """On CUDA (fp32, TF32 off) the decode step captured as a CUDA graph equals transformers
    generate() on the same weights."""
    from evalkit.models.qwen_vl.modeling import QwenVLForCausalLM

    model = QwenVLForCausalLM.from_pretrained(tiny_ckpt, dtype=torch.float32).to("cuda").eval()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        hf = QwenVLAdapter(model, tiny_processor, str(tiny_ckpt), batch_size=4, engine="hf").generate(requests)
        graphed = engine(model, tiny_processor, batch_size=8, static_decode=True)
        assert graphed.generate(requests) == hf
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def test_eos_and_min_new_tokens_equal_generate(eos_model, tiny_model, tiny_processor, tiny_ckpt):
    """Rows ending on eos at different steps, held back by min_new_tokens, in one batch."""
    mins = (0, 6, 8, 12)
    reqs = [Request(f"r{m}", "t", [CAPITAL], max_new_tokens=12, min_new_tokens=m) for m in mins]
    reqs += [Request("other", "t", ["1, 2, 3, 4,"], max_new_tokens=12)]
    eng = engine(eos_model, tiny_processor, batch_size=8)
    fast = eng.generate(reqs)
    hf = QwenVLAdapter(eos_model, tiny_processor, str(tiny_ckpt), batch_size=8, engine="hf").generate(reqs)
    assert fast == hf
    # the tiny model's 6th-10th tokens are " OM": eos there, unless held back
    assert fast[0] == "InInspectorInInspector Xunit.management.management"
    assert [out.count(" OM") for out in fast[1:3]] == [1, 3]
    assert fast[3] == engine(tiny_model, tiny_processor, batch_size=1).generate(reqs[3:4])[0]


def test_engine_matches_reference_greedy_records(tiny_model, tiny_processor, expected, tiny_dir):
    recs = records(expected)
    ids = ["caption_eval", "caption_hf", "vqa", "grounding", "two_images", "text_only", "long_ntk_logn"]
    reqs = [request_from_prompt(r, recs[r]["prompt"], tiny_dir, max_new_tokens=12) for r in ids]
    for batch_size in (1, 4):
        out = engine(tiny_model, tiny_processor, batch_size=batch_size).generate(reqs)
        assert out == [recs[r]["greedy"]["text_skip_special"] for r in ids], f"batch {batch_size}"


# -- choices ---------------------------------------------------------------------------------
CHOICES = [" A", " yellow square", " red", "blue and green", " B"]


def choice_requests(tiny_dir: Path) -> list[Request]:
    a, b = ref("img_a.png", tiny_dir), ref("img_b.png", tiny_dir)
    return [
        Request("c0", "t", ["<img>", b, "</img>Question: What color is the square? Answer:"], choices=CHOICES),
        Request("c1", "t", ["<img>", a, "</img>Which?"], choices=CHOICES[:3]),
        Request("c2", "t", [CAPITAL], choices=[" Paris", " Lyon and Marseille"]),
        Request("c3", "t", ["Picture 1: <img>", a, "</img>Picture 2: <img>", b, "</img>Same?"], choices=[" yes", " no"]),
        Request("c4", "t", ["<img>", b, "</img>Is it a square?"], choices=[" yes"]),
    ]


def flat_scores(scores) -> tuple[list[float], list[int]]:
    return [s.logprob for row in scores for s in row], [s.n_tokens for row in scores for s in row]


def test_choice_loglikelihoods_equal_hf_and_are_batch_invariant(tiny_model, tiny_processor, tiny_ckpt, tiny_dir):
    reqs = choice_requests(tiny_dir)
    hf = QwenVLAdapter(tiny_model, tiny_processor, str(tiny_ckpt), batch_size=3, engine="hf").loglikelihood(reqs)
    want, want_n = flat_scores(hf)
    assert max(want_n) == 3 and min(want_n) == 1  # multi-token choices of different lengths
    mixed, order = shuffled(reqs, seed=3)
    runs = {
        "batch 1": engine(tiny_model, tiny_processor, batch_size=1).loglikelihood(reqs),
        "batch 8": engine(tiny_model, tiny_processor, batch_size=8).loglikelihood(reqs),
        "shuffled batch 2": unshuffle(engine(tiny_model, tiny_processor, batch_size=2).loglikelihood(mixed), order),
    }
    for name, scores in runs.items():
        got, got_n = flat_scores(scores)
        assert got_n == want_n, name
        assert got == pytest.approx(want, abs=1e-4), name
    assert flat_scores(runs["batch 1"])[0] == pytest.approx(flat_scores(runs["batch 8"])[0], abs=1e-5)


# -- images ----------------------------------------------------------------------------------
def test_each_distinct_image_is_encoded_once(tiny_model, tiny_processor, tiny_dir):
    a, b, c = ref("img_a.png", tiny_dir), ref("img_b.png", tiny_dir), gradient_image()
    same_a = ImageRef.from_path(str(tiny_dir / "." / "img_a.png"))  # another ImageRef of the same file
    images = [a, b, c, same_a] * 3
    reqs = [Request(f"q{i}", "t", ["<img>", im, f"</img>{TEXTS[i % 8]}"], max_new_tokens=2)
            for i, im in enumerate(images)]
    eng = engine(tiny_model, tiny_processor, batch_size=2)  # questions on one image land in several batches
    seen, handle = count_vision_images(tiny_model)
    try:
        first = eng.generate(reqs)
        eng.generate(reqs[:4])
        eng.loglikelihood([Request("c", "t", ["<img>", b, "</img>Colour?"], choices=[" red", " blue"])])
    finally:
        handle.remove()
    assert sum(seen) == 3 and eng.stats.images_encoded == 3
    assert eng.stats.image_cache_hits > 0
    assert first == engine(tiny_model, tiny_processor, batch_size=1, feature_cache_bytes=0).generate(reqs)


def test_images_are_decoded_once_ahead_of_the_model(tiny_model, tiny_processor, tiny_dir):
    """The next batch's images are decoded on the prefetch pool while the current one runs,
    each distinct image once per run; outputs equal inline decoding."""
    a, b, c = ref("img_a.png", tiny_dir), ref("img_b.png", tiny_dir), gradient_image()
    reqs = [Request(f"q{i}", "t", ["<img>", im, f"</img>{TEXTS[i % 8]}"], max_new_tokens=2)
            for i, im in enumerate([a, b, c] * 4)]
    decoded: list[str] = []
    batches: list[int] = []

    def counting(image):
        decoded.append(image.key)
        return tiny_processor.transform(image)

    eng = engine(tiny_model, tiny_processor, batch_size=2, image_workers=2)
    eng.images.transform = counting
    run_batch = eng._generate_batch

    seen: set[str] = set()

    def spy(batch):  # (images submitted when a batch starts, distinct images of the batches up to it)
        seen.update(ref.key for p in batch for ref in p.images)
        batches.append((eng.images.submitted, len(seen)))
        return run_batch(batch)

    eng._generate_batch = spy
    out = eng.generate(reqs)
    assert sorted(decoded) == sorted({a.key, b.key, c.key})  # each distinct image decoded once
    assert batches[-1][1] == 3 > batches[0][1]  # later batches bring new images...
    assert all(submitted >= needed for submitted, needed in batches[1:])  # ...submitted before they ran
    inline = engine(tiny_model, tiny_processor, batch_size=2, image_workers=0)
    assert out == inline.generate(reqs) and inline.images.submitted == 0


def test_feature_cache_byte_bound_evicts(tiny_model, tiny_processor, tiny_dir):
    per_image = 256 * tiny_model.config.hidden_size * 4  # fp32 [Q, D]
    eng = engine(tiny_model, tiny_processor, batch_size=1, feature_cache_bytes=2 * per_image)
    a, b, c = ref("img_a.png", tiny_dir), ref("img_b.png", tiny_dir), gradient_image()
    ask = lambda im: Request("q", "t", ["<img>", im, "</img>Hi"], max_new_tokens=1)  # noqa: E731
    eng.generate([ask(a), ask(b), ask(c)])
    assert len(eng.features) == 2 and eng.features.bytes == 2 * per_image
    assert a.key not in eng.features and c.key in eng.features
    eng.generate([ask(c)])
    assert eng.stats.images_encoded == 3  # still cached
    eng.generate([ask(a)])
    assert eng.stats.images_encoded == 4  # evicted, so encoded again


def test_feature_cache_is_lru():
    cache = FeatureCache(max_bytes=3 * 40)
    for key in "abc":
        cache.put(key, torch.zeros(10))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", torch.zeros(10))
    assert "b" not in cache and {"a", "c", "d"} == {k for k in "abcd" if k in cache}
    cache.put("big", torch.zeros(100))  # larger than the bound alone: kept, everything else goes
    assert len(cache) == 1 and cache.bytes == 400


# -- out-of-memory back-off ------------------------------------------------------------------
def oom_above(eng: QwenVLEngine, method: str, limit: int, error: Exception) -> list[list[str]]:
    """Make `eng.<method>` fail like an allocator on batches larger than `limit`; returns the
    sample ids of every batch that was attempted, in order."""
    attempts: list[list[str]] = []
    real = getattr(eng, method)

    def run(batch, *args):
        attempts.append([p.request.sample_id for p in batch])
        if len(batch) > limit:
            raise error
        return real(batch, *args)

    setattr(eng, method, run)
    return attempts


CPU_OOM = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 123456789 bytes.")


@pytest.mark.parametrize("batch_size,error", [(8, CPU_OOM), (None, torch.OutOfMemoryError("CUDA out of memory."))])
def test_oom_halves_the_batch_and_loses_nothing(tiny_model, tiny_processor, requests, batch1_outputs, batch_size,
                                                error):
    eng = engine(tiny_model, tiny_processor, batch_size=batch_size, max_batch_size=8)
    attempts = oom_above(eng, "_generate_batch", 2, error)
    assert eng.generate(requests) == batch1_outputs
    assert [len(a) for a in attempts[:3]] == [8, 4, 2]  # halved, then kept
    assert attempts[1] == attempts[0][:4] and attempts[2] == attempts[0][:2]  # the same requests retried
    done = [sid for a in attempts if len(a) <= 2 for sid in a]
    assert sorted(done) == sorted(r.sample_id for r in requests)  # each exactly once
    assert eng.stats.oom_backoffs == 2 and eng.stats.requests == len(requests)
    assert set(eng.stats.batch_sizes) <= {1, 2}


def test_oom_backoff_for_choices(tiny_model, tiny_processor, tiny_dir):
    reqs = choice_requests(tiny_dir)
    want = engine(tiny_model, tiny_processor, batch_size=1).loglikelihood(reqs)
    eng = engine(tiny_model, tiny_processor, batch_size=4)
    attempts = oom_above(eng, "_score_batch", 1, CPU_OOM)
    got = eng.loglikelihood(reqs)
    assert flat_scores(got)[0] == pytest.approx(flat_scores(want)[0], abs=1e-5)
    assert [len(a) for a in attempts[:3]] == [4, 2, 1] and eng.stats.oom_backoffs == 2


def test_oom_at_batch_one_and_other_errors_propagate(tiny_model, tiny_processor, requests):
    eng = engine(tiny_model, tiny_processor, batch_size=1)
    oom_above(eng, "_generate_batch", 0, CPU_OOM)
    with pytest.raises(RuntimeError, match="can't allocate"):
        eng.generate(requests[:2])
    eng = engine(tiny_model, tiny_processor, batch_size=4)
    attempts = oom_above(eng, "_generate_batch", 0, ValueError("a real bug"))
    with pytest.raises(ValueError, match="a real bug"):
        eng.generate(requests)
    assert len(attempts) == 1 and eng.stats.oom_backoffs == 0


def test_failed_batch_leaves_no_token_counts(tiny_model, tiny_processor, requests, batch1_outputs):
    """Work counters feed `evalkit bench`'s hardware-limit figure: an attempt that ran out of
    memory after its prefill must not be counted twice."""
    clean = engine(tiny_model, tiny_processor, batch_size=2)
    clean.generate(requests)
    eng = engine(tiny_model, tiny_processor, batch_size=4)
    real_prefill = eng._prefill

    def prefill_then_oom(batch, extra):
        out = real_prefill(batch, extra)
        if len(batch) > 2:
            raise CPU_OOM
        return out

    eng._prefill = prefill_then_oom
    assert eng.generate(requests) == batch1_outputs
    assert eng.stats.oom_backoffs == 1
    for name in ("requests", "prompt_tokens", "padded_prompt_tokens", "generated_tokens", "decode_row_steps"):
        assert getattr(eng.stats, name) == getattr(clean.stats, name), name


# -- stopping --------------------------------------------------------------------------------
def test_stop_string_split_across_tokens_stops_decoding(tiny_model, tiny_processor):
    tok = tiny_processor.tokenizer
    free = engine(tiny_model, tiny_processor, batch_size=1)
    full_ids = tok.encode(free.generate([Request("f", "t", [CAPITAL], max_new_tokens=12)])[0])
    pieces = [tok.decode([i]) for i in full_ids]
    assert not any("r Xu" in p for p in pieces) and "r Xu" in "".join(pieces)  # spans 3 tokens
    eng = engine(tiny_model, tiny_processor, batch_size=1)
    out = eng.generate([Request("s", "t", [CAPITAL], max_new_tokens=12, stop=["r Xu"])])
    assert out == ["InInspectorInInspecto"]
    assert eng.stats.generated_tokens == 3  # stopped at the token that completed it, not at 12


def test_finished_rows_are_dropped_and_the_rest_unchanged(tiny_model, tiny_processor, batch1_outputs, requests):
    long = [r for r in requests if r.max_new_tokens == 12 and not r.stop]
    short = [Request(f"s{i}", "t", [t], max_new_tokens=1 + i % 2) for i, t in enumerate(TEXTS)]
    eng = engine(tiny_model, tiny_processor, batch_size=32)
    out = eng.generate(short + long)
    solo = engine(tiny_model, tiny_processor, batch_size=1)
    assert out == solo.generate(short) + [batch1_outputs[requests.index(r)] for r in long]
    rows = len(short) + len(long)
    assert eng.stats.batches == 1
    assert eng.stats.decode_row_steps < rows * (12 - 1) // 2  # finished rows stopped costing decode work
    assert eng.stats.generated_tokens == solo.stats.generated_tokens + 12 * len(long)


def test_stop_table_flags_only_tokens_that_can_complete_a_stop(tiny_model, tiny_processor):
    eng = engine(tiny_model, tiny_processor)
    tok = tiny_processor.tokenizer
    table = eng.stop_tables.table(("r Xu",))
    assert table[tok.encode(" Xunit")[0]] and table[tok.encode("u")[0]]
    assert not table[tok.encode("InInspector")[0]] and not table[tok.encode(" OM")[0]]
    assert table[tok.img_end_id] and table[-1]  # decode re-shapes at </img>; ids past the tokenizer: checked
    assert bool(eng.stop_tables.table(("\ufffd",)).all())


def test_choices_crossing_a_dynamic_ntk_step_score_as_generate_does(tiny_model, tiny_processor, tiny_ckpt):
    """A prompt just under seq_length (2048) whose longer choices take the sequence past it: the
    reference (and the hf path) computes the rotary NTK alpha from the whole prompt + choice, so
    the prompt's cache, prefilled at alpha 1, must not be reused for those choices."""
    tok = tiny_processor.tokenizer
    text = tok.decode(tok.encode((" ".join(TEXTS) + " ") * 60)[:2046])
    while len(tok.encode(text)) > 2046:
        text = text[:-1]
    choices = [" A", " yellow and green square, surely", " red"]
    assert len(tok.encode(text)) + max(len(tok.encode(c)) for c in choices) - 1 > 2048
    reqs = [Request("long", "t", [text], choices=choices), Request("short", "t", [CAPITAL], choices=choices)]
    hf = QwenVLAdapter(tiny_model, tiny_processor, str(tiny_ckpt), batch_size=4, engine="hf").loglikelihood(reqs)
    got = engine(tiny_model, tiny_processor, batch_size=4).loglikelihood(reqs)
    assert flat_scores(got)[1] == flat_scores(hf)[1]
    assert flat_scores(got)[0] == pytest.approx(flat_scores(hf)[0], abs=1e-4)


# -- memory: auto batch size and out-of-memory (issue 22) -----------------------------------------
GIB = 2**30


class CudaSized(QwenVLEngine):
    """The engine on the CPU model, but sizing and releasing memory as it does on a GPU, against
    mocked torch.cuda counters: what the GPU paths decide can be checked without a GPU."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", 0)


class FakeCudaMemory:
    """torch.cuda's memory counters of one card: `reserved` by the caching allocator, of which
    `allocated` is handed out; the driver reports total - reserved (- others) as free."""

    def __init__(self, monkeypatch, total: int, allocated: int, reserved: int):
        self.total, self.allocated, self.reserved = total, allocated, reserved
        self.empty_cache_calls: list[int] = []
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (self.total - self.reserved, self.total))
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: self.reserved)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: self.empty_cache_calls.append(self.reserved))


def real_size_engine(tiny_processor) -> QwenVLEngine:
    """The real-size Qwen-VL (bf16) on the meta device behind CudaSized: its config and dtype, no memory."""
    from conftest import REAL_CONFIG_DIR

    from evalkit.models.qwen_vl import QwenVLConfig, QwenVLForCausalLM

    with torch.device("meta"):
        model = QwenVLForCausalLM(QwenVLConfig.from_pretrained(REAL_CONFIG_DIR)).to(torch.bfloat16)
    return CudaSized(model, tiny_processor, EngineConfig(batch_size=None))


def long_prompts(eng: QwenVLEngine, n: int, tokens: int, **kwargs) -> list:
    from evalkit.models.qwen_vl.scheduler import TokenizedRequest

    return [TokenizedRequest(list(range(tokens)), [], Request(f"p{i}", "t", ["x"], **kwargs)) for i in range(n)]


def test_auto_batch_size_counts_reserved_memory_as_free(tiny_processor, monkeypatch):
    """Modelled on an 80 GB card at 1,400-token prompts: after the first batch the allocator keeps
    what it reserved (the driver reports it as used); the second sizing must not shrink."""
    eng = real_size_engine(tiny_processor)
    prepared = long_prompts(eng, 256, 1400)
    mem = FakeCudaMemory(monkeypatch, total=80 * GIB, allocated=19 * GIB, reserved=19 * GIB)  # weights only
    first = eng.scheduler.auto_batch_size(prepared, 10)
    mem.reserved = 70 * GIB  # after a batch: blocks cached, weights still the only live tensors
    assert eng.scheduler.auto_batch_size(prepared, 10) == first
    assert 30 < first < 64  # about 47 rows of 1,410 tokens fit beside 19 GB of weights
    mem.allocated = 45 * GIB  # but memory really in use does count
    assert eng.scheduler.auto_batch_size(prepared, 10) < first // 2


def test_auto_batch_size_is_decided_once_per_call(tiny_model, tiny_processor, requests, batch1_outputs):
    eng = engine(tiny_model, tiny_processor)
    sizes: list[int] = []
    real = eng.scheduler.auto_batch_size

    def sized(*args):
        sizes.append(real(*args))
        return 3  # several batches in the call

    eng.scheduler.auto_batch_size = sized
    assert eng.generate(requests) == batch1_outputs
    n = len(requests)
    assert len(sizes) == 1 and eng.stats.batch_sizes == [3] * (n // 3) + [n % 3] * (n % 3 > 0)


def test_auto_estimate_counts_choice_fan_out(tiny_processor, monkeypatch):
    """200 requests x 4 choices x 29 tokens on the real model: the float32 log-softmax over every
    choice token alone is ~14 GB per copy, ~35 GB with the logits beside it."""
    from evalkit.models.qwen_vl.scheduler import batch_memory

    eng = real_size_engine(tiny_processor)
    config = eng.model.config
    _, generate_row = batch_memory(config, torch.bfloat16, 100, 29)
    fixed, choice_row = batch_memory(config, torch.bfloat16, 100, 29, fan_out=4)
    assert 200 * (choice_row - generate_row) > 34e9  # the [R, L, V] logits of 800 choice rows
    kv = 2 * 32 * 32 * 128 * 129 * 2  # K and V, 32 layers x 32 heads x 128, 129 tokens, bf16
    assert choice_row > 5 * kv and generate_row >= 1.5 * kv  # the fanned-out / dropped-rows copy beside the cache
    _, with_images = batch_memory(config, torch.bfloat16, 100, 29, images=2)
    assert with_images - generate_row == 2 * 256 * 4096 * 2
    grown, _ = batch_memory(config, torch.bfloat16, 100, 29, new_images=2000, cache_room=2 * GIB)
    assert grown - batch_memory(config, torch.bfloat16, 100, 29)[0] == 2 * GIB  # the cache's room, no more
    FakeCudaMemory(monkeypatch, total=80 * GIB, allocated=19 * GIB, reserved=19 * GIB)
    prompts = long_prompts(eng, 200, 100)
    assert eng.scheduler.auto_batch_size(prompts, 29, fan_out=4) < 100 < eng.scheduler.auto_batch_size(prompts, 29)


def test_oom_releases_the_failed_batch_before_emptying_the_cache(tiny_processor, monkeypatch):
    """empty_cache() frees nothing while the traceback still holds the failed batch's tensors."""
    import weakref

    eng = CudaSized(real_size_engine(tiny_processor).model, tiny_processor, EngineConfig(batch_size=8))
    alive_at_empty: list[bool] = []
    held: list[weakref.ref] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: alive_at_empty.append(any(r() is not None for r in held)))

    def run(batch):
        activations = torch.zeros(len(batch), 1000)  # what a forward leaves in its frames
        held.append(weakref.ref(activations))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return [p.request.sample_id for p in batch]

    prepared = long_prompts(eng, 8, 5)
    assert eng._run_batched(prepared, lambda b: 1, run) == [p.request.sample_id for p in prepared]
    assert alive_at_empty == [False, False]  # two back-offs (8 -> 4 -> 2), each after the release


def test_oom_backoff_holds_for_its_task_only(tiny_model, tiny_processor, requests):
    eng = engine(tiny_model, tiny_processor, batch_size=8)
    attempts = oom_above(eng, "_generate_batch", 2, CPU_OOM)
    task_a = [_with_task(r, "a") for r in requests]
    task_b = [_with_task(r, "b") for r in requests]
    eng.generate(task_a[:8])
    assert [len(a) for a in attempts] == [8, 4, 2, 2, 2, 2]
    attempts.clear()
    eng.generate(task_a[8:])  # the same task again: starts at the size that fitted
    assert max(len(a) for a in attempts) == 2 and eng.stats.oom_backoffs == 2
    attempts.clear()
    eng.generate(task_b[:8])  # another task starts from the full size
    assert [len(a) for a in attempts][:3] == [8, 4, 2]


def _with_task(request: Request, task: str) -> Request:
    from dataclasses import replace

    return replace(request, task=task)


def test_prefill_keeps_only_each_chunks_last_position(tiny_model, tiny_processor):
    """With several prefill chunks, an earlier chunk's whole final-norm output [rows, L, D] must be
    freed once the next chunks run (a view of its last position would keep its storage alive)."""
    from torch.multiprocessing.reductions import StorageWeakRef

    eng = engine(tiny_model, tiny_processor, batch_size=6, prefill_tokens=1)  # one row per chunk
    outputs: list[StorageWeakRef] = []
    alive_later: list[int] = []

    def hook(module, args, out) -> None:  # runs as each chunk's forward returns
        alive_later.append(sum(not r.expired() for r in outputs[:-1]))
        outputs.append(StorageWeakRef(out.untyped_storage()))

    handle = tiny_model.transformer.register_forward_hook(hook)
    try:
        eng.generate([Request(f"r{i}", "t", [t], max_new_tokens=1) for i, t in enumerate(TEXTS[:6])])
    finally:
        handle.remove()
    assert len(outputs) == 6 and alive_later[2:] == [0] * 4  # at most the chunk just before is still referenced


def test_vision_time_ends_after_a_device_sync(tiny_model, tiny_processor, tiny_dir):
    """On a GPU the vision tower's kernels are still running when it returns: vision_s must be
    read after a sync, or the last vision sub-batch is counted as prefill."""
    eng = engine(tiny_model, tiny_processor, batch_size=4)
    events: list[str] = []
    eng._sync = lambda: events.append("sync")
    real_visual = eng._visual
    eng._visual = lambda pixels: (events.append("vision"), real_visual(pixels))[1]
    real_now = eng._now
    eng._now = lambda: (events.append("clock"), real_now())[1]
    eng._image_features([eng._prepare(Request("i", "t", ["<img>", ref("img_a.png", tiny_dir), "</img>Hi"]))])
    assert events == ["clock", "vision", "sync", "clock"]


def test_compile_applies_to_the_engine_calls_only(tiny_model, tiny_processor, tiny_ckpt, compile_calls):
    """--compile compiles copies the engine swaps in for its own calls: generate() on the same
    model (the bench baselines) runs the modules as loaded."""
    calls = compile_calls
    model = QwenVLAdapter(tiny_model, tiny_processor, str(tiny_ckpt), batch_size=2,
                        engine_config=EngineConfig(compile=True))
    mlps = [block.mlp for block in tiny_model.transformer.h]
    reqs = [Request("a", "t", [CAPITAL], max_new_tokens=3), Request("b", "t", [QA], max_new_tokens=3)]
    fast = model.generate(reqs)
    assert calls["compiled"] > 0 and [block.mlp for block in tiny_model.transformer.h] == mlps  # put back
    calls["compiled"] = 0
    model.backend = "hf"
    assert model.generate(reqs) == fast and calls["compiled"] == 0


# -- the greedy pick over vocabulary tiles -----------------------------------------------------
@pytest.mark.parametrize("tile", [1, 7, 64, 1000, 5000])
def test_tiled_pick_is_the_first_maximum(tile):
    from evalkit.models.qwen_vl.vocab import first_max, first_max_tiled

    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(32, 3001, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(3001, 32, generator=gen))
        head.weight[2500] = head.weight[10]  # exact ties across tiles: the first one wins, as argmax
        head.weight[11] = head.weight[10]  # and inside a tile
    hidden = torch.randn(6, 32, generator=gen)
    hidden[0] = head.weight[10].detach() * 3  # row 0's maximum is the tied token 10 (also 11 and 2500)
    ban = torch.tensor([True, False, True, False, False, True])
    with torch.inference_mode():  # as the engine runs
        full = first_max(hidden, head)
        assert full[0] == 10 and torch.equal(full, torch.argmax(hidden @ head.weight.T, dim=-1))
        assert torch.equal(first_max_tiled(hidden, head.weight, tile), full)
        ids = torch.tensor([[10, 2500]] * 6)  # two held-back ids per row (eos and another stop id)
        banned = first_max(hidden, head, ban_ids=ids, ban_rows=ban)
        assert banned[0] == 11 and torch.equal(first_max_tiled(hidden, head.weight, tile, ids, ban), banned)


def test_tiled_vocabulary_pick_equals_generate(tiny_model, tiny_processor, requests, batch1_outputs):
    eng = engine(tiny_model, tiny_processor, batch_size=8, vocab_tile=4096)
    assert eng.generate(requests) == batch1_outputs


@pytest.mark.parametrize("batch_size", [None, 2])
def test_a_run_generates_each_request_once_and_saves_every_engine_batch(tiny_model, tiny_processor, tiny_ckpt,
                                                                         tmp_path, batch_size):
    """The runner's streaming call reaches the engine's batches: each engine batch is handed back
    (on_batch) as it finishes, and no request is generated twice. (generate once passed on_batch
    where fan_out goes: with auto the call failed at sizing and fell back to 64-request calls,
    with a fixed size every request was generated twice.)"""
    from evalkit.registry import Registry
    from evalkit.runner import Runner, RunSettings

    model = QwenVLAdapter(tiny_model, tiny_processor, str(tiny_ckpt), batch_size=batch_size or "auto")
    model.engine.config.max_batch_size = 2  # several engine batches in one call, with auto too
    streamed: list[int] = []
    generate = model.engine.generate

    def counting(requests, on_batch=None):
        def report(indices, outputs):
            streamed.append(len(indices))
            on_batch(indices, outputs)
        return generate(requests, report if on_batch else None)

    model.engine.generate = counting
    settings = RunSettings(output=tmp_path / "run", limit=6, batch_size=batch_size, progress=False, model_spec="tiny")
    data = Runner(model, settings).run(Registry().select("vqav2_mini"))
    assert data["tasks"]["vqav2_mini"]["n_samples"] == 6
    assert model.engine.stats.requests == 6  # each request generated once
    assert sum(streamed) == 6 and all(n <= 2 for n in streamed)  # every engine batch saved as it finished
