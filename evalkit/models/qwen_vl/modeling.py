"""QwenVLForCausalLM: a transformers PreTrainedModel with the official checkpoint's key names.

`transformer` holds the embeddings, the Qwen-7B blocks, the final norm and the vision tower
(`transformer.visual`), exactly as the released remote code names them, so `from_pretrained`
loads the official safetensors/bin files (single or sharded, tied or untied head) unchanged.
The image features replace the 256 ids strictly between each `<img>` and `</img>` at prefill.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from evalkit.models.base import ModelError
from evalkit.models.qwen_vl.checkpoint import validate_checkpoint
from evalkit.models.qwen_vl.config import QwenVLConfig
from evalkit.models.qwen_vl.kv_cache import QwenVLCache, QwenVLDynamicCache
from evalkit.models.qwen_vl.language import QwenBlock, RMSNorm, logn_scale, ntk_alpha, rotary_cos_sin
from evalkit.models.qwen_vl.vision import Resampler, VisionTransformer, sincos_pos_embed_2d


def attention_mask_2d(attention_mask: torch.Tensor | None, batch: int, total: int, device) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones(batch, total, dtype=torch.long, device=device)
    return attention_mask.to(device)


class QwenVLTransformer(nn.Module):
    """Embeddings + image splice + decoder blocks + final RMSNorm (the checkpoint's `transformer`)."""

    def __init__(self, config: QwenVLConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.drop = nn.Dropout(config.emb_dropout_prob)
        self.h = nn.ModuleList(QwenBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.visual = VisionTransformer(**config.visual)

    def splice_images(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        """Write image features [n_img, Q, D] into the Q slots after each `<img>` (row-major order)."""
        start_id = self.config.visual["image_start_id"]
        starts = (input_ids == start_id).nonzero()
        ends = (input_ids == start_id + 1).nonzero()
        n_queries = features.size(1)
        if len(starts) != features.size(0) or len(ends) != len(starts):
            raise ValueError(
                f"input_ids hold {len(starts)} <img> and {len(ends)} </img> tags but {features.size(0)} "
                "images were given; build inputs with QwenVLProcessor"
            )
        if not torch.equal(ends[:, 1] - starts[:, 1] - 1, torch.full_like(starts[:, 1], n_queries)):
            raise ValueError(f"every <img>...</img> span must hold exactly {n_queries} ids")
        cols = starts[:, 1:2] + 1 + torch.arange(n_queries, device=input_ids.device)
        rows = starts[:, 0:1].expand_as(cols)
        hidden = hidden.clone()
        hidden[rows, cols] = features.to(hidden.dtype)
        return hidden

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: QwenVLCache | None = None,
    ) -> torch.Tensor:
        config = self.config
        if cache is not None and not isinstance(cache, QwenVLCache):
            raise TypeError(f"Qwen-VL keeps each row's NTK alpha in its cache: pass a QwenVLDynamicCache or "
                            f"StaticKVCache (kv_cache.py), not {type(cache).__name__}")
        past = cache.get_seq_length() if cache is not None else 0
        if inputs_embeds is None:
            hidden = self.drop(self.wte(input_ids))
            # images only at prefill; checked there alone (a host sync per decode step otherwise)
            if past == 0 and (pixel_values is not None or image_features is not None
                              or bool((input_ids == config.visual["image_start_id"]).any())):
                if image_features is None:
                    if pixel_values is None:
                        raise ValueError("input_ids contain <img> spans but no pixel_values were given")
                    image_features = self.visual(pixel_values)
                hidden = self.splice_images(hidden, input_ids, image_features)
        else:
            hidden = inputs_embeds
        batch, length = hidden.shape[:2]
        mask = attention_mask_2d(attention_mask, batch, past + length, hidden.device)

        # Positions from the mask: padding never shifts a row (see language.py).
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
        if past == 0 or cache is None:
            lengths = mask.sum(-1).tolist()
            alphas = [ntk_alpha(n, config.seq_length) if config.use_dynamic_ntk else 1 for n in lengths]
            alphas = torch.tensor(alphas, dtype=torch.float64)
            if cache is not None:
                cache.ntk_alpha = alphas  # reused while decoding, as the reference does
        else:
            alphas = cache.ntk_alpha
        cos, sin = rotary_cos_sin(positions, alphas, config.rotary_dim, config.rotary_emb_base)
        # logn scales queries past `seq_length` only (below it the scale is exactly 1: skip it)
        use_logn = config.use_logn_attn and past + length > config.seq_length
        query_scale = logn_scale(positions, config.seq_length) if use_logn else None

        if mask.dtype == torch.bool and length == 1 and past > 0:
            # a decode step with a bool mask (the engine's, built once per batch): its last key is
            # the new token itself, always allowed, so the mask is the attention mask as it is
            allowed = mask[:, None, None, :]
        else:
            # Boolean mask [B, 1, L, past+L]: causal, no padded keys; every query sees itself, so a
            # padded query row is never empty (its output is unused).
            key_index = torch.arange(past + length, device=hidden.device)
            query_index = past + torch.arange(length, device=hidden.device)
            causal = key_index[None, :] <= query_index[:, None]
            is_self = key_index[None, :] == query_index[:, None]
            allowed = ((causal[None] & mask.bool()[:, None, :]) | is_self[None])[:, None]

        cos, sin = cos.to(hidden.device), sin.to(hidden.device)
        if query_scale is not None:
            query_scale = query_scale.to(hidden.device)
        for block in self.h:
            hidden = block(hidden, cos, sin, query_scale, allowed, cache)
        return self.ln_f(hidden)


class QwenVLPreTrainedModel(PreTrainedModel):
    config_class = QwenVLConfig
    config: QwenVLConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    _no_split_modules = ["QwenBlock", "VisualBlock"]
    _supports_sdpa = True
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq", r"attn\.bias", r"attn\.masked_bias"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Resampler):
            init.trunc_normal_(module.query, std=0.02)
            grid = int(module.query.size(0) ** 0.5)
            init.copy_(
                module.pos_embed, torch.from_numpy(sincos_pos_embed_2d(module.query.size(1), grid)).float()
            )
        elif isinstance(module, VisionTransformer):
            init.normal_(module.positional_embedding, std=module.positional_embedding.size(1) ** -0.5)
            init.normal_(module.proj, std=module.proj.size(0) ** -0.5)


class QwenVLForCausalLM(QwenVLPreTrainedModel, GenerationMixin):
    """Qwen-VL with its LM head. Inputs: `input_ids`, `attention_mask`, `pixel_values` (all images
    of the batch in `<img>` order) or precomputed `image_features`; padding side does not matter."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: QwenVLConfig):
        super().__init__(config)
        self.transformer = QwenVLTransformer(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    @classmethod
    def expected_shapes(cls, config: QwenVLConfig) -> dict[str, tuple[int, ...]]:
        """{checkpoint key: shape} for a config, computed on the meta device (no memory)."""
        with torch.device("meta"):
            model = cls(config)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any):
        """transformers' loader, after checking a local checkpoint's keys and shapes (ModelError)."""
        path = Path(pretrained_model_name_or_path)
        if path.is_dir():
            cls.check_pretrained(path, kwargs.get("config"))
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def check_pretrained(cls, path: Path, config: QwenVLConfig | None = None) -> QwenVLConfig:
        """A local checkpoint's config and its weights' keys and shapes checked without loading them (ModelError)."""
        try:  # a malformed config.json fails deep inside transformers or torch: say which file it is
            if not isinstance(config, QwenVLConfig):
                config = QwenVLConfig.from_pretrained(path)
            expected = cls.expected_shapes(config)
        except (OSError, TypeError, ValueError, ArithmeticError) as exc:
            raise ModelError(f"{path / 'config.json'}: not a valid Qwen-VL config ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        validate_checkpoint(path, expected, tied)
        return config

    def _prepare_cache_for_generation(self, generation_config, model_kwargs: dict, *args: Any, **kwargs: Any) -> None:
        """generate()'s default DynamicCache, made a QwenVLDynamicCache (room for the rows' NTK
        alphas), as transformers' own models swap in the cache they need."""
        given = model_kwargs.get("cache")
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        made = model_kwargs.get("cache")
        if given is None and type(made) is DynamicCache:
            model_kwargs["cache"] = QwenVLDynamicCache(
                config=self.config, offloading=generation_config.cache_implementation == "offloaded")

    def parameter_counts(self) -> dict[str, int]:
        """Parameters as the paper's Table 1 splits them (vision without the resampler, adapter =
        the resampler, llm = the rest, total), and the decoder blocks and LM head a token runs through."""
        visual = self.transformer.visual
        adapter = _params(visual.attn_pool)
        return {"vision": _params(visual) - adapter, "adapter": adapter, "llm": _params(self) - _params(visual),
                "total": _params(self), "blocks": sum(_params(b) for b in self.transformer.h),
                "lm_head": self.lm_head.weight.numel()}

    def flops_per_image(self) -> int:
        """The vision tower on one image: ViT matmuls + its self-attention (QK^T and AV) +
        patchify + the resampler over its queries."""
        visual = self.transformer.visual
        patches = (visual.image_size // visual.conv1.kernel_size[0]) ** 2
        width = visual.conv1.out_channels
        flops = 2 * _params(visual.transformer) * patches
        flops += 4 * len(visual.transformer.resblocks) * patches**2 * width
        return flops + 2 * _params(visual.conv1) * patches + 2 * _params(visual.attn_pool) * self.config.visual["n_queries"]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: QwenVLCache | None = None,
        use_cache: bool | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        past_key_values: QwenVLCache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """`position_ids` (if given by generate()) are ignored: positions come from the mask."""
        cache = cache if cache is not None else past_key_values
        if use_cache and cache is None:
            cache = QwenVLDynamicCache(config=self.config)
        if use_cache is False:
            cache = None
        hidden = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            image_features=image_features,
            inputs_embeds=inputs_embeds,
            cache=cache,
        )
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                labels[:, 1:].flatten().to(logits.device),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def register() -> None:
    """Make AutoConfig / AutoModelForCausalLM resolve model_type "qwen" to these classes (idempotent)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if "qwen" not in CONFIG_MAPPING:
        AutoConfig.register("qwen", QwenVLConfig)
    with contextlib.suppress(ValueError):  # already registered
        AutoModelForCausalLM.register(QwenVLConfig, QwenVLForCausalLM)


register()
