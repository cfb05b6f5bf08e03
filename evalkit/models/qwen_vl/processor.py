"""Qwen-VL processor: tokenizer plus the reference image transform.

The transform is the one in the original `visual.py`: PIL `convert("RGB")`, `resize((S, S),
BICUBIC)` (aspect ratio not kept), /255 and CLIP mean/std normalisation. Images come either from
the `<img>path</img>` paths in the text (the reference's way; paths relative to the cwd, or
http(s) URLs, fetched once into evalkit's image cache: evalkit.data.remote) or
explicitly, one list per text in the order of its `<img>` tags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from evalkit.models.qwen_vl.tokenizer import QwenTokenizer
from evalkit.task import ImageError, ImageRef, to_rgb

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImageLike = Image.Image | ImageRef | str | Path


class QwenVLProcessor:
    """Turns texts (and images) into `input_ids`, `attention_mask` and `pixel_values`."""

    def __init__(self, tokenizer: QwenTokenizer, image_size: int = 448):
        self.tokenizer = tokenizer
        self.image_size = image_size

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> QwenVLProcessor:
        config_file = Path(path) / "config.json"
        image_size = 448
        if config_file.is_file():
            image_size = json.loads(config_file.read_text()).get("visual", {}).get("image_size", 448)
        return cls(QwenTokenizer.from_pretrained(path, **kwargs), image_size=image_size)

    def load_image(self, image: ImageLike) -> Image.Image:
        """Decode to RGB; any failure is an ImageError naming the image."""
        if isinstance(image, Image.Image):
            return to_rgb(image)
        ref = image if isinstance(image, ImageRef) else ImageRef.from_location(image)
        return ref.load()

    def transform(self, image: ImageLike) -> torch.Tensor:
        """One image -> normalised float32 [3, S, S] (torchvision's Resize/ToTensor/Normalize)."""
        pil = self.load_image(image)
        try:
            resized = pil.resize((self.image_size, self.image_size), Image.BICUBIC)
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot decode image {image!r}: {exc}") from exc
        pixels = (
            torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
        )
        mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        std = torch.tensor(CLIP_STD).view(3, 1, 1)
        return (pixels - mean) / std

    def image_paths(self, ids: list[int]) -> list[str]:
        """The paths written in the `<img>` spans of `ids`, in order (as the reference reads them)."""
        tok, paths, start = self.tokenizer, [], None
        for pos, token in enumerate(ids):
            if token == tok.img_start_id:
                start = pos
            elif token == tok.img_end_id and start is not None:
                inner = ids[start + 1 : pos]
                inner = inner[: inner.index(tok.img_pad_id)] if tok.img_pad_id in inner else inner
                paths.append(bytes(inner).decode("utf-8"))
                start = None
        return paths

    def __call__(
        self,
        text: str | list[str],
        images: list[list[ImageLike]] | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        texts = [text] if isinstance(text, str) else list(text)
        batch = self.tokenizer(texts, padding=padding, padding_side=padding_side, return_tensors="pt")
        rows = [self.image_paths(ids) for ids in batch["input_ids"].tolist()]
        if images is None:
            flat: list[ImageLike] = [path for paths in rows for path in paths]
        else:
            if len(images) != len(texts):
                raise ValueError(
                    f"images: got {len(images)} lists for {len(texts)} texts (one list per text)"
                )
            for i, (paths, given) in enumerate(zip(rows, images)):
                if len(paths) != len(given):
                    raise ValueError(
                        f"text {i} has {len(paths)} <img> spans but {len(given)} images were given"
                    )
            flat = [image for given in images for image in given]
        if flat:
            batch["pixel_values"] = torch.stack([self.transform(image) for image in flat])
        return dict(batch)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
