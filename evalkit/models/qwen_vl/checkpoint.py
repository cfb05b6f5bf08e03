"""Checkpoint validation: one clear line per problem, before transformers touches the files.

transformers' loader warns about missing keys and initialises them randomly, which turns a bad
download into silently wrong scores. `validate_checkpoint` reads only the safetensors headers
(or the .bin pickles, memory-mapped) and compares key names and shapes with the model.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor as its file describes it (safetensors names dtypes F32/BF16/I64..., .bin files float32...)."""

    shape: tuple[int, ...]
    dtype: str
    floating: bool


def safetensors_entries(file: Path) -> dict[str, TensorInfo]:
    """Tensor shapes and dtypes from a safetensors header, checking the data is all there."""
    size = file.stat().st_size
    try:
        with file.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError(f"header length {header_len} exceeds the file size {size}")
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        entries = {name: _header_entry(info) for name, info in header.items()}
    except (struct.error, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{file}: corrupt safetensors header ({type(exc).__name__}: {exc})") from exc
    data_end = 0
    for name, (info, start, end) in entries.items():
        numel = math.prod(info.shape)
        if info.dtype in DTYPE_BYTES and end - start != numel * DTYPE_BYTES[info.dtype]:
            raise ModelError(f"{file}: corrupt entry {name} ({end - start} bytes for shape {list(info.shape)})")
        data_end = max(data_end, end)
    if 8 + header_len + data_end > size:
        raise ModelError(
            f"{file}: truncated ({size} bytes, the header needs {8 + header_len + data_end}); download it again"
        )
    return {name: info for name, (info, _, _) in entries.items()}


def _header_entry(info: dict) -> tuple[TensorInfo, int, int]:
    start, end = (int(x) for x in info["data_offsets"])
    dtype = str(info["dtype"])
    return TensorInfo(tuple(int(d) for d in info["shape"]), dtype, dtype.startswith(("F", "BF"))), start, end


def bin_entries(file: Path) -> dict[str, TensorInfo]:
    try:
        state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/EOFError/UnpicklingError on damaged files
        raise ModelError(f"{file}: cannot read weights, truncated or corrupt ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ModelError(f"{file}: not a state dict of tensors")
    return {name: TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch."), t.is_floating_point())
            for name, t in state.items()}


def checkpoint_entries(path: str | Path) -> dict[str, TensorInfo]:
    """{key: TensorInfo} over all weight files of a checkpoint dir."""
    entries: dict[str, TensorInfo] = {}
    for file in weight_files(path):
        entries.update(safetensors_entries(file) if file.suffix == ".safetensors" else bin_entries(file))
    return entries


def validate_checkpoint(path: str | Path, expected: dict[str, tuple[int, ...]], tied_keys: set[str]) -> None:
    """Raise ModelError unless the checkpoint holds exactly `expected` (keys in `tied_keys` may be absent)."""
    entries = checkpoint_entries(path)
    found = {name: info.shape for name, info in entries.items()}
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
    not_float = [k for k in sorted(expected) if k in entries and not entries[k].floating]
    if not_float:
        raise ModelError(
            f"{Path(path) / where}: wrong dtype for {not_float[0]}: {entries[not_float[0]].dtype} in the file, "
            f"Qwen-VL weights are floating point{more(not_float)}; re-export or download it again"
        )
    if unexpected:
        raise ModelError(
            f"{Path(path) / where}: unexpected key {unexpected[0]}{more(unexpected)}; not a Qwen-VL checkpoint?"
        )
