"""The nouns every stage of the pipeline shares.

The flow is task spec -> samples -> requests -> model -> predictions -> scores. Each stage
takes and returns these dataclasses, so a stage can be tested (or replaced) without the
others. Images are lazy (`ImageRef`): a VQAv2 split references tens of thousands of images,
and only the batch in flight should be decoded.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from evalkit.errors import EvalkitError

OutputType = Literal["generate", "choice"]


class ImageError(EvalkitError, ValueError):
    """An image that cannot be opened or decoded; recorded on its sample, never fatal to a run."""


@dataclass(frozen=True, eq=False)
class ImageRef:
    """An image that is decoded only when a model needs its pixels.

    `key` identifies the image content for de-duplication (the engine encodes each distinct
    key once); it is the path for files and a content hash for in-memory bytes.
    """

    path: str | None = None
    data: bytes | None = None
    pil: Image.Image | None = None
    key: str = ""

    @classmethod
    def from_path(cls, path: str | Path) -> ImageRef:
        return cls(path=str(path), key=f"path:{Path(path).resolve()}")

    @classmethod
    def from_location(cls, location: str | Path) -> ImageRef:
        """A file path, or an http(s) URL (fetched when first decoded, then cached on disk)."""
        text = str(location)
        if text.startswith(("http://", "https://")):
            return cls(path=text, key=f"url:{text}")
        return cls.from_path(location)

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageRef:
        return cls(data=data, key="sha1:" + hashlib.sha1(data).hexdigest())

    @classmethod
    def from_pil(cls, image: Image.Image, key: str | None = None) -> ImageRef:
        if key is None:
            key = "sha1:" + hashlib.sha1(image.tobytes()).hexdigest() + f":{image.size}:{image.mode}"
        return cls(pil=image, key=key)

    def load(self) -> Image.Image:
        """Decode to an RGB PIL image (the colour space every VLM preprocessor expects)."""
        try:
            if self.pil is not None:
                image = self.pil
            elif self.data is not None:
                image = Image.open(io.BytesIO(self.data))
            elif self.key.startswith("url:"):
                from evalkit.data.remote import fetch

                image = Image.open(io.BytesIO(fetch(self.path or "")))
            elif self.path is not None:
                image = Image.open(self.path)
            else:
                raise ImageError("empty image reference")
            image.load()
            return to_rgb(image)
        except ImageError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            where = self.path or self.key
            detail = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the image data", str(exc))  # no memory addresses:
            raise ImageError(f"cannot decode image {where}: {detail}") from exc  # reruns must write the same bytes

    def __repr__(self) -> str:
        return f"ImageRef({self.path or self.key})"


def to_rgb(image: Image.Image) -> Image.Image:
    """PIL's `convert("RGB")`, exactly what Qwen-VL's transform calls: palette, grayscale, CMYK and
    alpha images (alpha is dropped, not composited) all take the reference's path."""
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass
class DatasetSpec:
    """Where a task's rows come from. `format` picks the adapter in `evalkit.data`."""

    format: str = "hf"  # hf | parquet | json | jsonl | arrow | or an original-format adapter name
    path: str | None = None  # hub repo id or local path / directory
    name: str | None = None  # hub config name
    split: str = "test"
    data_files: Any = None  # str | list | dict, passed to datasets.load_dataset
    image_root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 10
    min_new_tokens: int = 0
    stop: list[str] = field(default_factory=list)


@dataclass
class MetricSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FewShotSpec:
    split: str | None = None  # split of the same dataset that demonstrations come from
    dataset: DatasetSpec | None = None  # or an entirely different source
    answer_field: str = "answer"  # what follows the shot's prompt: " {answer}"


@dataclass
class TaskSpec:
    """A declarative task, loaded from YAML. Data-free: rows come from `dataset` at run time."""

    name: str
    dataset: DatasetSpec
    fields: dict[str, str]
    prompts: dict[str, str]
    output_type: OutputType = "generate"
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    metrics: list[MetricSpec] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    fewshot: FewShotSpec | None = None
    postprocess: list[str] = field(default_factory=lambda: ["strip"])
    description: str = ""
    submission: str | None = None  # private-answer splits: the submission-file writer to use
    source: str = ""  # the file this spec was read from

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        return data

    def spec_hash(self) -> str:
        return stable_hash(self.to_dict())

    def prompt_hash(self, style: str) -> str:
        used = self.prompts.get(style) or self.prompts.get("base", "")  # what build_request renders
        template = {"style": style, "template": used}
        if style == "chat" and self.prompts.get("chat_reply"):
            template["reply"] = self.prompts["chat_reply"]
        return stable_hash(template)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0].name if self.metrics else ""


@dataclass
class Sample:
    """One evaluation item: what the prompt is built from and what the answer is scored against."""

    id: str
    images: list[ImageRef]
    fields: dict[str, Any]  # text fields used by the prompt template (question, hint, ...)
    references: Any = None  # answers list, caption list, gold box, gold choice index...
    metadata: dict[str, Any] = field(default_factory=dict)  # width/height for boxes, image id, ...
    error: str | None = None  # a row that could not become a sample: recorded as its prediction's error


@dataclass
class Request:
    """The model-facing unit: interleaved text and images plus how to decode.

    `parts` keeps text and images in prompt order (few-shot prompts hold several images).
    For `choice` requests the model scores each continuation in `choices` after the prompt.
    """

    sample_id: str
    task: str
    parts: list[str | ImageRef]
    max_new_tokens: int = 10
    min_new_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    choices: list[str] | None = None
    plain_text: bool = False  # text parts are data: control-token strings in them stay text (chat turns)
    index: int = -1  # the sample's position in its dataset (replays keyed by order use it)
    row: int = -1  # its row in the unfiltered source split (lmms-eval's doc_id); = index where nothing is dropped

    @property
    def images(self) -> list[ImageRef]:
        return [p for p in self.parts if isinstance(p, ImageRef)]

    def text(self, image_token: str = "<image>") -> str:
        """The prompt as one string, each image shown as `image_token`: "<image>" for logs and
        replays; "" for what Qwen's tokenizer reads (the `<img>`/`</img>` tags are in the text)."""
        return "".join(p if isinstance(p, str) else image_token for p in self.parts)


@dataclass
class ChoiceScore:
    """Log-likelihood of one continuation: summed log-probability over its tokens."""

    logprob: float
    n_tokens: int

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.n_tokens, 1)


@dataclass
class Prediction:
    """What was produced for one sample and how it scored; one line of samples/<task>.jsonl."""

    sample_id: str
    task: str
    output: str = ""
    answer: Any = None
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    prompt: str = ""
    references: Any = None
    choice_scores: list[list[float]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def stable_hash(obj: Any) -> str:
    """A short content hash that is the same on every machine (sorted-key JSON)."""
    import json

    text = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]  # lone surrogates hash too
