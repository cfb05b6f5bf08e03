"""Tokenizer and processor parity with the reference (ids exact, pixels to 1e-6)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.models.base import ModelError
from evalkit.models.qwen_vl import QwenTokenizer, QwenVLProcessor
from evalkit.task import ImageError, ImageRef


@pytest.fixture(scope="module")
def tokenizer(tiny_ckpt: Path) -> QwenTokenizer:
    return QwenTokenizer.from_pretrained(tiny_ckpt)


@pytest.fixture(scope="module")
def processor(tokenizer: QwenTokenizer) -> QwenVLProcessor:
    return QwenVLProcessor(tokenizer, image_size=448)


def surface(token: bytes | str) -> str:
    return token.decode("latin-1") if isinstance(token, bytes) else token


def test_special_ids(tokenizer, expected):
    special = expected["special_ids"]
    assert len(tokenizer) == special["len(tokenizer)"] == 151860
    for name, token_id in special.items():
        if name.startswith("<"):
            assert tokenizer.special_tokens[name] == token_id
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == special["eod(<|endoftext|>)"]
    assert tokenizer.im_start_id == special["im_start"] and tokenizer.im_end_id == special["im_end"]
    assert tokenizer.special_tokens["<|extra_0|>"] == 151646
    assert tokenizer.special_tokens["<|extra_204|>"] == 151850


def test_tokenizer_cases(tokenizer, expected):
    for case in expected["tokenizer_cases"]:
        if "from_list_format" in case:
            assert tokenizer.from_list_format(case["from_list_format"]) == case["text"]
        ids = tokenizer.encode(case["text"])
        assert ids == case["ids"], case["text"]
        assert tokenizer.decode(ids) == case.get("decode", case["text"])
        if "decode_skip_special" in case:
            assert tokenizer.decode(ids, skip_special_tokens=True) == case["decode_skip_special"]
        if "tokens" in case:
            assert [surface(t) for t in tokenizer.tokenize(case["text"])] == case["tokens"]


def test_record_prompts_tokenize_exactly(tokenizer, expected):
    for record in expected["records"]:
        if record["kind"] in ("batch", "multiple_choice"):
            continue
        assert tokenizer.encode(record["prompt"]) == record["input_ids"], record["id"]
    mc = next(r for r in expected["records"] if r["kind"] == "multiple_choice")
    prompt = tokenizer.encode(mc["prompt"])
    assert [prompt + tokenizer.encode(f" {c}") for c in "ABC"] == mc["input_ids"]


def test_image_span_expansion(tokenizer):
    ids = tokenizer.encode("<img>a.png</img>hi")
    assert len(ids) == 258 + 1 and ids[1:6] == list(b"a.png") and ids[6:257] == [151859] * 251
    assert tokenizer.decode(ids) == "<img>a.png</img>hi"
    empty = tokenizer.encode("<img></img>")
    assert empty == [151857, *[151859] * 256, 151858]
    with pytest.raises(ValueError, match="longer than 256"):
        tokenizer.encode("<img>" + "x" * 257 + "</img>")
    with pytest.raises(ValueError, match="unclosed"):
        tokenizer.encode("<img>a.png")
    assert tokenizer.decode([151857, *tokenizer.encoding.encode("a")]) == "<img>a"  # unclosed: no error


def test_nfc_and_left_padding(tokenizer):
    assert tokenizer.encode("e\u0301") == tokenizer.encode("\u00e9")
    batch = tokenizer(["a", "a b c"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == 151643 and batch["attention_mask"][0, 0].item() == 0
    assert batch["attention_mask"][1].all()
    right = tokenizer(["a", "a b c"], padding=True, padding_side="right", return_tensors="pt")
    assert right["attention_mask"][0, -1].item() == 0
    assert tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True) == ["a", "a b c"]


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(ModelError, match="qwen.tiktoken"):
        QwenTokenizer.from_pretrained(tmp_path)


def test_resized_and_pixel_values(processor, expected, tiny_dir):
    for name, info in expected["images"].items():
        path = tiny_dir / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
        resized = np.asarray(Image.open(path).convert("RGB").resize((448, 448), Image.BICUBIC))
        assert int(resized.sum(dtype=np.int64)) == info["resized_uint8_sum"]
        assert hashlib.sha256(resized.tobytes()).hexdigest() == info["resized_uint8_sha256"]
        pixels = processor.transform(path)
        ref = info["pixel_values"]
        assert list(pixels.shape) == ref["shape"]
        flat = pixels.flatten().double()
        assert torch.allclose(flat[:10], torch.tensor(ref["first"], dtype=torch.float64), atol=1e-6)
        assert torch.allclose(
            flat[ref["sample_index"]], torch.tensor(ref["sample"], dtype=torch.float64), atol=1e-6
        )
        assert flat.sum().item() == pytest.approx(ref["sum"], rel=1e-6)
        sums = pixels.double().sum(dim=(1, 2)).tolist()
        assert sums == pytest.approx(info["pixel_values_channel_sums"], rel=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK"])
def test_non_rgb_inputs_take_convert_rgb(processor, tiny_dir, mode):
    image = Image.open(tiny_dir / "img_a.png").convert(mode)
    expected = processor.transform(image.convert("RGB"))
    assert torch.equal(processor.transform(image), expected)


def test_explicit_images_equal_path_images(processor, tiny_dir, monkeypatch):
    monkeypatch.chdir(tiny_dir)
    from_paths = processor(text=["<img>img_a.png</img>x", "Picture 1:<img>img_b.png</img>\ny"], padding=True)
    explicit = processor(
        text=["<img></img>x", "Picture 1:<img></img>\ny"],
        images=[[Image.open("img_a.png")], [ImageRef.from_path("img_b.png")]],
        padding=True,
    )
    assert torch.equal(from_paths["pixel_values"], explicit["pixel_values"])
    assert from_paths["pixel_values"].shape == (2, 3, 448, 448)
    with pytest.raises(ValueError, match="1 <img> spans but 2 images"):
        processor(text=["<img></img>x"], images=[[Image.open("img_a.png")] * 2])


def test_undecodable_image(processor, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageError, match="broken.png"):
        processor(text=["<img></img>x"], images=[[str(bad)]])
    with pytest.raises(ImageError):
        processor.transform(ImageRef.from_bytes(io.BytesIO(b"garbage").getvalue()))
