"""Bad checkpoints and specs through the CLI: each corruption ends in one `evalkit: error:` line naming the
file and what is wrong, exit code 2, no traceback. (tests/test_qwen_vl_checkpoint.py checks the
loader's ModelError for missing/unexpected keys, shapes and truncation; this is what a user sees.)
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TINY_CKPT
from safetensors.torch import load_file, save_file

from evalkit.cli import main

KEY = "transformer.h.0.mlp.c_proj.weight"


def checkpoint(root: Path) -> Path:
    """A copy of the tiny checkpoint whose files can be damaged one by one (big files are links)."""
    root.mkdir()
    for f in TINY_CKPT.iterdir():
        if f.suffix == ".json":
            (root / f.name).write_bytes(f.read_bytes())
        else:
            (root / f.name).symlink_to(f)
    return root


def replace(file: Path, data: bytes) -> None:
    file.unlink()
    file.write_bytes(data)


def truncated_weights(ckpt: Path) -> None:
    data = (TINY_CKPT / "model.safetensors").read_bytes()
    replace(ckpt / "model.safetensors", data[: len(data) * 2 // 3])


def header_not_an_object(ckpt: Path) -> None:
    header = b"[1, 2, 3]"
    replace(ckpt / "model.safetensors", struct.pack("<Q", len(header)) + header)


def header_entry_without_offsets(ckpt: Path) -> None:
    header = json.dumps({KEY: {"dtype": "F32", "shape": [2, 2]}}).encode()
    replace(ckpt / "model.safetensors", struct.pack("<Q", len(header)) + header + b"\x00" * 16)


def integer_weight(ckpt: Path) -> None:
    state = load_file(TINY_CKPT / "model.safetensors")
    state[KEY] = state[KEY].to(torch.int64)
    (ckpt / "model.safetensors").unlink()
    save_file(state, ckpt / "model.safetensors")


def integer_weight_bin(ckpt: Path) -> None:
    state = load_file(TINY_CKPT / "model.safetensors")
    state[KEY] = state[KEY] > 0
    (ckpt / "model.safetensors").unlink()
    torch.save(state, ckpt / "pytorch_model.bin")


def wrong_shape(ckpt: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "intermediate_size": 1024}))


def missing_shard(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    index = {"weight_map": {KEY: "model-00001-of-00002.safetensors", "transformer.wte.weight": "model-00002-of-00002.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    (ckpt / "model-00001-of-00002.safetensors").symlink_to(TINY_CKPT / "model.safetensors")


def malformed_index(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors.index.json").write_text('{"weight_map": ')


def missing_tokenizer(ckpt: Path) -> None:
    (ckpt / "qwen.tiktoken").unlink()


def corrupt_tokenizer(ckpt: Path) -> None:
    replace(ckpt / "qwen.tiktoken", b"IQ== 0\nnot base64 at all\n")


def config_not_json(ckpt: Path) -> None:
    (ckpt / "config.json").write_text('{"hidden_size": 64,')


def config_a_list(ckpt: Path) -> None:
    (ckpt / "config.json").write_text("[1, 2]")


def config_wrong_type(ckpt: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))


CASES: list[tuple[Callable[[Path], None], str]] = [
    (truncated_weights, r"model\.safetensors: truncated \(\d+ bytes, the header needs \d+\); download it again"),
    (header_not_an_object, r"model\.safetensors: corrupt safetensors header"),
    (header_entry_without_offsets, r"model\.safetensors: corrupt safetensors header \(KeyError: 'data_offsets'\)"),
    (integer_weight, rf"model\.safetensors: wrong dtype for {KEY}: I64 in the file, Qwen-VL weights are floating point"),
    (integer_weight_bin, rf"pytorch_model\.bin: wrong dtype for {KEY}: bool in the file"),
    (wrong_shape, rf"wrong shape for {KEY}: \[128, 256\] in the file, the config needs \[128, 512\]"),
    (missing_shard, r"model-00002-of-00002\.safetensors: shard listed in model\.safetensors\.index\.json is missing"),
    (malformed_index, r"model\.safetensors\.index\.json: not a valid weight index"),
    (missing_tokenizer, r"qwen\.tiktoken: tokenizer file is missing"),
    (corrupt_tokenizer, r"qwen\.tiktoken: cannot read tokenizer file"),
    (config_not_json, r"config\.json: not a valid Qwen-VL config \(OSError: .*not a valid JSON file"),
    (config_a_list, r"config\.json: not a valid Qwen-VL config \(TypeError"),
    (config_wrong_type, r"config\.json: not a valid Qwen-VL config \(TypeError"),
]


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(err) == 1, err
    assert err[0].startswith("evalkit: error: ")
    return err[0]


@pytest.mark.parametrize("damage, message", CASES, ids=[f.__name__ for f, _ in CASES])
def test_bad_checkpoint_is_one_clear_error(damage, message, tmp_path, capsys):
    ckpt = checkpoint(tmp_path / "ckpt")
    damage(ckpt)
    code = main(["run", "--model", f"qwen-vl:{ckpt}", "--tasks", "vqav2_mini", "--limit", "1",
                 "-o", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    line = one_error_line(capsys)
    assert str(ckpt) in line
    assert re.search(message, line), line


@pytest.mark.parametrize("text, message", [
    ("task: broken\ndataset: {format: jsonl\n", r"broken\.yaml"),
    ("task: broken\ndataset: {format: jsonl, splitt: x}\nfields: {}\nprompts: {base: x}\n", r"unknown field 'dataset\.splitt'"),
    ("- just\n- a list\n", r"broken\.yaml"),
])
def test_bad_task_spec_is_one_clear_error(text, message, tmp_path, capsys):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "broken.yaml").write_text(text)
    code = main(["run", "--model", "replay:/nonexistent", "--tasks", "broken", "--tasks-dir", str(tmp_path / "tasks"),
                 "-o", str(tmp_path / "run")])
    assert code == 2
    line = one_error_line(capsys)
    assert re.search(message, line), line
