"""Checkpoint validation: one clear line per problem, before transformers touches the files.

transformers' loader warns about missing keys and initialises them randomly, which turns a bad
download into silently wrong scores. `validate_checkpoint` reads only the safetensors headers
(or the .bin pickles, memory-mapped) and compares key names and shapes with the model.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from evalkit.models.base import ModelError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Buffers some exports of the remote code carry; they are recomputed, never loaded.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "attn.bias", "attn.masked_bias")
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


def weight_files(path: str | Path) -> list[Path]:
    """The weight files of a checkpoint dir: the first of WEIGHT_FILES found, expanded via its index."""
    path = Path(path)
    for name in WEIGHT_FILES:
        file = path / name
        if not file.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads(file.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise ModelError(f"{file}: not a valid weight index ({exc})") from exc
            shards = [path / shard for shard in sorted(set(weight_map.values()))]
            for shard in shards:
                if not shard.is_file():
                    raise ModelError(f"{shard}: shard listed in {file.name} is missing")
            return shards
        return [file]
    raise ModelError(f"{path}: no weights found (expected one of {', '.join(WEIGHT_FILES)})")


def safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header, checking the data is all there."""
    size = file.stat().st_size
    try:
        with file.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError(f"header length {header_len} exceeds the file size {size}")
            header = json.loads(f.read(header_len))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{file}: corrupt safetensors header ({exc})") from exc
    header.pop("__metadata__", None)
    shapes, data_end = {}, 0
    for name, info in header.items():
        start, end = info["data_offsets"]
        numel = 1
        for dim in info["shape"]:
            numel *= dim
        if info["dtype"] in DTYPE_BYTES and end - start != numel * DTYPE_BYTES[info["dtype"]]:
            raise ModelError(f"{file}: corrupt entry {name} ({end - start} bytes for shape {info['shape']})")
        shapes[name] = tuple(info["shape"])
        data_end = max(data_end, end)
    if 8 + header_len + data_end > size:
        raise ModelError(
            f"{file}: truncated ({size} bytes, the header needs {8 + header_len + data_end}); download it again"
        )
    return shapes


def bin_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    try:
        state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/EOFError/UnpicklingError on damaged files
        raise ModelError(f"{file}: cannot read weights, truncated or corrupt ({exc})") from exc
    return {name: tuple(t.shape) for name, t in state.items()}


def checkpoint_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} over all weight files of a checkpoint dir."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in weight_files(path):
        shapes.update(safetensors_shapes(file) if file.suffix == ".safetensors" else bin_shapes(file))
    return shapes


def validate_checkpoint(path: str | Path, expected: dict[str, tuple[int, ...]], tied_keys: set[str]) -> None:
    """Raise ModelError unless the checkpoint holds exactly `expected` (keys in `tied_keys` may be absent)."""
    found = checkpoint_shapes(path)
    where = ", ".join(f.name for f in weight_files(path))
    missing = sorted(k for k in expected if k not in found and k not in tied_keys)
    unexpected = sorted(k for k in found if k not in expected and not k.endswith(IGNORED_SUFFIXES))
    wrong = [(k, found[k], expected[k]) for k in sorted(expected) if k in found and found[k] != expected[k]]

    def more(items: list) -> str:
        return f" (and {len(items) - 1} more)" if len(items) > 1 else ""

    if missing:
        raise ModelError(
            f"{Path(path) / where}: missing key {missing[0]}{more(missing)}; is config.json the right one?"
        )
    if wrong:
        key, got, want = wrong[0]
        raise ModelError(
            f"{Path(path) / where}: wrong shape for {key}: {list(got)} in the file, the config needs {list(want)}{more(wrong)}"
        )
    if unexpected:
        raise ModelError(
            f"{Path(path) / where}: unexpected key {unexpected[0]}{more(unexpected)}; not a Qwen-VL checkpoint?"
        )
