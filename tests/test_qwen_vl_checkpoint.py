"""Loading: official layout (tied/untied, sharded), transformers Auto classes, parameter counts of
the real-size config on the meta device, and one clear ModelError per kind of bad checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REAL_CONFIG_DIR
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from evalkit.models.base import ModelError
from evalkit.models.qwen_vl import QwenVLConfig, QwenVLForCausalLM
from evalkit.models.qwen_vl.adapter import QwenVLAdapter
from evalkit.models.qwen_vl.modeling import register

PROMPT_IDS = torch.tensor([[785, 6722, 315, 9625, 374]])  # "The capital of France is"


@pytest.fixture(scope="module")
def state(tiny_ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(tiny_ckpt / "model.safetensors")


@pytest.fixture(scope="module")
def reference_logits(tiny_ckpt: Path) -> torch.Tensor:
    model = QwenVLForCausalLM.from_pretrained(tiny_ckpt, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=PROMPT_IDS).logits


def make_checkpoint(
    root: Path,
    src: Path,
    tensors: dict[str, torch.Tensor],
    config_changes: dict | None = None,
    tokenizer: bool = True,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text())
    config.update(config_changes or {})
    (root / "config.json").write_text(json.dumps(config))
    if tokenizer:
        (root / "qwen.tiktoken").symlink_to(src / "qwen.tiktoken")
    if tensors:
        save_file(tensors, root / "model.safetensors")
    return root


def test_real_size_parameter_counts():
    config = QwenVLConfig.from_pretrained(REAL_CONFIG_DIR)
    with torch.device("meta"):
        model = QwenVLForCausalLM(config)

    def count(module: torch.nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e9

    visual = model.transformer.visual
    adapter = count(visual.attn_pool)
    vit = count(visual) - adapter
    llm = count(model) - count(visual)
    assert vit == pytest.approx(1.9, abs=0.05)  # paper Table 1
    assert adapter == pytest.approx(0.08, abs=0.005)
    assert llm == pytest.approx(7.7, abs=0.05)
    assert count(model) == pytest.approx(9.6, abs=0.1)
    assert model.lm_head.weight.shape == (151936, 4096)
    assert visual.attn_pool.attn.num_heads == 32


def test_auto_classes_and_idempotent_registration(tiny_ckpt):
    register()  # a second registration must not raise
    config = AutoConfig.from_pretrained(tiny_ckpt)
    assert isinstance(config, QwenVLConfig) and config.visual["n_queries"] == 256
    model = AutoModelForCausalLM.from_pretrained(tiny_ckpt, torch_dtype=torch.float32)
    assert isinstance(model, QwenVLForCausalLM)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied


def test_config_defaults_and_unknown_fields():
    config = QwenVLConfig(visual={"width": 32}, my_field=7)
    assert config.my_field == 7 and config.visual["width"] == 32 and config.visual["layers"] == 48
    assert config.seq_length == 2048 and config.use_dynamic_ntk and config.use_logn_attn
    assert QwenVLConfig.from_dict(config.to_dict()).visual == config.visual


def test_untied_sharded_checkpoint(tmp_path, tiny_ckpt, state, reference_logits):
    tensors = {k: v.clone() for k, v in state.items()}
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone()
    ckpt = make_checkpoint(tmp_path / "sharded", tiny_ckpt, {}, {"tie_word_embeddings": False})
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, ckpt / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    model = QwenVLForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    with torch.no_grad():
        assert torch.equal(model(input_ids=PROMPT_IDS).logits, reference_logits)


def test_pytorch_bin_checkpoint(tmp_path, tiny_ckpt, state, reference_logits):
    ckpt = make_checkpoint(tmp_path / "bin", tiny_ckpt, {})
    torch.save(dict(state), ckpt / "pytorch_model.bin")
    model = QwenVLForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=PROMPT_IDS).logits, reference_logits)


def test_missing_key(tmp_path, tiny_ckpt, state):
    tensors = {k: v for k, v in state.items() if k != "transformer.h.1.mlp.w2.weight"}
    ckpt = make_checkpoint(tmp_path / "missing", tiny_ckpt, tensors)
    with pytest.raises(
        ModelError, match=r"model\.safetensors: missing key transformer\.h\.1\.mlp\.w2\.weight"
    ):
        QwenVLForCausalLM.from_pretrained(ckpt)


def test_untied_config_needs_lm_head(tmp_path, tiny_ckpt, state):
    ckpt = make_checkpoint(tmp_path / "nohead", tiny_ckpt, dict(state), {"tie_word_embeddings": False})
    with pytest.raises(ModelError, match="missing key lm_head.weight"):
        QwenVLForCausalLM.from_pretrained(ckpt)


def test_unexpected_key(tmp_path, tiny_ckpt, state):
    tensors = {**state, "transformer.h.9.attn.c_attn.weight": torch.zeros(2, 2)}
    ckpt = make_checkpoint(tmp_path / "extra", tiny_ckpt, tensors)
    with pytest.raises(ModelError, match=r"unexpected key transformer\.h\.9\.attn\.c_attn\.weight"):
        QwenVLForCausalLM.from_pretrained(ckpt)


def test_wrong_shape(tmp_path, tiny_ckpt, state):
    ckpt = make_checkpoint(tmp_path / "shape", tiny_ckpt, dict(state), {"intermediate_size": 1024})
    with pytest.raises(
        ModelError, match=r"wrong shape for transformer\.h\.0\.mlp\.c_proj\.weight: \[128, 256\]"
    ):
        QwenVLForCausalLM.from_pretrained(ckpt)


def test_truncated_file(tmp_path, tiny_ckpt):
    ckpt = make_checkpoint(tmp_path / "truncated", tiny_ckpt, {})
    data = (tiny_ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"model\.safetensors: truncated"):
        QwenVLForCausalLM.from_pretrained(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(ModelError, match="corrupt safetensors header"):
        QwenVLForCausalLM.from_pretrained(ckpt)


def test_truncated_bin(tmp_path, tiny_ckpt, state):
    ckpt = make_checkpoint(tmp_path / "badbin", tiny_ckpt, {})
    torch.save(dict(state), ckpt / "pytorch_model.bin")
    data = (ckpt / "pytorch_model.bin").read_bytes()
    (ckpt / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match=r"pytorch_model\.bin: cannot read weights"):
        QwenVLForCausalLM.from_pretrained(ckpt)


def test_no_weights_and_missing_shard(tmp_path, tiny_ckpt):
    ckpt = make_checkpoint(tmp_path / "empty", tiny_ckpt, {})
    with pytest.raises(ModelError, match="no weights found"):
        QwenVLForCausalLM.from_pretrained(ckpt)
    index = {"weight_map": {"transformer.wte.weight": "model-00001-of-00002.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="model-00001-of-00002.safetensors: shard listed"):
        QwenVLForCausalLM.from_pretrained(ckpt)


def test_missing_tokenizer_file(tmp_path, tiny_ckpt):
    ckpt = make_checkpoint(tmp_path / "notok", tiny_ckpt, {}, tokenizer=False)
    (ckpt / "model.safetensors").symlink_to(tiny_ckpt / "model.safetensors")
    with pytest.raises(ModelError, match=r"qwen\.tiktoken: tokenizer file is missing"):
        QwenVLAdapter.from_spec(str(ckpt))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs(tiny_ckpt, tiny_dir, expected, dtype, monkeypatch):
    """Low precision: every weight (incl. the resampler's frozen pos_embed) in `dtype`, greedy runs."""
    from evalkit.models.qwen_vl import QwenVLProcessor

    monkeypatch.chdir(tiny_dir)
    model = QwenVLForCausalLM.from_pretrained(tiny_ckpt, dtype=dtype).eval()
    batch = QwenVLProcessor.from_pretrained(tiny_ckpt)(
        text=["<img>img_a.png</img>Describe the image in English:", "The capital of France is"], padding=True
    )
    with torch.no_grad():
        out = model.generate(
            **batch, max_new_tokens=2, do_sample=False, eos_token_id=151643, pad_token_id=151643
        )
    records = {r["id"]: r for r in expected["records"]}
    assert out[0, -2].item() == records["caption_eval"]["greedy"]["new_ids"][0]
    assert out[1, -2].item() == records["text_only"]["greedy"]["new_ids"][0]


def test_checkpoint_loads_straight_onto_the_device(tiny_ckpt, monkeypatch):
    """No full copy in host memory first (19 GB per rank for the real model): from_pretrained places
    each tensor on the target device, and the model is never moved as a whole afterwards."""
    seen: dict = {}
    real = QwenVLForCausalLM.from_pretrained.__func__

    def spy(cls, path, *args, **kwargs):
        seen.update(kwargs)
        return real(cls, path, *args, **kwargs)

    moved: list[str] = []
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        moved.append(type(self).__name__)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(QwenVLForCausalLM, "from_pretrained", classmethod(spy))
    monkeypatch.setattr(torch.nn.Module, "to", to)
    model = QwenVLAdapter.from_spec(str(tiny_ckpt), dtype="fp32", device="cpu")
    assert seen["device_map"] == torch.device("cpu") and seen["dtype"] == torch.float32
    assert "QwenVLForCausalLM" not in moved and model.device == torch.device("cpu")


class _OneParam(torch.nn.Module):
    """A module whose parameter claims a dtype and device (no GPU needed to build it)."""

    def __init__(self, dtype: torch.dtype, device: str):
        super().__init__()
        self.claim = type("P", (), {"dtype": dtype, "device": torch.device(device)})()

    def parameters(self, recurse: bool = True):
        yield self.claim


@pytest.mark.parametrize("dtype, device, tf32_after", [
    (torch.float32, "cuda", False),  # fp32 on a GPU: TF32 off, matmuls and the ViT's patch convolution
    (torch.bfloat16, "cuda", True),
    (torch.float32, "cpu", True),
])
def test_fp32_on_a_gpu_turns_tf32_off(dtype, device, tf32_after):
    from evalkit.models.qwen_vl.adapter import exact_fp32

    # saved and put back by hand: these flags are properties of torch's backend modules, which
    # pytest >= 9.2's monkeypatch would delete on undo rather than restore
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        exact_fp32(_OneParam(dtype, device))
        assert torch.backends.cuda.matmul.allow_tf32 is tf32_after and torch.backends.cudnn.allow_tf32 is tf32_after
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
